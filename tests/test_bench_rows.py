"""Each benchmark module renders its own summary-table rows from realistic figures (a full `make bench`)."""

from __future__ import annotations

import compileall
import copy
import json
import os
from pathlib import Path

import pytest

from pipelines.bench import all as bench_all
from pipelines.bench import (
    baselines,
    bytecode,
    first_run,
    ingest,
    model,
    overhead,
    quality,
    reliability,
    scale,
    serve,
    throughput,
)
from pipelines.bench.report import Row, number


def _summary(p50, p99, instances_per_s, count=1):
    return {
        "requests": 3000,
        "instances_per_request": count,
        "seconds": 2.1,
        "p50_ms": p50,
        "p90_ms": p50 * 1.2,
        "p99_ms": p99,
        "max_ms": p99 * 2,
        "requests_per_s": instances_per_s / count,
        "instances_per_s": instances_per_s,
    }


def _quality(layout, rmse, mean, rule, gbt, eval_rows):
    """One layout of the quality section as `taxifare bench` (full run) writes it."""
    return {
        "model": {
            "layout": layout,
            "data": f"course data (/work/shared/data/{layout}/taxi-train.csv, taxi-valid.csv)",
            "rmse": rmse,
            "rmse_plausible": round(rmse - 0.41, 4),
            "mae": 2.1046,
            "eval_rows": eval_rows,
            "eval_rows_plausible": eval_rows - 35,
            "train_rows": 7612,
            "train_rows_dropped": 178,
            "steps": 3000,
            "fit_seconds": 71.4,
            "run_seconds": 78.92,
            "target_rmse": {"lab": 4.6, "dated": 4.2}[layout],
            "references": {"training mean": 10.45, "distance rule": 6.85, "gradient-boosted trees": 4.81},
            "meets_rmse_target": True,
            "meets_time_target": True,
        },
        "references": {
            "train_rows": 7612,
            "eval_rows": eval_rows,
            "eval_rows_plausible": eval_rows - 35,
            "rmse": {"training mean": mean, "distance rule": rule, "gradient-boosted trees": gbt},
            "rmse_plausible": {"training mean": 9.8012, "distance rule": 5.9377, "gradient-boosted trees": gbt - 0.5},
            "gbt_fit_seconds": 1.83,
            "gbt_iterations": 300,
            "distance_rule_fare_per_km": 2.4713,
        },
        "data": f"course data (/work/shared/data/{layout})",
    }


QUALITY = {
    "lab": _quality("lab", 4.4483, 10.4452, 6.7841, 4.6092, 1665),
    "dated": _quality("dated", 3.6361, 10.5068, 6.2813, 4.1772, 1571),
}

THROUGHPUT = {
    "rows": 1_000_000,
    "files": 4,
    "plausible_share": 0.9874,
    "batch_size": 512,
    "steps_per_run": 3906,
    "repeats": 5,
    "model": {"hidden_units": [128, 64, 32], "towers": 2, "params": 48321},
    "in_memory_examples_per_s": 420239,
    "streaming_examples_per_s": 363281,
    "ratio": 0.853,
    "target_ratio": 0.8,
    "meets_target": True,
    "all_runs_examples_per_s": {"in_memory": [420239] * 5, "streaming": [363281] * 5},
    "all_runs_ratio": [0.73, 0.85, 0.853, 0.9, 0.99],
    "cpu_us_per_example": {"in_memory": 3.1, "streaming": 4.7},
    "load_average_1min": 1.52,
    "csv_write_seconds": 6.1,
    "scan_seconds": 2.3,
    "scan_rows_per_s": 434783,
}


def _step(wall, in_step, cached=False):
    if cached:
        return {"wall_s": None, "in_step_s": None, "overhead_s": None, "cached": True}
    return {"wall_s": wall, "in_step_s": in_step, "overhead_s": round(wall - in_step, 3), "cached": False}


PIPELINE = {
    "params": "defaults (make run)",
    "runs": {
        "first": {
            "wall_s": 49.4,
            "predict_rmse": 4.51,
            "steps": {
                "ingest": _step(0.9, 0.75),
                "validate": _step(11.9, 11.74),
                "train": _step(16.2, 14.84),
                "export": _step(9.4, 7.94),
                "deploy": _step(10.5, 9.27),
                "predict": _step(0.3, 0.17),
            },
        },
        "cached": {
            "wall_s": 9.4,
            "predict_rmse": 4.51,
            "steps": {
                "ingest": _step(None, None, cached=True),
                "validate": _step(None, None, cached=True),
                "train": _step(None, None, cached=True),
                "export": _step(None, None, cached=True),
                "deploy": _step(8.6, 7.4),
                "predict": _step(0.3, 0.18),
            },
        },
    },
    "orchestration_overhead_per_task_s": 0.058,
    "max_step_overhead_s": 1.46,
    "mean_step_overhead_s": 0.748,
    "cached_steps_on_rerun": ["ingest", "validate", "train", "export"],
    "target_wall_s": 60.0,
    "target_step_overhead_s": 0.5,
}

