"""Model benchmark: quality and speed of the trainer with its default settings.

``python -m pipelines.bench.model --out build/bench`` (``make bench-model``) measures:

* **quality** — for each course layout (``../shared/data/lab`` and ``../shared/data/dated``;
  synthetic files when the course data is absent, said so in the report): train with the
  defaults ``taxifare train`` uses (no tuning flags) on ``taxi-train.csv``, evaluate on every
  parseable row of ``taxi-valid.csv`` (and on plausible rows only); training wall time.
  Targets: RMSE ≤ 4.6 (lab) and ≤ 4.2 (dated), each run ≤ 180 s.
* **input throughput** — on ``--rows`` (1M) synthetic lab rows in 4 CSV files: training
  examples/s of the default model fed by the streaming CSV pipeline (``trainer.data`` without
  cache: shuffled files → TextLineDataset batches, 4 files interleaved → parallel decode_csv
  → plausibility filter → batch shuffle → prefetch) against the same model, same batch size,
  fed from the same (plausible) rows held in memory as tensors already cut into batches.
  Target: streaming ≥ 0.8 × in-memory. The Python pre-scan of the files is timed separately.

Writes ``model.json`` and ``model.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from trainer import data, model, schema, synth

log = logging.getLogger("pipelines.bench.model")

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET_RMSE = {"lab": 4.6, "dated": 4.2}
TARGET_TRAIN_SECONDS = 180.0
TARGET_STREAM_RATIO = 0.8
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


# --------------------------------------------------------------------------------------------
# Quality


def bench_quality(layout: str, work: Path) -> dict:
    shared = course_data_dir()
    if shared is not None:
        train, valid = shared / layout / "taxi-train.csv", shared / layout / "taxi-valid.csv"
        source = f"course data ({shared}/{layout}/taxi-train.csv, taxi-valid.csv)"
    else:
        train = synth.write_csv(work / f"{layout}-train.csv", 8000, layout=layout, seed=1)
        valid = synth.write_csv(work / f"{layout}-valid.csv", 1600, layout=layout, seed=2)
        source = "synthetic (course data not found)"
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


# --------------------------------------------------------------------------------------------
# Input-pipeline throughput


class _Timer(keras.callbacks.Callback):
    """Wall and process CPU time of one fit call (after its iterator exists)."""

    def on_train_begin(self, logs=None):
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = time.process_time() - self.cpu_started


def _fit_seconds(fit_model: keras.Model, dataset: tf.data.Dataset, steps: int) -> tuple[float, float]:
    timer = _Timer()
    fit_model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    return timer.seconds, timer.cpu_seconds


# Each timed run is two passes over the rows, and the ratio is the median of five paired runs:
# single 2-second runs on a shared 2-core machine vary by ±15 %.
THROUGHPUT_PASSES = 2.0
THROUGHPUT_REPEATS = 5


def bench_throughput(work: Path, rows: int, files: int, batch_size: int, passes: float, repeats: int) -> dict:
    layout = schema.LAB
    per_file = rows // files
    paths = []
    started = time.monotonic()
    for i in range(files):
        paths.append(str(synth.write_csv(work / f"throughput-{i}.csv", per_file, layout="lab", seed=100 + i)))
    write_seconds = time.monotonic() - started

    started = time.monotonic()
    scan = data.scan_files(paths)
    scan_seconds = time.monotonic() - started
    keep = scan.plausible / scan.rows  # the streaming batches lose the implausible rows

    # The same rows, parsed once and held in memory as tensors (plausible rows, shuffled), cut
    # into ready-made batches so that feeding them costs nothing per example.
    columns = data.read_columns(scan)
    mask = columns.pop("_plausible").numpy()
    n = int(mask.sum()) // batch_size * batch_size
    order = np.random.default_rng(0).permutation(int(mask.sum()))[:n]
    features, label = data.to_features({k: tf.constant(v.numpy()[mask][order]) for k, v in columns.items()}, layout)
    batched = (
        {k: tf.reshape(v, (-1, batch_size)) for k, v in features.items()},
        tf.reshape(label, (-1, batch_size)),
    )
    in_memory = tf.data.Dataset.from_tensor_slices(batched).repeat().prefetch(tf.data.AUTOTUNE)
    streaming = data.make_dataset(scan, batch_size, training=True, cache=False, seed=0)

    sample = {k: v.numpy()[:100_000] for k, v in features.items()}
    steps = max(1, int(passes * rows / batch_size))
    datasets = {"in_memory": in_memory, "streaming": streaming}
    models = {}
    for name, dataset in datasets.items():
        keras.utils.set_random_seed(0)
        models[name] = model.build_model(layout, sample, train_steps=steps, label_mean=float(np.mean(label.numpy())))
        _fit_seconds(models[name], dataset, 50)  # trace and warm up
    # Runs alternate between the two inputs so that any other load on the machine hits both alike.
    runs: dict[str, list[float]] = {name: [] for name in datasets}
    cpu_us: dict[str, list[float]] = {name: [] for name in datasets}
    ratios = []
    for _ in range(repeats):
        for name, dataset in datasets.items():
            seconds, cpu_seconds = _fit_seconds(models[name], dataset, steps)
            examples = steps * batch_size * (keep if name == "streaming" else 1.0)
            runs[name].append(examples / seconds)
            cpu_us[name].append(cpu_seconds / examples * 1e6)
            log.info("%s: %.0f examples/s, %.2f CPU µs/example", name, runs[name][-1], cpu_us[name][-1])
        ratios.append(runs["streaming"][-1] / runs["in_memory"][-1])
    fit_model = models["in_memory"]
    in_mem = statistics.median(runs["in_memory"])
    stream = statistics.median(runs["streaming"])
    return {
        "rows": scan.rows,
        "files": files,
        "plausible_share": round(keep, 4),
        "batch_size": batch_size,
        "steps_per_run": steps,
        "repeats": repeats,
        "model": {
            "hidden_units": list(model.DEFAULT_HIDDEN_UNITS),
            "towers": model.DEFAULT_TOWERS,
            "params": int(fit_model.count_params()),
        },
        "in_memory_examples_per_s": round(in_mem),
        "streaming_examples_per_s": round(stream),
        "ratio": round(statistics.median(ratios), 3),
        "target_ratio": TARGET_STREAM_RATIO,
        "meets_target": statistics.median(ratios) >= TARGET_STREAM_RATIO,
        "all_runs_examples_per_s": {k: [round(v) for v in vs] for k, vs in runs.items()},
        "all_runs_ratio": [round(r, 3) for r in ratios],
        "cpu_us_per_example": {k: round(statistics.median(v), 3) for k, v in cpu_us.items()},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "csv_write_seconds": round(write_seconds, 2),
        "scan_seconds": round(scan_seconds, 2),
        "scan_rows_per_s": round(scan.rows / scan_seconds),
    }


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
        t = result["throughput"]
        ok = "✓" if t["meets_target"] else "✗"
        lines += [
            "## Training throughput (same model, batch size and rows)",
            "",
            "| input | examples/s |",
            "|---|---|",
            f"| in-memory tensors | {t['in_memory_examples_per_s']:,} |",
            f"| streaming CSV (tf.data) | {t['streaming_examples_per_s']:,} |",
            f"| ratio (median of paired runs) | {t['ratio']:.3f} (target ≥ {t['target_ratio']}) {ok} |",
            "",
            f"{t['rows']:,} synthetic rows in {t['files']} files, batch {t['batch_size']}, "
            f"{t['steps_per_run']} steps per run, median of {t['repeats']} alternating runs "
            f"(paired ratios {t['all_runs_ratio']}). Process CPU per example: in-memory "
            f"{t['cpu_us_per_example']['in_memory']} µs, streaming {t['cpu_us_per_example']['streaming']} µs. "
            f"Load average during the runs: {t['load_average_1min']} on {os.cpu_count()} cores. "
            f"The pre-training scan reads {t['scan_rows_per_s']:,} rows/s ({t['scan_seconds']} s).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines.bench.model", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows for the throughput test")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--passes", type=float, default=THROUGHPUT_PASSES, help="passes over the rows per timed run")
    parser.add_argument("--repeats", type=int, default=THROUGHPUT_REPEATS)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    result: dict = {
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}",
        "defaults": {
            "train_steps": model.DEFAULT_TRAIN_STEPS,
            "train_batch_size": model.DEFAULT_BATCH_SIZE,
            "hidden_units": list(model.DEFAULT_HIDDEN_UNITS),
            "learning_rate": model.DEFAULT_LEARNING_RATE,
        },
    }
    with tempfile.TemporaryDirectory(prefix="taxifare-bench-model-") as tmp:
        work = Path(tmp)
        if not args.skip_quality:
            result["quality"] = [bench_quality(layout, work) for layout in ("lab", "dated")]
        if not args.skip_throughput:
            result["throughput"] = bench_throughput(
                work, args.rows, args.files, model.DEFAULT_BATCH_SIZE, args.passes, args.repeats
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "model.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
