"""Model benchmark: quality and speed of the trainer with its default settings.

``python -m pipelines.bench.model --out build/bench`` (``make bench-model``) measures:

* **quality** — for each course layout (``../shared/data/lab`` and ``../shared/data/dated``;
  synthetic files when the course data is absent, said so in the report): train with the
  defaults ``taxifare train`` uses (no tuning flags) on ``taxi-train.csv``, evaluate on every
  parseable row of ``taxi-valid.csv`` (and on plausible rows only); training wall time.
  Targets: RMSE ≤ 4.6 (lab) and ≤ 4.2 (dated), each run ≤ 180 s.
* **input throughput** — on ``--rows`` (1M) synthetic lab rows in 4 CSV files, the streaming CSV
  pipeline against the same rows held in memory (``pipelines.bench.throughput``).

Writes ``model.json`` and ``model.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from pipelines.bench import throughput
from pipelines.bench.report import REPO_ROOT, Row, number
from trainer import hparams, model, synth

log = logging.getLogger("pipelines.bench.model")

LAYOUTS = ("lab", "dated")
SYNTHETIC = "synthetic (course data not found)"
TARGET_RMSE = {"lab": 4.6, "dated": 4.2}
TARGET_TRAIN_SECONDS = 180.0
REFERENCES = {  # validation RMSE on the course files (shared/data/README.md)
    "lab": {
        "training mean": 10.45,
        "distance rule": 6.85,
        "lab DNN (1,000 steps)": 10.47,
        "gradient-boosted trees": 4.81,
    },
    "dated": {"training mean": 10.51, "distance rule": 6.33, "gradient-boosted trees": 4.40},
}


def course_data_dir() -> Path | None:
    candidate = Path(os.environ.get("TAXIFARE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return candidate if (candidate / "lab" / "taxi-train.csv").is_file() else None


def course_files(layout: str, work: Path) -> tuple[Path, Path, Path | None]:
    """(train, valid, course data folder) of a layout; synthetic files under `work` (folder None) without it."""
    shared = course_data_dir()
    if shared is not None:
        return shared / layout / "taxi-train.csv", shared / layout / "taxi-valid.csv", shared
    # Fixed sizes and seeds: every caller gets the same rows.
    train = synth.write_csv(work / f"{layout}-train.csv", 8000, layout=layout, seed=1)
    valid = synth.write_csv(work / f"{layout}-valid.csv", 1600, layout=layout, seed=2)
    return train, valid, None


# --------------------------------------------------------------------------------------------
# Quality


def bench_quality(layout: str, work: Path) -> dict:
    train, valid, shared = course_files(layout, work)
    source = f"course data ({shared}/{layout}/taxi-train.csv, taxi-valid.csv)" if shared else SYNTHETIC
    out_dir = work / f"train-{layout}"
    started = time.monotonic()
    metrics = model.train_and_evaluate(str(train), str(valid), out_dir)  # the CLI's defaults
    wall = time.monotonic() - started
    result = {
        "layout": layout,
        "data": source,
        "rmse": round(metrics["rmse"], 4),
        "rmse_plausible": round(metrics["rmse_plausible"], 4),
        "mae": round(metrics["mae"], 4),
        "eval_rows": metrics["eval_rows"],
        "eval_rows_plausible": metrics["eval_rows_plausible"],
        "train_rows": metrics["train_rows"],
        "train_rows_dropped": metrics["train_rows_dropped"],
        "steps": metrics["steps"],
        "fit_seconds": metrics["train_seconds"],
        "run_seconds": round(wall, 2),
        "target_rmse": TARGET_RMSE[layout],
        "references": REFERENCES[layout],
    }
    result["meets_rmse_target"] = result["rmse"] <= TARGET_RMSE[layout]
    result["meets_time_target"] = wall <= TARGET_TRAIN_SECONDS
    log.info("%s: RMSE %.3f (plausible %.3f) in %.1f s", layout, result["rmse"], result["rmse_plausible"], wall)
    return result


def bench_section(work: Path, quick_steps: int | None, shared: dict) -> dict:
    """Model quality in `taxifare bench`: per layout, the trainer's model next to the references
    (``pipelines.bench.baselines``) fit in the same run on the same files; `quick_steps` trains that
    many steps instead of the defaults. Leaves each trained model's folder in `shared`."""
    from pipelines.bench import baselines

    results = {}
    for layout in LAYOUTS:
        train, valid, folder = course_files(layout, work)
        source = f"course data ({folder / layout})" if folder else SYNTHETIC
        if quick_steps:
            started = time.monotonic()
            metrics = model.train_and_evaluate(
                str(train), str(valid), work / f"quick-{layout}", train_steps=quick_steps
            )
            ours = {
                "layout": layout,
                "data": source,
                "rmse": round(metrics["rmse"], 4),
                "rmse_plausible": round(metrics["rmse_plausible"], 4),
                "eval_rows": metrics["eval_rows"],
                "steps": metrics["steps"],
                "run_seconds": round(time.monotonic() - started, 2),
                "target_rmse": TARGET_RMSE[layout],
                "quick": True,
            }
        else:
            ours = bench_quality(layout, work)
        # Where the model was trained: the serving section reuses the lab model.
        trained = work / (f"quick-{layout}" if quick_steps else f"train-{layout}")
        if (trained / "export" / "exporter").is_dir():
            shared[f"{layout}_model_dir"] = trained
        references = baselines.fit_and_score(train, valid, layout)
        results[layout] = {"model": ours, "references": references, "data": source}
    return results