SERVE_TARGETS = {
    "single_p50_ms": 2.0,
    "single_p50_over_signature": 5.0,
    "concurrent_p99_ms": 10.0,
    "throughput_instances_per_s": 20_000.0,
}
SERVE = {
    "command": "python -m pipelines.bench.serve --out build/bench --limit-s 5 --model-dir /tmp/taxifare-bench-x/train-lab",
    "model_dir": "/tmp/taxifare-bench-x/train-lab/export/exporter/1764195000",
    "layout": "lab",
    "model_version": "1764195000",
    "machine": {"cpus": 2, "python": "3.11.9", "loadavg_before": [1.4, 1.5, 1.45], "loadavg_after": [1.5, 1.6, 1.5]},
    "in_process": {
        "signature_call_p50_ms": 0.3651,
        "signature_call_p99_ms": 0.52,
        "validate_and_call_p50_ms": 0.41,
        "calls": 3000,
    },
    "servers": {
        "batch": {
            "single": _summary(0.6372, 0.8503, 1569.4),
            "concurrent_single": _summary(1.3, 2.2391, 6100.0),
            "throughput_100": _summary(3.0, 5.1, 261178.3, count=100),
        },
        "inline": {
            "single": _summary(0.61, 0.83, 1639.3),
            "concurrent_single": _summary(1.6, 3.1, 5000.0),
            "throughput_100": _summary(4.0, 7.0, 198000.0, count=100),
        },
        "naive": {
            "single": _summary(44.2531, 60.2, 22.6),
            "concurrent_single": _summary(300.0, 380.0, 26.0),
            "throughput_100": _summary(380.0, 420.0, 2074.2, count=100),
        },
    },
    "measured_at": "2026-11-26T22:08:01Z",
    "verdict": {
        "mode": "batch",
        "values": {
            "single_p50_ms": 0.6372,
            "single_p50_over_signature": 1.75,
            "concurrent_p99_ms": 2.2391,
            "throughput_instances_per_s": 261178.3,
        },
        "targets": SERVE_TARGETS,
        "met": {name: True for name in SERVE_TARGETS},
        "all_met": True,
    },
}

INGEST = {
    "rows": 200_000,
    "source_bytes": 11_812_000,
    "upload_bytes": 11_114_906,
    "repeats": 5,
    "dataset_id": "d41d8cd98f00",
    "seconds": {"plain": [0.078] * 5, "storage": [0.084] * 5, "ingest": [0.2093] * 5, "reingest": [0.1214] * 5},
    "median_seconds": {"plain": 0.0778, "storage": 0.0843, "ingest": 0.2093, "reingest": 0.1214},
    "throughput_mib_s": {"plain": 136.2, "storage": 125.8, "ingest": 50.4},
    "time_ratio_to_plain": {"storage": 1.083, "ingest": 2.701, "reingest": 1.56},
    "reingest_vs_ingest": 0.58,
    "objects_uploaded_on_reingest": [0, 0, 0, 0, 0],
    "machine": {"cpus": 2, "python": "3.11.9"},
}


def _entry(name, title, passed=True, **figures):
    return {"name": name, "title": title, "passed": passed, "measured_at": "2026-11-26T22:10:00Z", "figures": figures}


RELIABILITY_FIGURES = [
    _entry(
        "data_faults_dated",
        "Corrupt inputs (dated layout) through ingest → validate",
        fault_kinds=8,
        rows_checked=2450,
        faults_injected=50,
        quarantined=50,
        clean_rows_lost=0,
        by_kind={},
    ),
    _entry(
        "data_ten_percent_dirty_lab",
        "10 % dirty lab file through ingest → validate, gated by max_bad_fraction",
        rows_checked=20000,
        faults_injected=2000,
        quarantined=2000,
        clean_rows_in=18000,
        clean_rows_out=18000,
        worst_split_bad_fraction=0.10249,
        passes_at=0.10249,
        fails_below=0.10239,
        fails_at_default_0_05=True,
    ),
    _entry(
        "data_whole_file_damage",
        "Empty, header-only, blank and binary files refused with a clear error",
        files_tried=4,
        refused=4,
        objects_written=0,
        messages=[],
    ),
    _entry(
        "endpoint_fuzz",
        "Fuzzed requests against the server process",
        requests_tried=10015,
        seconds=12.4,
        responses_5xx=0,
        oversize_413=10,
        server_alive_after=True,
        health_after=200,
        correct_prediction_after=True,
    ),
    _entry(
        "endpoint_load",
        "8 clients for 60 s against the server process",
        clients=8,
        seconds=60.0,
        requests=70617,
        instances=70617,
        requests_per_s=1176.9,
        errors=0,
        rss_after_warmup_mib=673.4,
        rss_at_end_mib=676.0,
        rss_max_mib=676.3,
        rss_growth=0.0039,
        rss_growth_limit=0.1,
        server_alive_after=True,
    ),
    _entry(
        "ingest_rerun_and_tamper",
        "Course files ingested; re-run; one flipped byte in each object",
        rows=9435,
        objects=3,
        bytes=540000,
        rerun_objects_uploaded=0,
        rerun_generations_unchanged=True,
        faults_injected=3,
        detections=6,
        checks=6,
        by_object={},
    ),
    _entry(
        "pipeline_fault_rerun",
        "Pipeline: export fails (unreachable store in that step only), cached re-run",
        faults_injected=1,
        faulty_step="export",
        rerun_cached=["ingest", "validate", "train"],
        rerun_executed=["export", "deploy", "predict"],
        objects_lost_or_changed=0,
    ),
    _entry(
        "security_bind",
        "taxifare serve binds loopback unless told otherwise",
        listening={"default": ["127.0.0.1"], "--host 0.0.0.0": ["0.0.0.0"]},
    ),
    _entry(
        "security_pip_audit",
        "pip-audit over requirements.lock",
        passed=False,
        services_tried=["pypi", "osv"],
        unreachable=["pypi: every one of the 133 pinned packages was skipped", "osv: pip-audit exit 1"],
    ),
    _entry(
        "security_secrets",
        "No credentials or keys in the git-tracked files",
        files_scanned=135,
        bytes_scanned=943718,
        patterns=12,
        findings=[],
    ),
]

