"""Run the taxifare pipeline end to end on this machine: kfp.local + the GCS emulator + a local endpoint.

This is what ``make run`` does. The bucket is gcp-storage-emulator on a free loopback port, backed
by a directory under the work dir so that a second run finds its objects (and kfp.local's cache
finds its outputs); deploy starts the project's prediction server on loopback.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from components.artifacts import STEP_LOG_ENV
from pipelines.local.emulator import GcsEmulator
from trainer import local_endpoint, storage
from trainer.config import load_settings
from trainer.ingest import parse_source

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = Path("build/local")
STEPS = ("ingest", "validate", "train", "export", "deploy", "predict")


class RunError(RuntimeError):
    """The local run failed; the message names the step and the reason."""


@dataclass
class StepTiming:
    name: str
    wall_s: float | None = None
    in_step_s: float | None = None
    cached: bool = False

    @property
    def overhead_s(self) -> float | None:
        if self.wall_s is None or self.in_step_s is None:
            return None
        return max(self.wall_s - self.in_step_s, 0.0)


@dataclass
class RunSummary:
    wall_s: float
    pipeline_root: Path
    run_dir: Path | None
    endpoint_url: str | None
    endpoint_kept: bool
    predict_rmse: float
    steps: dict[str, StepTiming] = field(default_factory=dict)
    facts: dict[str, dict] = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)  # the pipeline's returned values by name

    def as_dict(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 3),
            "pipeline_root": str(self.pipeline_root),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "endpoint_url": self.endpoint_url,
            "endpoint_kept": self.endpoint_kept,
            "predict_rmse": self.predict_rmse,
            "steps": {
                name: {
                    "wall_s": t.wall_s,
                    "in_step_s": t.in_step_s,
                    "overhead_s": t.overhead_s,
                    "cached": t.cached,
                }
                for name, t in self.steps.items()
            },
            "facts": self.facts,
            "outputs": self.outputs,
        }


def run_local(
    *,
    workdir: str | Path = DEFAULT_WORKDIR,
    params: dict | None = None,
    keep_endpoint: bool = False,
    enable_caching: bool = True,
    runner=None,
    pipeline=None,
) -> RunSummary:
    """Run the `taxifare` pipeline locally; returns timings, the endpoint and where the artifacts are.

    `pipeline` may be the pipeline loaded back from its compiled YAML
    (``kfp.components.load_component_from_file``); by default it is the Python definition.
    """
    from kfp import local

    if pipeline is None:
        from pipelines.taxifare import taxifare as pipeline

    workdir = Path(workdir).resolve()
    settings = load_settings()
    params = {"bucket": settings.bucket, "project": settings.project, "region": settings.region, **(params or {})}
    params.setdefault("prefix", settings.prefix)
    if params.get("target", "local") != "local":
        raise RunError(f"a local run deploys locally; target={params['target']!r} needs `taxifare submit`")
    bucket = params["bucket"]
    # Malformed parameters fail here, before any process or bucket is touched.
    storage.check_bucket_name(bucket)
    for name in ("source", "valid_source"):
        if params.get(name):
            parse_source(params[name])
    pipeline_root = workdir / "pipeline_root"
    step_log = workdir / "steps.jsonl"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    step_log.unlink(missing_ok=True)

    saved_env = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "TAXIFARE_STATE_DIR", STEP_LOG_ENV)}
    started = time.time()
    emulator = GcsEmulator(data_dir=workdir / "gcs", log_path=workdir / "gcs-emulator.log")
    endpoint_name = params.get("endpoint_name", "taxifare")
    try:
        emulator.start()
        os.environ.update(emulator.env())
        os.environ["TAXIFARE_STATE_DIR"] = str(workdir / "state")
        os.environ[STEP_LOG_ENV] = str(step_log)
        emulator.create_bucket(bucket)
        # kfp.local says, per task, that the UI display name means nothing locally; we know.
        warnings.filterwarnings("ignore", message=r".*have no effect in the current local runner")
        local.init(
            runner=runner or local.SubprocessRunner(use_venv=False),
            pipeline_root=str(pipeline_root),
            enable_caching=enable_caching,
            cache_root=str(workdir / "cache"),
        )
        before = set(pipeline_root.iterdir())
        pipeline_started = time.time()
        try:
            result = pipeline(**params)
        except RuntimeError as exc:
            raise RunError(_failure_line(exc, step_log)) from None
        outputs = _pipeline_outputs(result)
        rmse = _as_float(outputs.get("Output"))
        endpoint = local_endpoint.get(endpoint_name)
        new_dirs = sorted(set(pipeline_root.iterdir()) - before)
        run_dir = new_dirs[-1] if new_dirs else None
        summary = RunSummary(
            wall_s=time.time() - started,
            pipeline_root=pipeline_root,
            run_dir=run_dir,
            endpoint_url=endpoint.predict_url if endpoint else None,
            endpoint_kept=keep_endpoint and endpoint is not None,
            predict_rmse=rmse,
            steps=step_timings(_read_step_log(step_log), pipeline_started, STEPS),
        )
        summary.facts = {r["step"]: r.get("facts", {}) for r in _read_step_log(step_log)}
        summary.outputs = outputs
        return summary
    finally:
        if not keep_endpoint:
            local_endpoint.stop(endpoint_name)
        emulator.stop()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def step_timings(records: list[dict], run_started: float, order: tuple[str, ...]) -> dict[str, StepTiming]:
    """Per-step wall time (from the previous step's end, or the run's start, to this step's end),
    the time inside the step's own code, and the difference: what orchestration costs. Steps with
    no record were answered from the cache."""
    by_step = {r["step"]: r for r in records}
    timings: dict[str, StepTiming] = {}
    previous_end = run_started
    for name in order:
        record = by_step.get(name)
        if record is None:
            timings[name] = StepTiming(name, cached=True)
            continue
        timings[name] = StepTiming(name, wall_s=round(record["end"] - previous_end, 3), in_step_s=record["seconds"])
        previous_end = record["end"]
    return timings


def _pipeline_outputs(result) -> dict:
    """The finished pipeline's returned values by name ({} when it returns nothing)."""
    outputs = getattr(result, "outputs", None) or {}
    return dict(outputs)


def _as_float(value) -> float:
    """The `taxifare` pipeline returns the endpoint RMSE; other pipelines (the sweep) return other
    things, which the summary keeps in `outputs` while predict_rmse is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _read_step_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _failure_line(exc: Exception, step_log: Path) -> str:
    """One line naming the failed step and its error, from the step log the steps write."""
    for record in reversed(_read_step_log(step_log)):
        if record.get("error"):
            return f"step {record['step']} failed: {record['error']}"
    return f"pipeline failed: {exc}"
