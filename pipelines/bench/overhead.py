"""The local pipeline's time: `make run` end to end and cached, per step, and kfp.local's cost per task."""

import logging
import tempfile
import time
from pathlib import Path

from kfp import dsl, local

from components.base import BASE_IMAGE
from pipelines.bench.report import Row, number

log = logging.getLogger("pipelines.bench.overhead")

TASKS = 6
TARGET_WALL_S = 60.0
TARGET_STEP_OVERHEAD_S = 0.5
TARGET_FINGERPRINT_S = 1.0  # every step's code fingerprint, computed at compile time and per local run


def measure_fingerprints(repeats: int = 3) -> dict:
    """Seconds to fingerprint every step's code (components.fingerprint), best and worst of `repeats`."""
    from components import fingerprint

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        table = fingerprint.step_fingerprints()
        times.append(time.perf_counter() - started)
    return {"steps": len(table), "best_s": round(min(times), 3), "worst_s": round(max(times), 3)}


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def noop(value: int) -> int:
    """Returns its input: a task with no work of its own."""
    return value


@dsl.pipeline(name="orchestration-overhead")
def chain(value: int = 0) -> int:
    task = noop(value=value)
    for _ in range(TASKS - 1):
        task = noop(value=task.output)
    return task.output


def measure(repeats: int = 2) -> dict:
    """Per-task orchestration overhead in seconds (best of `repeats` runs of the chain).

    Six chained no-op components — built like the project's (project image, no kfp install) — run
    under the same runner as `make run`. Their wall time per task is the orchestration overhead:
    dispatch, executor input/output, the task's Python process and the kfp executor. The real steps
    add their own imports (google-cloud-storage, TensorFlow) and TensorFlow's exit on top of that;
    `run_local`'s per-step `overhead_s` (wall minus time in the step function) includes those.
    """
    walls = []
    with tempfile.TemporaryDirectory(prefix="taxifare-overhead-") as root:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
        for _ in range(repeats):
            started = time.perf_counter()
            chain(value=1)
            walls.append(time.perf_counter() - started)
    best = min(walls)
    return {"tasks": TASKS, "runs_s": [round(w, 3) for w in walls], "per_task_s": round(best / TASKS, 3)}


def bench_local_run(workdir: Path, params: dict) -> dict:
    """The local run (`make run` when `params` is empty) in a fresh work dir, then the same run again (cached)."""
    from pipelines.local.run import run_local

    runs = {}
    for name in ("first", "cached"):
        summary = run_local(workdir=workdir, params=params)
        data = summary.as_dict()
        runs[name] = {
            "wall_s": data["wall_s"],
            "predict_rmse": data["predict_rmse"],
            "steps": data["steps"],
        }
        log.info("local pipeline (%s run): %.1f s", name, summary.wall_s)
    first = runs["first"]["steps"]
    overheads = [s["overhead_s"] for s in first.values() if s["overhead_s"] is not None]
    return {
        "params": params or "defaults (make run)",
        "runs": runs,
        "orchestration_overhead_per_task_s": measure()["per_task_s"],
        "fingerprints": measure_fingerprints(),
        "target_fingerprint_s": TARGET_FINGERPRINT_S,
        "max_step_overhead_s": round(max(overheads), 3) if overheads else None,
        "mean_step_overhead_s": round(sum(overheads) / len(overheads), 3) if overheads else None,
        "cached_steps_on_rerun": [n for n, s in runs["cached"]["steps"].items() if s["cached"]],
        "target_wall_s": TARGET_WALL_S,
        "target_step_overhead_s": TARGET_STEP_OVERHEAD_S,
    }


def report_rows(p: dict) -> list[Row]:
    """The summary-table rows of `taxifare bench`: first and cached run, then each step's time."""
    first, cached = p["runs"]["first"], p["runs"]["cached"]
    steps = " · ".join(
        f"{n} {number(s['wall_s'], 1)} s ({number(s['overhead_s'], 2)})"
        for n, s in first["steps"].items()
        if s["wall_s"] is not None
    )
    rows = [
        Row(
            "Local pipeline (`make run`)",
            f"default run **{number(first['wall_s'], 1)} s** wall (target ≤ {p['target_wall_s']:.0f} s)",
            f"cached re-run {number(cached['wall_s'], 1)} s ({len(p['cached_steps_on_rerun'])} steps from cache)",
            f"re-run takes **{cached['wall_s'] / first['wall_s']:.2f}×** the first",
        ),
        Row(
            "Local pipeline, per step",
            "wall s (wall − time in the step function, i.e. Python/TF start and exit + orchestration): " + steps,
            f"kfp.local orchestration per task ({TASKS} no-op tasks): "
            f"**{number(p.get('orchestration_overhead_per_task_s'), 3)} s** (target ≤ {p['target_step_overhead_s']})",
        ),
    ]
    prints = p.get("fingerprints")
    if prints:
        target = p.get("target_fingerprint_s", TARGET_FINGERPRINT_S)
        rows.append(
            Row(
                "Code fingerprints (the cache key's code part)",
                f"every step ({prints['steps']}): **{number(prints['worst_s'], 3)} s** at worst, "
                f"{number(prints['best_s'], 3)} s at best",
                f"target < {target:g} s",
                "met" if prints["worst_s"] < target else "**not met**",
            )
        )
    return rows


def report_details(p: dict) -> list[str]:
    """Every step of both runs, for report.md."""
    lines = [
        "## Local pipeline steps",
        "",
        "| step | run | wall s | in step s | overhead s | cached |",
        "|---|---|---|---|---|---|",
    ]
    for run_name, run in p["runs"].items():
        for step, t in run["steps"].items():
            lines.append(
                f"| {step} | {run_name} | {number(t['wall_s'], 2)} | {number(t['in_step_s'], 2)} "
                f"| {number(t['overhead_s'], 3)} | {t['cached']} |"
            )
    return lines


if __name__ == "__main__":
    print(measure())