RELIABILITY = {
    "mode": "run",
    "pytest_runs": [
        {"selection": "-m reliability tests", "exit_code": 1, "seconds": 180.2, "summary": "1 failed, 13 passed"},
        {
            "selection": "tests/test_setup_gcp.py::test_no_project_level_storage_role_is_ever_granted",
            "exit_code": 0,
            "seconds": 3.1,
            "summary": "1 passed in 0.41s",
        },
    ],
    "tests": [
        {"test": "tests.test_reliability_data::test_corrupt_inputs[lab]", "outcome": "passed", "seconds": 14.2},
        {
            "test": "tests.test_reliability_security::test_pip_audit",
            "outcome": "failed",
            "seconds": 20.5,
            "message": "Failed: no vulnerability service could be reached",
        },
        {
            "test": "tests.test_ingest::test_emulator_killed_mid_ingest_then_rerun_completes",
            "outcome": "passed",
            "seconds": 5.21,
        },
        {
            "test": "tests.test_setup_gcp::test_no_project_level_storage_role_is_ever_granted",
            "outcome": "passed",
            "seconds": 0.012,
        },
        {"test": "tests.test_server::test_slow_client", "outcome": "skipped", "seconds": 0.0},
    ],
    "figures": RELIABILITY_FIGURES,
}

RUN_OUTPUT = [  # what a default run printed (32 lines)
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796181393.307475   13916 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796181393.386746   13916 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 AVX512_FP16 AVX_VNNI FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796181395.687809   13916 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "✓ ingest         done        1.1 s",
    "✓ validate       done       18.2 s",
    "✓ train          done       32.1 s",
    "✓ export         done       13.6 s",
    "✓ deploy         done       20.5 s",
    "✓ predict        done        0.4 s",
    "taxifare local run — 86.3 s                                                     ",
    "┏━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓",
    "┃ step     ┃ wall s ┃ start+exit s ┃ facts                                     ┃",
    "┡━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩",
    "│ ingest   │   1.04 │         0.31 │ train_rows=16028, valid_rows=3972,        │",
    "│          │        │              │ layout=lab                                │",
    "│ validate │  16.05 │         0.36 │ clean_rows=19692, bad_rows=308            │",
    "│ train    │  31.55 │        12.48 │ rmse=2.948, mae=2.143                     │",
    "│ export   │  14.09 │        12.68 │ version=1796181442                        │",
    "│ deploy   │  20.57 │         2.67 │ model_version=1796181442                  │",
    "│ predict  │   2.75 │         2.71 │ instances=201, rmse=2.952                 │",
    "└──────────┴────────┴──────────────┴───────────────────────────────────────────┘",
    "endpoint RMSE on the validation sample: 2.952",
    "model:       gs://taxifare-local/taxifare/models/1796181442",
    "evaluation:  /tmp/fr-probe/wd/pipeline_root/taxifare-2026-12-02-03-16-38-350555/train/evaluation",
    "tensorboard: /tmp/fr-probe/wd/pipeline_root/taxifare-2026-12-02-03-16-38-350555/train/model/tensorboard",
    "predictions: /tmp/fr-probe/wd/pipeline_root/taxifare-2026-12-02-03-16-38-350555/predict/predictions",
    "artifacts:   /tmp/fr-probe/wd/pipeline_root/taxifare-2026-12-02-03-16-38-350555",
    "logs:        /tmp/fr-probe/wd/runs/20261202-031638/logs",
    "run page:    /tmp/fr-probe/wd/runs/20261202-031638/index.html  (taxifare ui serves it)",
]
RUN_DIR = "/tmp/taxifare-bench-x/first_run/run/pipeline_root/taxifare-2026-12-02-03-16-38-350555"
FIRST_RUN = {
    "params": {},
    "run": {
        "command": ".venv/bin/taxifare run --no-cache --workdir /tmp/taxifare-bench-x/first_run/run "
        "--json /tmp/taxifare-bench-x/first_run/summary.json",
        "wall_s": 121.87,
        "exit_code": 0,
        "lines": 32,
        "output": RUN_OUTPUT,
        "summary_wall_s": 112.412,
        "steps": {"ingest": 1.04, "validate": 16.05, "train": 58.31, "export": 14.09, "deploy": 20.57, "predict": 2.75},
        "train_rmse": 2.6091,
        "predict_rmse": 2.6124,
        "run_dir": RUN_DIR,
        "clean_train": RUN_DIR + "/validate/clean_train",
        "clean_valid": RUN_DIR + "/validate/clean_valid",
        "clean_train_rows": 15783,
        "clean_valid_rows": 3909,
        "load_1min": [1.12, 1.95],
    },
    "trainer": {
        "command": "python -m trainer.task --train_data_paths "
        + RUN_DIR
        + "/validate/clean_train --eval_data_paths "
        + RUN_DIR
        + "/validate/clean_valid --output_dir /tmp/taxifare-bench-x/first_run/trainer --train_steps 2000 "
        "--train_batch_size 512 --hidden_units '64 32' --learning_rate 0.003 --seed 42 --embedding_dim 0 --towers 5",
        "wall_s": 52.61,
        "exit_code": 0,
        "lines": 7,
        "hparams": ["--train_steps", "2000", "--train_batch_size", "512", "--hidden_units", "64 32"],
        "rmse": 2.6091,
        "steps": 2000,
        "train_rows": 15783,
        "eval_rows": 3909,
        "in_process_s": 45.2,
        "fit_s": 38.05,
        "load_1min": [1.95, 1.41],
    },
    "run_over_trainer": 2.316,
    "import_tensorflow": {
        "repeats": 3,
        "before_s": [6.212, 5.981, 6.04],
        "after_s": [6.101, 5.902, 6.388],
        "before_median_s": 6.04,
        "after_median_s": 6.101,
        "ratio": 0.99,
        "load_1min": [1.41, 1.22, 1.18, 1.09],
    },
    "compileall": {
        "command": "python -m compileall -q -j 0 .venv/lib/python3.11/site-packages",
        "seconds": 19.4,
        "exit_code": 1,
        "error_lines": 3,
        "pyc_before": 13689,
        "pyc_after": 13689,
        "written": 0,
        "written_examples": [],
        "site_packages": [".venv/lib/python3.11/site-packages"],
    },
    "targets": {"run_over_trainer": 2.0, "lines": 40, "import_ratio": 1.2},
}

