"""Picking a model: the best of a sweep by validation RMSE, and the champion/challenger decision."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

METRIC = "rmse"


class SweepError(ValueError):
    """A sweep that cannot go on: nothing to pick from, or a decision on numbers that are not RMSEs."""


def _usable(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def best_index(rmses: Sequence[float | None]) -> int:
    """Position of the lowest RMSE; on a tie the earliest wins. Missing or non-finite values never win."""
    candidates = [(float(r), i) for i, r in enumerate(rmses) if _usable(r)]
    if not candidates:
        raise SweepError(f"no usable RMSE to pick from: {list(rmses)}")
    return min(candidates)[1]


# ---------------------------------------------------------------------------------------------
# Champion / challenger


@dataclass(frozen=True)
class Decision:
    deploy: bool
    challenger_rmse: float
    champion_rmse: float | None
    min_improvement: float
    reason: str

    @property
    def verdict(self) -> str:
        return "deploy" if self.deploy else "keep"

    @property
    def threshold(self) -> float | None:
        """The RMSE the challenger had to reach (None without a champion)."""
        return None if self.champion_rmse is None else self.champion_rmse - self.min_improvement

    def as_dict(self) -> dict:
        return {
            "decision": self.verdict,
            "challenger_rmse": self.challenger_rmse,
            "champion_rmse": self.champion_rmse,
            "min_improvement": self.min_improvement,
            "threshold": self.threshold,
            "reason": self.reason,
        }


def decide(challenger_rmse: float, champion_rmse: float | None, min_improvement: float = 0.0) -> Decision:
    """Deploy when there is no champion, or when challenger ≤ champion − min_improvement."""
    if not _usable(challenger_rmse):
        raise SweepError(f"challenger RMSE must be a finite number >= 0, got {challenger_rmse!r}")
    if not (isinstance(min_improvement, (int, float)) and math.isfinite(min_improvement) and min_improvement >= 0):
        raise SweepError(f"min_improvement must be a finite number >= 0, got {min_improvement!r}")
    challenger_rmse, min_improvement = float(challenger_rmse), float(min_improvement)
    if champion_rmse is None:
        return Decision(True, challenger_rmse, None, min_improvement, "no model is being served: deploy the challenger")
    if not _usable(champion_rmse):
        raise SweepError(f"champion RMSE must be a finite number >= 0 or None, got {champion_rmse!r}")
    champion_rmse = float(champion_rmse)
    threshold = champion_rmse - min_improvement
    # a hair of tolerance so that an improvement of exactly min_improvement counts despite rounding
    if challenger_rmse <= threshold + 1e-9 * max(1.0, champion_rmse):
        reason = (
            f"challenger RMSE {challenger_rmse:.4f} ≤ champion {champion_rmse:.4f} − {min_improvement:g} "
            f"= {threshold:.4f}: deploy the challenger"
        )
        return Decision(True, challenger_rmse, champion_rmse, min_improvement, reason)
    reason = (
        f"challenger RMSE {challenger_rmse:.4f} > champion {champion_rmse:.4f} − {min_improvement:g} "
        f"= {threshold:.4f}: keep the champion"
    )
    return Decision(False, challenger_rmse, champion_rmse, min_improvement, reason)


@dataclass
@dataclass
class Champion:
    """What the endpoint serves now, measured on the comparison rows (None fields: no champion)."""

    rmse: float | None
    description: str
    model: str | None = None


def measure_champion(*, target, endpoint_name, instances, labels, project="", region="", batch_size=100):
    """RMSE of the model the endpoint of that name serves now, through the endpoint itself."""
    from trainer import client, endpoints

    options = endpoints.DeployOptions(project=project, region=region)
    served = endpoints.serving(target, endpoint_name, options)
    if served is None:
        return Champion(None, f"no {endpoints.get(target).label} named {endpoint_name!r} serves a model")
    fares = endpoints.predict(served.endpoint, instances, batch_size, options)
    return Champion(client.rmse(fares, labels), served.description, served.model)


def model_rmse(model_dir: str | os.PathLike, instances: list[dict], labels: list[float]) -> float:
    """RMSE of a trained model (trainer output dir or SavedModel) on the given rows, in process."""
    from trainer import client, predictor

    fares = predictor.Predictor.load(model_dir).predict(instances)
    return client.rmse(fares, labels)


# ---------------------------------------------------------------------------------------------
# Results table


@dataclass
class TrialResult:
    """One trained configuration: its parameters and validation RMSE, or the error that stopped it."""

    index: int
    params: dict
    rmse: float | None = None
    metrics: dict = field(default_factory=dict)
    error: str = ""
    wall_s: float | None = None
    run: str = ""

    state: str = ""  # what the runner reports when there is no metric to read (e.g. a KFP run)

    @property
    def ok(self) -> bool:
        return not self.error and _usable(self.rmse)

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        return "succeeded" if self.ok else (self.state or "no metric")


def rank(results: Sequence[TrialResult]) -> list[TrialResult]:
    """Succeeded results by RMSE (ties: earlier index first), then the failed ones by index."""
    return sorted(results, key=lambda r: (0, float(r.rmse), r.index) if r.ok else (1, 0.0, r.index))
