"""Training input throughput: the streaming CSV pipeline against the same rows held in memory, same model."""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from pipelines.bench.report import Row, number
from trainer import data, hparams, model, schema, synth

log = logging.getLogger("pipelines.bench.throughput")

TARGET_STREAM_RATIO = 0.8


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
    """Training examples/s of the default model on `rows` synthetic lab rows in `files` CSV files.

    Fed by the streaming CSV pipeline (``trainer.data`` without cache: shuffled files →
    TextLineDataset batches, files interleaved → parallel decode_csv → plausibility filter → batch
    shuffle → prefetch) against the same model, same batch size, fed from the same (plausible) rows
    held in memory as tensors already cut into batches. Target: streaming ≥ 0.8 × in-memory. The
    Python pre-scan of the files is timed separately.
    """
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
            "hidden_units": list(hparams.parse_hidden_units(hparams.DEFAULTS["hidden_units"])),
            "towers": hparams.DEFAULTS["towers"],
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


def markdown(t: dict) -> list[str]:
    """The throughput part of model.md."""
    ok = "✓" if t["meets_target"] else "✗"
    return [
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


def report_rows(t: dict) -> list[Row]:
    """The summary-table row of `taxifare bench`."""
    return [
        Row(
            "Training throughput",
            f"streaming CSV {number(t['streaming_examples_per_s'])} examples/s ({t['rows']:,} rows)",
            f"cached in-memory tensors {number(t['in_memory_examples_per_s'])} examples/s",
            f"**{t['ratio']:.2f}×** (target ≥ {t['target_ratio']})",
        )
    ]