FIGURES = {
    "quality": QUALITY,
    "throughput": THROUGHPUT,
    "serve": SERVE,
    "ingest": INGEST,
    "pipeline": PIPELINE,
    "reliability": RELIABILITY,
    "first_run": FIRST_RUN,
    # A whole cross-validation section's cv.json (target not met on that run)
    "cv": json.loads((Path(__file__).parent / "fixtures" / "bench_cv.json").read_text()),
    # A whole scale section's scale.json, as measured on a loaded machine (validate still failing)
    "scale": json.loads((Path(__file__).parent / "fixtures" / "bench_scale.json").read_text()),
}


def full_report(**overrides) -> dict:
    """A report as run_all returns it after a full `make bench` (every section ok)."""
    report = {
        "measured_at": "2026-11-26T22:12:23Z",
        "command": "taxifare bench --out build/bench",
        "quick": False,
        "git_commit": "d3c462d",
        "sections": {
            name: {"ok": True, "figures": copy.deepcopy(figures), "seconds": 60.0} for name, figures in FIGURES.items()
        },
        "total_seconds": 399.2,
        "within_budget": True,
        "machine": {
            "cpus": 2,
            "python": "3.11.9",
            "loadavg_before": [1.37, 1.47, 1.45],
            "loadavg_after": [1.52, 1.64, 1.53],
        },
    }
    report.update(overrides)
    return report


def _markdown(rows: list[Row]) -> list[str]:
    return [row.markdown() for row in rows]