# --------------------------------------------------------------------------------------------
# Report


def to_markdown(result: dict) -> str:
    lines = ["# Model benchmark", "", f"Machine: {result['machine']}", ""]
    if result.get("quality"):
        lines += [
            "## Quality (default settings, validation file)",
            "",
            "| layout | RMSE all rows | RMSE plausible rows | MAE | eval rows | steps | train run (s) | target | GBT ref |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for q in result["quality"]:
            ok = "✓" if q["meets_rmse_target"] and q["meets_time_target"] else "✗"
            lines.append(
                f"| {q['layout']} | {q['rmse']:.3f} | {q['rmse_plausible']:.3f} | {q['mae']:.3f} | {q['eval_rows']} "
                f"| {q['steps']} | {q['run_seconds']:.1f} | ≤ {q['target_rmse']} {ok} "
                f"| {q['references']['gradient-boosted trees']} |"
            )
        lines += [""] + [f"Data ({q['layout']}): {q['data']}." for q in result["quality"]] + [""]
    if result.get("throughput"):
        lines += throughput.markdown(result["throughput"])
    return "\n".join(lines)


def report_rows(quality: dict) -> list[Row]:
    """The summary-table rows of `taxifare bench`: per layout, ours against the references."""
    from pipelines.bench import baselines

    rows = []
    for layout, entry in quality.items():
        ours, refs = entry["model"], entry["references"]
        gbt = refs["rmse"]["gradient-boosted trees"]
        quick = " (quick)" if ours.get("quick") else ""
        rows.append(
            Row(
                f"Model quality, {layout}",
                f"validation RMSE{quick}, all {ours['eval_rows']:,} rows: "
                f"**{number(ours['rmse'], 3)}** (target ≤ {ours['target_rmse']})",
                baselines.report_cell(refs),
                f"ours / GBT **{ours['rmse'] / gbt:.2f}×**",
            )
        )
    return rows


def report_details(quality: dict) -> list[str]:
    """Every RMSE of the quality section, for report.md."""
    lines = [
        "## Model quality detail (validation RMSE)",
        "",
        "| layout | data | ours (all rows) | ours (plausible rows) | mean | distance rule | GBT | GBT (plausible) | train run s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for layout, e in quality.items():
        o, rmse, plausible = e["model"], e["references"]["rmse"], e["references"]["rmse_plausible"]
        lines.append(
            f"| {layout} | {e['data']} | {number(o['rmse'], 3)} | {number(o.get('rmse_plausible'), 3)} "
            f"| {number(rmse['training mean'], 3)} | {number(rmse['distance rule'], 3)} "
            f"| {number(rmse['gradient-boosted trees'], 3)} | {number(plausible['gradient-boosted trees'], 3)} "
            f"| {number(o.get('run_seconds'), 1)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines.bench.model", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows for the throughput test")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument(
        "--passes", type=float, default=throughput.THROUGHPUT_PASSES, help="passes over the rows per timed run"
    )
    parser.add_argument("--repeats", type=int, default=throughput.THROUGHPUT_REPEATS)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    result: dict = {
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}",
        "defaults": {
            "train_steps": hparams.DEFAULTS["train_steps"],
            "train_batch_size": hparams.DEFAULTS["batch_size"],
            "hidden_units": list(hparams.parse_hidden_units(hparams.DEFAULTS["hidden_units"])),
            "learning_rate": hparams.DEFAULTS["learning_rate"],
        },
    }
    with tempfile.TemporaryDirectory(prefix="taxifare-bench-model-") as tmp:
        work = Path(tmp)
        if not args.skip_quality:
            result["quality"] = [bench_quality(layout, work) for layout in LAYOUTS]
        if not args.skip_throughput:
            result["throughput"] = throughput.bench_throughput(
                work, args.rows, args.files, hparams.DEFAULTS["batch_size"], args.passes, args.repeats
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "model.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
