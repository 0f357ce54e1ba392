"""The local sweep: every grid point as its own local pipeline run, in worker processes."""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from trainer.selection import TrialResult

log = logging.getLogger(__name__)


def local_workers(requested: int | None, points: int, available: int | None = None) -> int:
    """How many grid points run at once locally: what was asked, capped by the cores and the points."""
    from trainer.config import usable_cores

    available = available or usable_cores()
    if requested is not None and requested < 1:
        raise ValueError(f"--parallel must be >= 1, got {requested}")
    wanted = requested or available
    if wanted > available:
        log.warning("--parallel %d is more than the %d cores here; running %d at a time", wanted, available, available)
    return max(1, min(wanted, available, points))


# -- one grid point, in a worker process ---------------------------------------------------------
def run_point_local(index: int, template: str, workdir: str, params: dict, enable_caching: bool = True) -> dict:
    """Run the compiled pipeline for one grid point; never raises, the error goes into the result.

    Runs in its own process: kfp.local's configuration and the emulator's environment variables
    are process-wide. Its output (kfp.local is talkative) goes to WORKDIR/run.log.
    """
    workdir_path = Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    log_path = workdir_path / "run.log"
    with open(log_path, "ab") as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    started = time.time()
    result = {"index": index, "params": params, "run": str(workdir_path), "log": str(log_path)}
    try:
        from kfp import components

        from pipelines.local.emulator import EmulatorError
        from pipelines.local.run import RunError, run_local

        pipeline = components.load_component_from_file(template)
        try:
            summary = run_local(workdir=workdir_path, params=params, pipeline=pipeline, enable_caching=enable_caching)
        except (RunError, EmulatorError, ValueError) as exc:
            result.update(error=str(exc), wall_s=time.time() - started)
            return result
    except Exception as exc:  # a worker reports every failure as its row instead of dying
        logging.exception("grid point %d failed", index)
        result.update(error=f"{type(exc).__name__}: {exc}", wall_s=time.time() - started)
        return result
    result.update(wall_s=summary.wall_s, **run_metrics(summary.facts, summary.outputs, summary.predict_rmse))
    if result.get("rmse") is None:
        result["error"] = "the run finished but reported no validation RMSE"
    return result


def run_metrics(facts: dict, outputs: dict, predict_rmse: float) -> dict:
    """A local run's validation RMSE and the other figures worth a column."""
    metrics: dict = {}
    rmse = None
    if "select_best" in facts:  # the sweep pipeline: its best training
        rmse = facts["select_best"].get("best_rmse")
        champion = facts.get("champion", {})
        metrics.update(decision=champion.get("decision"), champion_rmse=champion.get("champion_rmse"))
    elif "train" in facts:
        rmse = facts["train"].get("rmse")
        metrics["mae"] = facts["train"].get("mae")
    if predict_rmse is not None and math.isfinite(predict_rmse) and predict_rmse >= 0:
        metrics["endpoint_rmse"] = predict_rmse
    return {"rmse": rmse, "metrics": {k: v for k, v in metrics.items() if v is not None}}


def run_local_sweep(
    template: Path,
    points: list[dict],
    fixed: dict,
    out_dir: Path,
    *,
    parallel: int | None = None,
    enable_caching: bool = True,
    on_done=None,
) -> list:
    """Every grid point as its own local pipeline run (separate processes); results in point order."""
    workers = local_workers(parallel, len(points))
    runs_dir = out_dir / "runs"
    log.info("%d grid points, %d at a time; work dirs under %s", len(points), workers, runs_dir)
    results: list[TrialResult | None] = [None] * len(points)
    # spawn: a fresh interpreter per worker, nothing of this process's state (threads, TF) inherited
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {
            pool.submit(
                run_point_local,
                i,
                str(template.resolve()),
                str((runs_dir / f"point-{i:03d}").resolve()),
                {**fixed, **point},
                enable_caching,
            ): i
            for i, point in enumerate(points)
        }
        for future in as_completed(futures):
            i = futures[future]
            raw = future.result()
            result = TrialResult(
                index=i,
                params=points[i],
                rmse=raw.get("rmse"),
                metrics=raw.get("metrics", {}),
                error=raw.get("error", ""),
                wall_s=raw.get("wall_s"),
                run=raw.get("run", ""),
            )
            results[i] = result
            if on_done:
                on_done(result)
    return results
