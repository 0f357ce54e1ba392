"""Sweep benchmark: wall time of the `taxifare_sweep` pipeline under kfp.local and of a local grid sweep.

``python -m pipelines.bench.sweep --out build/bench`` writes build/bench/sweep.json and sweep.md:

* pipeline — the sweep pipeline from its compiled YAML over three small hyperparameter sets
  (first run: everything; second run: same sets with a min_improvement no model can meet, so
  only the champion/challenger step runs and nothing is deployed), with seconds per step;
* grid — `taxifare sweep`'s local runner over a 2×2 grid of the `taxifare` pipeline (one process,
  work dir and emulator per point, as many at once as there are cores).

The load average at the start is recorded: on a shared machine it explains the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

from pipelines.bench.report import load_average

log = logging.getLogger(__name__)

SOURCE = "synthetic://?rows=5000&layout=lab&seed=5"
SMALL = {"hidden_units": "16 8", "batch_size": 64}
TRIALS = [
    {**SMALL, "learning_rate": 0.01, "train_steps": 5},
    {**SMALL, "learning_rate": 0.01, "train_steps": 300},
    {"hidden_units": "32 16", "learning_rate": 0.003, "batch_size": 128, "train_steps": 100},
]
COMMON = {"source": SOURCE, "smoke_steps": 5, "compare_rows": 1000, "sample_size": 100}
GRID = {"train_steps": [20, 200], "learning_rate": [0.003, 0.03]}
GRID_FIXED = {"source": SOURCE, "smoke_steps": 5, "hidden_units": "16 8", "batch_size": 64, "sample_size": 50}


def _step_seconds(workdir: Path) -> list[dict]:
    path = workdir / "steps.jsonl"
    if not path.exists():
        return []
    return [{"step": r["step"], "seconds": r["seconds"]} for r in map(json.loads, path.read_text().splitlines())]


def bench_pipeline(workdir: Path) -> dict:
    from kfp import components

    from pipelines.compile import compile_pipeline
    from pipelines.local.run import run_local
    from trainer import local_endpoint

    pipeline = components.load_component_from_file(str(compile_pipeline("taxifare_sweep", workdir / "compiled")))
    runs = []
    os.environ["TAXIFARE_STATE_DIR"] = str(workdir / "state")
    try:
        for label, min_improvement in (("first run", 0.0), ("rerun, champion kept", 1000.0)):
            started = time.time()
            summary = run_local(
                workdir=workdir,
                pipeline=pipeline,
                keep_endpoint=True,
                params={**COMMON, "trials": TRIALS, "min_improvement": min_improvement},
            )
            runs.append(
                {
                    "run": label,
                    "wall_s": round(time.time() - started, 2),
                    "decision": summary.outputs.get("Output"),
                    "best_index": summary.facts.get("select_best", {}).get("best_index"),
                    "rmses": summary.facts.get("select_best", {}).get("rmses"),
                    "champion_rmse": summary.facts.get("champion", {}).get("champion_rmse"),
                    "challenger_rmse": summary.facts.get("champion", {}).get("challenger_rmse"),
                    "steps": _step_seconds(workdir),
                }
            )
    finally:
        local_endpoint.stop("taxifare")
    return {"trials": TRIALS, "params": COMMON, "runs": runs}


def bench_grid(workdir: Path) -> dict:
    from pipelines.compile import compile_pipeline
    from pipelines.local.sweep import local_workers, run_local_sweep
    from pipelines.params import parse_grid
    from pipelines.taxifare import taxifare
    from trainer import selection

    grid = parse_grid(GRID, taxifare)
    template = compile_pipeline("taxifare", workdir / "compiled")
    points = grid.points()
    started = time.time()
    results = run_local_sweep(template, points, GRID_FIXED, workdir)
    wall = time.time() - started
    return {
        "grid": GRID,
        "fixed": GRID_FIXED,
        "points": len(points),
        "at_once": local_workers(None, len(points)),
        "wall_s": round(wall, 2),
        "per_point_wall_s": [round(r.wall_s or 0, 2) for r in results],
        "results": [
            {"params": r.params, "rmse": r.rmse, "status": r.status, "error": r.error} for r in selection.rank(results)
        ],
    }


def render(report: dict) -> str:
    lines = [
        "# Sweep benchmark",
        "",
        f"Load average at start: {report['load_average']} on {report['cores']} cores.",
        "",
    ]
    if "pipeline" in report:
        lines += [
            "## taxifare_sweep under kfp.local (3 hyperparameter sets, compiled YAML)",
            "",
            "| run | wall s | decision | best set | validation RMSEs | seconds per step |",
            "|---|---|---|---|---|---|",
        ]
        for run in report["pipeline"]["runs"]:
            steps = ", ".join(f"{s['step']} {s['seconds']:.1f}" for s in run["steps"])
            rmses = ", ".join(f"{r:.3f}" for r in run["rmses"] or [])
            best = "cached" if run["best_index"] is None else run["best_index"]
            lines.append(f"| {run['run']} | {run['wall_s']:.1f} | {run['decision']} | {best} | {rmses} | {steps} |")
        lines.append("")
    if "grid" in report:
        grid = report["grid"]
        lines += [
            f"## taxifare sweep, local, {grid['points']} grid points ({grid['at_once']} at once)",
            "",
            f"Wall: {grid['wall_s']:.1f} s; per point: {', '.join(f'{w:.1f}' for w in grid['per_point_wall_s'])} s",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench")
    parser.add_argument("--workdir", default="build/bench/sweep-work")
    parser.add_argument("--only", choices=("pipeline", "grid"), default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)  # cold: nothing cached from an earlier bench
    report = {"load_average": load_average(), "cores": os.cpu_count()}
    if args.only in (None, "pipeline"):
        report["pipeline"] = bench_pipeline(workdir / "pipeline")
    if args.only in (None, "grid"):
        report["grid"] = bench_grid(workdir / "grid")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "sweep.md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