# The rows of README.md's benchmark table, as the report rendered them before each module rendered its own.
QUALITY_ROWS = [
    "| Model quality, lab | validation RMSE, all 1,665 rows: **4.448** (target ≤ 4.6) | training mean 10.445 · distance rule 6.784 · GBT 4.609 (same run) | ours / GBT **0.97×** |",
    "| Model quality, dated | validation RMSE, all 1,571 rows: **3.636** (target ≤ 4.2) | training mean 10.507 · distance rule 6.281 · GBT 4.177 (same run) | ours / GBT **0.87×** |",
]
THROUGHPUT_ROWS = [
    "| Training throughput | streaming CSV 363,281 examples/s (1,000,000 rows) | cached in-memory tensors 420,239 examples/s | **0.85×** (target ≥ 0.8) |",
]
PIPELINE_ROWS = [
    "| Local pipeline (`make run`) | default run **49.4 s** wall (target ≤ 60 s) | cached re-run 9.4 s (4 steps from cache) | re-run takes **0.19×** the first |",
    "| Local pipeline, per step | wall s (wall − time in the step function, i.e. Python/TF start and exit + orchestration): ingest 0.9 s (0.15) · validate 11.9 s (0.16) · train 16.2 s (1.36) · export 9.4 s (1.46) · deploy 10.5 s (1.23) · predict 0.3 s (0.13) | kfp.local orchestration per task (6 no-op tasks): **0.058 s** (target ≤ 0.5) | |",
]
FIRST_RUN_ROWS = [
    "| First run (`make run`, no cache) | `taxifare run --no-cache` **121.9 s** wall, exit 0 | standalone `python -m trainer.task`, same 15,783 rows and 2,000 steps: 52.6 s | **2.32×** (target ≤ 2.0×): **not met** |",
    "| First run, output | **32 lines** printed (stdout + stderr) | | target ≤ 40: met |",
    "| `import tensorflow`, fresh process | venv as installed: median **6.04 s** (3 runs) | after `compileall` over site-packages: 6.10 s; compileall wrote 0 of 13,689 .pyc files (nothing was left to compile) | **0.99×** (target ≤ 1.2×): met |",
]
SERVE_ROWS = [
    "| Serving, 1 instance | p50 **0.637 ms**, p99 0.850 ms | in-process signature call p50 0.365 ms | **1.7×** the signature call |",
    "| Serving, 8 clients | p99 2.24 ms (1 instance); **261,178 instances/s** (100-instance requests) | targets: p99 ≤ 10 ms, ≥ 20,000 instances/s | both met |",
    "| Serving vs naive server | naive (`model.predict` per request): p50 44.25 ms, 2,074 instances/s | ours 0.637 ms, 261,178 instances/s | p50 **69×** lower, throughput **126×** higher |",
]
INGEST_ROWS = [
    "| Ingest (200,000 rows, 10.6 MiB) | end to end 50.4 MiB/s; upload with crc32c verify 125.8 MiB/s | plain `upload_from_filename` 136.2 MiB/s | time **2.70×** / 1.08× plain |",
    "| Re-ingest, same data | 0.121 s, objects uploaded [0] | first ingest 0.209 s | **0.58×** |",
]
CV_ROWS = [
    "| Model quality, lab, 5-fold CV | RMSE over 9,435 rows: **4.011 ± 0.426** | LightGBM tuned in the same run 4.089 ± 0.460 · distance rule 6.579 ± 1.588 | ours / LightGBM **0.98×** (target ≤ 0.95×): **not met** |",
    "| Model quality, dated, 5-fold CV | RMSE over 8,904 rows: **4.148 ± 0.758** | LightGBM tuned in the same run 4.201 ± 0.629 · distance rule 7.090 ± 1.263 | ours / LightGBM **0.99×** (target ≤ 0.95×): **not met** |",
]
SCALE_ROWS = [
    "| Ingest at 10^7 rows (`taxifare ingest`) | 538,706 rows/s, 18.6 s, peak RSS 81 MB | target ≥ 500,000 rows/s; RSS ≤ 1.3× 10^5 rows (92 MB) | pass; RSS **0.87×** pass |",
    "| Validate at 10^7 rows (`taxifare validate`) | 189,243 rows/s, 52.8 s, peak RSS 176 MB | target ≥ 1,000,000 rows/s; RSS ≤ 1.3× 10^5 rows (154 MB) | **FAIL**; RSS **1.14×** pass |",
    "| Training at 10^7 rows (500 steps) | streaming 6,157 examples/s, peak RSS 1,135 MB | cached 4,604 examples/s, peak RSS 1,568 MB | RSS **0.72×** cached |",
]
RELIABILITY_ROWS = [
    "| Reliability: Corrupt inputs (dated layout) through ingest → validate | 8 fault kinds, 2,450 rows checked, 50 faults injected, 50 quarantined, 0 clean rows lost | | pass |",
    "| Reliability: 10 % dirty lab file through ingest → validate, gated by max_bad_fraction | 20,000 rows, 2,000 faults → 2,000 quarantined, 0 clean rows lost; passes at max_bad_fraction 0.10249, fails at 0.10239 and at 0.05 | | pass |",
    "| Reliability: Empty, header-only, blank and binary files refused with a clear error | 4 files tried, 4 refused with a one-line error, 0 objects written | | pass |",
    "| Reliability: Fuzzed requests against the server process | 10,015 requests, 0 × 5xx, 10 oversize → 413, server alive and healthy after: True | | pass |",
    "| Reliability: 8 clients for 60 s against the server process | 8 clients × 60 s: 70,617 requests, 0 errors, RSS 673.4 → 676.0 MiB (+0.4%, limit 10%) | | pass |",
    "| Reliability: Course files ingested; re-run; one flipped byte in each object | 9,435 rows / 3 objects; re-run uploaded 0; 3 one-byte alterations → 6/6 checksum detections | | pass |",
    "| Reliability: Pipeline: export fails (unreachable store in that step only), cached re-run | 1 fault (export: unreachable store); re-run executed export, deploy, predict, cached ingest, validate, train; 0 objects lost or changed | | pass |",
    "| Reliability: taxifare serve binds loopback unless told otherwise | default: 127.0.0.1; --host 0.0.0.0: 0.0.0.0 | | pass |",
    "| Reliability: pip-audit over requirements.lock | NOT AUDITED — pypi: every one of the 133 pinned packages was skipped; osv: pip-audit exit 1 | | **FAIL** |",
    "| Reliability: No credentials or keys in the git-tracked files | 135 tracked files (0.9 MiB), 12 patterns, 0 findings | | pass |",
    # The junit cases without figures of their own; the test_reliability_* cases are shown by their figures above.
    "| Reliability: `test_ingest::test_emulator_killed_mid_ingest_then_rerun_completes` | no figures (test outcome only) (5.2 s) | | pass |",
    "| Reliability: `test_setup_gcp::test_no_project_level_storage_role_is_ever_granted` | no figures (test outcome only) (0.0 s) | | pass |",
    "| Reliability: `test_server::test_slow_client` | no figures (test outcome only) (0.0 s) | | skipped |",
]


def test_number_and_row_formats():
    assert [number(None), number(float("nan")), number(3), number(1234.5), number(0.6372, 3), number(9.4, 1)] == [
        "—",
        "—",
        "3",
        "1,234",
        "0.637",
        "9.4",
    ]
    assert Row("a", "b", "", "pass").markdown() == "| a | b | | pass |"
    assert Row("a", "b", "c").markdown() == "| a | b | c | |"


def test_model_quality_rows_compare_ours_with_the_references_of_the_same_run():
    assert _markdown(model.report_rows(QUALITY)) == QUALITY_ROWS
    assert baselines.report_cell(QUALITY["dated"]["references"]) == (
        "training mean 10.507 · distance rule 6.281 · GBT 4.177 (same run)"
    )
    quick = copy.deepcopy(QUALITY)
    quick["lab"]["model"].update(quick=True, rmse=5.2)
    (lab, _) = model.report_rows(quick)
    assert lab.measured.startswith("validation RMSE (quick), all 1,665 rows: **5.200**")
    assert lab.verdict == "ours / GBT **1.13×**"


def test_model_quality_details_list_every_rmse():
    lines = model.report_details(QUALITY)
    assert lines[0] == "## Model quality detail (validation RMSE)"
    assert lines[-2:] == [
        "| lab | course data (/work/shared/data/lab) | 4.448 | 4.038 | 10.445 | 6.784 | 4.609 | 4.109 | 78.9 |",
        "| dated | course data (/work/shared/data/dated) | 3.636 | 3.226 | 10.507 | 6.281 | 4.177 | 3.677 | 78.9 |",
    ]


def test_throughput_row():
    assert _markdown(throughput.report_rows(THROUGHPUT)) == THROUGHPUT_ROWS


def test_local_pipeline_rows_and_steps():
    assert _markdown(overhead.report_rows(PIPELINE)) == PIPELINE_ROWS
    details = overhead.report_details(PIPELINE)
    assert details[4] == "| ingest | first | 0.90 | 0.75 | 0.150 | False |"
    assert "| train | cached | — | — | — | True |" in details
    assert len(details) == 4 + 12  # title, blank, header, rule; six steps in each run
    # A step the first run took from the cache has no time of its own to show.
    partly_cached = copy.deepcopy(PIPELINE)
    partly_cached["runs"]["first"]["steps"]["ingest"] = _step(None, None, cached=True)
    assert "orchestration): validate 11.9 s (0.16) · train" in overhead.report_rows(partly_cached)[1].measured
    unmeasured = {**PIPELINE, "orchestration_overhead_per_task_s": None}
    assert "**— s** (target ≤ 0.5)" in overhead.report_rows(unmeasured)[1].compared


def test_serving_rows_against_the_signature_call_targets_and_the_naive_server():
    assert _markdown(serve.report_rows(SERVE)) == SERVE_ROWS
    without_naive = copy.deepcopy(SERVE)
    del without_naive["servers"]["naive"]
    missed = copy.deepcopy(without_naive)
    missed["verdict"]["met"]["throughput_instances_per_s"] = False
    assert _markdown(serve.report_rows(without_naive)) == SERVE_ROWS[:2]
    assert serve.report_rows(missed)[1].verdict == "**not met**"


def test_ingest_rows():
    assert _markdown(ingest.report_rows(INGEST)) == INGEST_ROWS


def test_cv_rows_put_ours_next_to_lightgbm_and_the_distance_rule():
    assert _markdown(quality.report_rows(FIGURES["cv"])) == CV_ROWS


def test_scale_rows_hold_the_largest_size_against_the_targets():
    assert _markdown(scale.report_rows(FIGURES["scale"])) == SCALE_ROWS


def test_reliability_rows_show_each_tests_figures_and_failures():
    assert _markdown(reliability.report_rows(RELIABILITY)) == RELIABILITY_ROWS
    leaked = _entry(
        "security_secrets",
        "No credentials or keys in the git-tracked files",
        passed=False,
        files_scanned=140,
        bytes_scanned=1048576,
        patterns=12,
        findings=["a.py:1 private key block", "b.json:3 service-account key JSON", "c.txt:9 token", "d.txt:2 token"],
    )
    new_kind = _entry("something_new", "A new test", count=3, label="abc", nested={"a": 1})
    (leak_row, new_row) = reliability.report_rows({"figures": [leaked, new_kind], "tests": []})
    assert leak_row == Row(
        "Reliability: No credentials or keys in the git-tracked files",
        "140 tracked files (1.0 MiB), 12 patterns, 4 findings: a.py:1 private key block; "
        "b.json:3 service-account key JSON; c.txt:9 token",
        "",
        "**FAIL**",
    )
    assert new_row.measured == "count=3, label=abc"
    failed_case = {"test": "tests.test_ingest::test_x", "outcome": "failed", "seconds": 2.04, "message": "boom"}
    assert reliability.report_rows({"figures": [], "tests": [failed_case]}) == [
        Row("Reliability: `test_ingest::test_x`", "boom (2.0 s)", "", "**FAIL**")
    ]
    assert _markdown(reliability.report_rows({"mode": "collect", "pytest_runs": [], "tests": [], "figures": []})) == [
        "| Reliability | no figures found: run `make test-reliability` or `taxifare bench --reliability run` | | — |"
    ]


def test_reliability_details_list_the_pytest_runs_and_every_test():
    lines = reliability.report_details(RELIABILITY)
    assert lines[:3] == [
        "## Reliability tests",
        "",
        "- `pytest -m reliability tests`: 1 failed, 13 passed (180.2 s, exit 1)",
    ]
    assert (
        "| `tests.test_reliability_security::test_pip_audit` | failed — Failed: no vulnerability service could be reached | 20.5 |"
        in lines
    )


def test_first_run_rows_put_the_run_next_to_the_trainer_the_lines_and_the_import_against_its_targets():
    assert _markdown(first_run.report_rows(FIRST_RUN)) == FIRST_RUN_ROWS
    within = copy.deepcopy(FIRST_RUN)
    within["run"].update(wall_s=98.2, lines=900)
    within.update(run_over_trainer=1.867, params={"train_steps": 200})
    within["import_tensorflow"].update(before_median_s=15.31, ratio=2.509)
    within["compileall"].update(written=13689, pyc_before=0)
    run_row, lines_row, import_row = first_run.report_rows(within)
    assert run_row.measured == "`taxifare run --no-cache` **98.2 s** wall, exit 0 (quick: `-p train_steps=200`)"
    assert run_row.verdict == "**1.87×** (target ≤ 2.0×): met"
    assert lines_row.verdict == "target ≤ 40: **not met**"
    assert import_row.measured == "venv as installed: median **15.31 s** (3 runs)"
    assert import_row.compared.endswith("compileall wrote 13,689 of 13,689 .pyc files")
    assert import_row.verdict == "**2.51×** (target ≤ 1.2×): **not met**"
    # Exactly at the target is within it.
    at_target = {**FIRST_RUN, "run_over_trainer": 2.0}
    assert first_run.report_rows(at_target)[0].verdict == "**2.00×** (target ≤ 2.0×): met"


def test_first_run_rows_when_the_run_or_the_trainer_failed():
    failed = copy.deepcopy(FIRST_RUN)
    failed["run"] = {
        "command": FIRST_RUN["run"]["command"],
        "wall_s": 41.26,
        "exit_code": 1,
        "lines": 14,
        "output": [
            "✓ ingest         done        1.1 s",
            "✗ validate       failed     12.0 s",
            "RunError: 31 % bad rows",
            "",
        ],
    }
    failed.update(trainer=None, run_over_trainer=None, params={"train_steps": 200})
    run_row, lines_row, import_row = first_run.report_rows(failed)
    assert run_row == Row(
        "First run (`make run`, no cache)",
        "`taxifare run --no-cache` **failed** (exit 1) after 41.3 s (quick: `-p train_steps=200`)",
        "last line: RunError: 31 % bad rows",
        "**FAIL**",
    )
    assert (lines_row.measured, lines_row.verdict) == ("**14 lines** printed (stdout + stderr)", "— (failed run)")
    assert import_row.markdown() == FIRST_RUN_ROWS[2]  # measured all the same
    trainer_failed = copy.deepcopy(FIRST_RUN)
    trainer_failed["trainer"] = {"command": "python -m trainer.task …", "wall_s": 3.1, "exit_code": 2, "lines": 5}
    trainer_failed["run_over_trainer"] = None
    row = first_run.report_rows(trainer_failed)[0]
    assert (row.compared, row.verdict) == ("standalone trainer **failed** (exit 2)", "**FAIL**")
    no_summary = copy.deepcopy(FIRST_RUN)
    no_summary.update(trainer=None, run_over_trainer=None)
    row = first_run.report_rows(no_summary)[0]
    assert (row.compared, row.verdict) == ("standalone trainer not run: the run wrote no summary JSON", "—")


def test_first_run_details_show_where_the_time_went_and_what_the_run_printed():
    lines = first_run.report_details(FIRST_RUN)
    assert lines[0] == "## First run"
    assert "| the CLI around it (start, emulator, stop) | 9.5 |" in lines
    assert "| step train | 58.3 |" in lines and "| its `fit` (eval_metrics.json train_seconds) | 38.0 |" in lines
    assert (
        "- `python -m compileall -q -j 0 .venv/lib/python3.11/site-packages`: 19.4 s, exit 1 "
        "(3 files it cannot compile); .pyc files 13,689 → 13,689, written 0" in lines
    )
    assert "- `import tensorflow`: venv as installed 6.21, 5.98, 6.04 s; after compileall 6.10, 5.90, 6.39 s" in lines
    assert (
        "- load average (1 min) before → after: run 1.12 → 1.95; trainer 1.95 → 1.41; "
        "imports before compileall 1.41 → 1.22; after 1.18 → 1.09" in lines
    )
    assert "validation RMSE in the run's train step 2.609, standalone 2.609." in lines[-len(RUN_OUTPUT) - 6]
    assert lines[-len(RUN_OUTPUT) - 2 :] == ["```", *RUN_OUTPUT, "```"]
    noisy = copy.deepcopy(FIRST_RUN)
    noisy["run"].update(lines=900, output=[f"line {i}" for i in range(200)])
    tail = first_run.report_details(noisy)[-3:]
    assert tail == ["line 59", "… 840 more lines", "```"]


def test_first_run_counts_printed_lines_and_written_bytecode(tmp_path):
    assert bytecode.output_lines("a\nb\n") == ["a", "b"]
    assert bytecode.output_lines("a\rb\nc") == ["a\rb", "c"]  # a carriage return redraws the line
    assert bytecode.output_lines("") == []
    package = tmp_path / "site" / "pkg"
    package.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (package / f"{name}.py").write_text(f"NAME = {name!r}\n")
    roots = [tmp_path / "site"]
    assert bytecode.pyc_files(roots) == {}
    compileall.compile_dir(roots[0], quiet=2)
    compiled = bytecode.pyc_files(roots)
    assert len(compiled) == 3
    compileall.compile_dir(roots[0], quiet=2)  # nothing left to compile: nothing written
    assert bytecode.written_pycs(compiled, bytecode.pyc_files(roots)) == []
    module = package / "b.py"
    module.write_text("NAME = 'bb'\n")
    os.utime(module, (module.stat().st_atime, module.stat().st_mtime + 10))
    compileall.compile_dir(roots[0], quiet=2)
    (written,) = bytecode.written_pycs(compiled, bytecode.pyc_files(roots))
    assert Path(written).name.startswith("b.") and Path(written).parent.name == "__pycache__"


def test_the_table_is_each_modules_rows_in_the_readme_order():
    table = bench_all.render_table(full_report())
    assert table.splitlines() == [
        "| area | measured | compared with | ratio / verdict |",
        "|---|---|---|---|",
        *QUALITY_ROWS,
        *CV_ROWS,
        *THROUGHPUT_ROWS,
        *PIPELINE_ROWS,
        *FIRST_RUN_ROWS,
        *SERVE_ROWS,
        *INGEST_ROWS,
        *SCALE_ROWS,
        *RELIABILITY_ROWS,
        "",
        "`taxifare bench` on 2 CPUs (load average [1.37, 1.47, 1.45] → [1.52, 1.64, 1.53]), commit d3c462d, "
        f"2026-11-26T22:12:23Z: all sections in **399 s** (budget {bench_all.TIME_BUDGET_S:.0f} s).",
    ]


def test_a_failed_section_is_one_row_even_when_its_module_cannot_load(monkeypatch):
    report = full_report(quick=True)
    report["sections"]["serve"] = {"ok": False, "error": "ImportError: " + "x" * 300, "seconds": 0.1}
    del report["sections"]["throughput"]
    # The failed section's module is not imported: it may be what failed.
    monkeypatch.setitem(bench_all.MODULES, "serve", ("no_such_module", "Serving"))
    lines = bench_all.render_table(report).splitlines()
    assert f"| Serving | **failed** | ImportError: {'x' * 147} | |" in lines
    assert not any(line.startswith(("| Training throughput", "| Serving,")) for line in lines)
    assert lines[2:4] == QUALITY_ROWS  # the quick flag of the report is not the quality figures' own
    assert lines[-1].startswith("`taxifare bench` --quick on 2 CPUs")


def test_report_markdown_has_the_table_then_each_sections_details():
    report = full_report()
    markdown = bench_all.render_markdown(report)
    assert markdown.startswith("# Benchmark report\n\n" + bench_all.render_table(report) + "\n## Sections\n")
    titles = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert titles == [
        "## Sections",
        "## Reliability tests",
        "## Local pipeline steps",
        "## First run",
        "## Model quality detail (validation RMSE)",
        "## Model quality by cross-validation (RMSE mean ± sd over the folds)",
        "## Scale",
    ]
    assert "| pipeline | 60.0 | ok |" in markdown
    report["sections"]["pipeline"] = {"ok": False, "error": "RunError: train failed", "seconds": 3.0}
    markdown = bench_all.render_markdown(report)
    assert "| pipeline | 3.0 | failed: RunError: train failed |" in markdown
    assert "## Local pipeline steps" not in markdown


@pytest.mark.parametrize("name", bench_all.SECTIONS)
def test_every_section_has_a_module_that_renders_rows(name):
    module = bench_all._module(name)
    rows = module.report_rows(FIGURES[name])
    assert rows and all(isinstance(row, Row) and row.area and row.measured for row in rows)
