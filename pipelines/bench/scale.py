"""Scale: the data steps and the trainer at growing row counts, and what that projects to at 10^8–10^9 rows.

Everything is measured from the outside, through the commands a user runs, each in its own process:

1. Synthetic dated trips (``trainer.synth``) are written once per size. Up to ``BLOCK_ROWS`` rows the
   file is exactly ``synth.write_csv``'s; a larger file repeats that block's trips with fresh keys
   (``key`` = row number, so every row has its own key and the hash split still spreads them), which
   writes 10^7 rows in seconds instead of formatting every row in Python.
2. Per size: ``taxifare ingest <file> --local-root <dir> --no-progress --json``, then
   ``taxifare validate --dataset <the ingested dataset> --out <dir> --smoke-steps 0 --json``. Each gives
   wall seconds, rows/s (rows the command reported ÷ wall), CPU seconds, and peak memory: the
   process tree's summed RSS sampled every ``RSS_SAMPLE_S`` (a step that forks workers counts them all)
   and the largest single process's ``ru_maxrss``, which a small launcher process reads with
   ``os.wait4`` (see ``_LAUNCHER``). The 1-minute load average at each command's end goes with it.
3. At the largest size, ``python -m trainer.task --train_steps N`` on the ingested train/valid files,
   cached and streaming. The trainer has no flag that chooses: it caches when the train rows are at
   most ``trainer.model.CACHE_MAX_ROWS``, so each run sets that limit (above the rows: cached; 0:
   streaming) before calling ``trainer.task.main``. Examples/s = steps × batch size ÷ the trainer's own
   ``train_seconds`` (``eval_metrics.json``: ``model.fit``, including its one evaluation at the end).
4. Targets at the largest size (the issue's, at 10^7 rows) and a projection for 10^8 and 10^9 rows,
   extrapolated linearly from the largest size's rates; every figure not measured here is an assumption
   named in ``ASSUMPTIONS`` and printed with the table.

Writes ``scale.json`` and ``scale.md`` to ``--out``.

    python -m pipelines.bench.scale --out build/bench [--sizes 100000,1000000,10000000] [--train-steps 500]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from pipelines.bench.bytecode import subprocess_env
from pipelines.bench.report import REPO_ROOT, Row, load_average, machine, number

log = logging.getLogger("pipelines.bench.scale")

SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (100_000, 1_000_000)
PROJECTED_ROWS = (100_000_000, 1_000_000_000)
TRAIN_STEPS = 500
LAYOUT = "dated"
BLOCK_ROWS = 100_000  # rows synth formats; larger files repeat them with fresh keys
RSS_SAMPLE_S = 0.05
STEP_TIMEOUT_S = 3600

TARGET_VALIDATE_ROWS_S = 1_000_000
TARGET_INGEST_ROWS_S = 500_000
TARGET_RSS_RATIO = 1.3
TARGET_ROWS = 10_000_000  # the size the targets are set for

# What the projection assumes beyond this machine's measurements; each is printed with the table.
ASSUMPTIONS = {
    "vertex_machines": {
        "value": [("n1-standard-8", 8), ("n1-highcpu-32", 32)],
        "note": "one Vertex AI task that keeps every vCPU busy (as the issue asks of the steps; the table "
        "above shows the cores each step kept busy here); a vCPU does what one core here did (CPU-seconds per "
        "row as measured); reading the rows from Cloud Storage is taken not to be the bottleneck",
    },
    "vertex_workers": {
        "value": 8,
        "note": "validation sharded over this many n1-highcpu-32 workers, each reading its own shards; "
        "job provisioning (minutes) is not included",
    },
    "bigquery_slots": {
        "value": 2000,
        "note": "on-demand slots a project can use at once "
        "(https://cloud.google.com/bigquery/quotas#max_concurrent_slots_on-demand)",
    },
    "bigquery_mib_s_per_slot": {
        "value": 10,
        "note": "scan rate of one slot for a filter-and-count query: an assumption (BigQuery does not publish one)",
    },
    "bigquery_job_s": {
        "value": 5,
        "note": "start-up and commit of one query job, added per statement: an assumption",
    },
    "bigquery_scans": {
        "value": 2,
        "note": "full scans of the table: the checking query (counts per reason, quarantine table) and "
        "EXPORT DATA of the clean rows",
    },
    "bigquery_bytes_per_row": {
        "value": "measured",
        "note": "a row's bytes in BigQuery taken to be its CSV bytes here (source file bytes ÷ rows)",
    },
    "bigquery_usd_per_tib": {
        "value": 6.25,
        "note": "on-demand query price (https://cloud.google.com/bigquery/pricing#on_demand_pricing)",
    },
}

# The trainer with its cache limit set first (argv[1]); the rest of argv is the trainer's command line.
_TRAINER_WITH_CACHE_LIMIT = (
    "import sys\n"
    "from trainer import model, task\n"
    "model.CACHE_MAX_ROWS  # the limit the trainer chooses caching by; fail loudly if it is gone\n"
    "model.CACHE_MAX_ROWS = int(sys.argv[1])\n"
    "sys.exit(task.main(sys.argv[2:]))\n"
)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def write_trips(path: Path, rows: int, seed: int = 0, block: int = BLOCK_ROWS) -> Path:
    """``rows`` synthetic dated trips in ``path``: synth's own file up to ``block`` rows, else synth's
    first ``block`` rows repeated with the key set to the row number (unique per row)."""
    from trainer import schema, synth

    if rows <= block:
        return synth.write_csv(path, rows, layout=LAYOUT, seed=seed)
    columns = schema.get_layout(LAYOUT).columns
    k = columns.index(schema.KEY)
    heads, tails = [], []
    for fields in synth.iter_rows(block, layout=LAYOUT, seed=seed):
        heads.append(",".join(fields[:k]) + ("," if k else ""))
        tails.append(("," + ",".join(fields[k + 1 :]) if k + 1 < len(fields) else "") + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as out:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            out.write("".join(f"{heads[i]}{start + i}{tails[i]}" for i in range(n)))
    return path


# --------------------------------------------------------------------------------------------
# One measured command
# --------------------------------------------------------------------------------------------
# The kernel's peak RSS of a process (ru_maxrss) keeps the high-water mark of the process it was forked
# from across exec, so a command started straight from this (large) process would report this process's
# memory. Each command is therefore started by this small launcher (``python -S``, a few MB), which
# writes the command's rusage as JSON to argv[1]; the command is argv[2:].
_LAUNCHER = (
    "import json, os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    json.dump({'cpu_s': usage.ru_utime + usage.ru_stime, 'maxrss_kib': usage.ru_maxrss}, out)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _tree_rss(launcher: psutil.Process) -> int:
    """The summed RSS of the launcher's descendants: the command and any workers it started."""
    total = 0
    for p in launcher.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a worker that ended between listing and reading
            total += p.memory_info().rss
    return total


def run_measured(argv: list[str], log_dir: Path, name: str, timeout: float = STEP_TIMEOUT_S) -> dict:
    """Run one command; its wall and CPU seconds, peak RSS (its process tree's summed RSS, sampled; and
    the largest process's, from the kernel) and its stdout. Raises RuntimeError with the end of its
    stderr when it fails."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path, usage_path = (log_dir / f"{name}.{ext}" for ext in ("out", "err", "rusage.json"))
    peak = [0]
    done = threading.Event()
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        started = time.perf_counter()
        launcher = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER, str(usage_path), *argv],
            stdout=stdout,
            stderr=stderr,
            env=subprocess_env(),
            start_new_session=True,  # a timeout ends the command's whole process group
        )

        def sample() -> None:
            with contextlib.suppress(psutil.Error):  # the launcher ended between two samples
                proc = psutil.Process(launcher.pid)
                while not done.is_set():
                    peak[0] = max(peak[0], _tree_rss(proc))
                    done.wait(RSS_SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            code = launcher.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, 9)
            launcher.wait()
            raise RuntimeError(f"{name} did not finish in {timeout:.0f} s") from None
        finally:
            done.set()
            sampler.join()
        wall = time.perf_counter() - started
    if code != 0:
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name} exited with code {code}: {tail}")
    usage = json.loads(usage_path.read_text())
    kernel_peak = usage["maxrss_kib"] * 1024
    return {
        "wall_s": round(wall, 3),
        "load_average_1min": load_average()[0],  # on a shared machine, what else was running
        "cpu_s": round(usage["cpu_s"], 3),
        "peak_rss_mb": round(max(peak[0], kernel_peak) / 1e6, 1),
        "max_process_rss_mb": round(kernel_peak / 1e6, 1),
        "stdout": stdout_path.read_text(errors="replace"),
    }


def _figures(measured: dict, rows: int, cores: int) -> dict:
    wall, cpu = measured["wall_s"], measured["cpu_s"]
    return {
        "rows": rows,
        "wall_s": wall,
        "rows_per_s": round(rows / wall),
        "cpu_s": cpu,
        "cores_used": round(cpu / wall, 2),
        "rows_per_cpu_s": round(rows / cpu) if cpu else None,
        "peak_rss_mb": measured["peak_rss_mb"],
        "max_process_rss_mb": measured["max_process_rss_mb"],
        "cores": cores,
        "load_average_1min": measured["load_average_1min"],
    }


def _split_files(split: dict) -> list[str]:
    """A split's files as ingest reports them: its shards when it has them, else its one file."""
    shards = split.get("shards")
    return [s["uri"] if isinstance(s, dict) else str(s) for s in shards] if shards else [split["uri"]]


def code_state() -> dict:
    """The commit measured and the files that differed from it (the steps' code may be changing)."""
    from pipelines.bench.all import _git_commit

    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--", "trainer", "pipelines"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        changed = [line[3:] for line in done.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired):
        changed = None
    return {"git_commit": _git_commit(), "changed_files": changed}


# --------------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------------
def measure_size(work: Path, rows: int, seed: int = 0) -> dict:
    """Write `rows` trips, ingest them to a local root, validate the dataset; the figures of both."""
    from trainer.config import usable_cores

    cores = usable_cores()
    here = work / f"rows-{rows}"
    started = time.perf_counter()
    source = write_trips(here / "trips.csv", rows, seed=seed)
    write_s = time.perf_counter() - started
    taxifare = str(Path(sys.executable).parent / "taxifare")

    ingested = run_measured(
        [taxifare, "ingest", str(source), "--local-root", str(here / "root"), "--no-progress", "--json"],
        here / "logs",
        "ingest",
    )
    result = json.loads(ingested.pop("stdout"))
    ingest_rows = result["train"]["rows"] + result["valid"]["rows"]
    validated = run_measured(
        [taxifare, "validate", "--dataset", result["dataset_uri"], "--out", str(here / "validate")]
        + ["--smoke-steps", "0", "--json"],
        here / "logs",
        "validate",
    )
    checked = json.loads(validated.pop("stdout"))
    validate_rows = checked["train"]["rows"] + checked["valid"]["rows"]
    log.info(
        "%d rows: ingest %.1f s, %.0f MB; validate %.1f s, %.0f MB",
        rows,
        ingested["wall_s"],
        ingested["peak_rss_mb"],
        validated["wall_s"],
        validated["peak_rss_mb"],
    )
    return {
        "rows": rows,
        "source_bytes": source.stat().st_size,
        "bytes_per_row": round(source.stat().st_size / rows, 2),
        "write_s": round(write_s, 2),
        "split_rows": {name: result[name]["rows"] for name in ("train", "valid")},
        "ingest": {**_figures(ingested, ingest_rows, cores), "reported_s": result.get("seconds")},
        "validate": {
            **_figures(validated, validate_rows, cores),
            "clean": checked["train"]["clean"] + checked["valid"]["clean"],
            "quarantined": checked["train"]["quarantined"] + checked["valid"]["quarantined"],
        },
        "train_files": _split_files(result["train"]),
        "valid_files": _split_files(result["valid"]),
    }


def measure_training(work: Path, size: dict, mode: str, train_steps: int) -> dict:
    """`python -m trainer.task` on one size's ingested files, `mode` cached or streaming."""
    out_dir = work / f"train-{size['rows']}-{mode}"
    limit = sys.maxsize if mode == "cached" else 0
    argv = [sys.executable, "-c", _TRAINER_WITH_CACHE_LIMIT, str(limit)]
    argv += ["--train_data_paths", ",".join(size["train_files"]), "--eval_data_paths", ",".join(size["valid_files"])]
    argv += ["--output_dir", str(out_dir), "--train_steps", str(train_steps)]
    measured = run_measured(argv, work / "logs", f"train-{size['rows']}-{mode}")
    metrics = json.loads((out_dir / "eval_metrics.json").read_text())
    examples = metrics["steps"] * metrics["batch_size"]
    log.info("train %s: %.1f s, %.0f MB", mode, measured["wall_s"], measured["peak_rss_mb"])
    return {
        "mode": mode,
        "rows": size["rows"],
        "train_rows": metrics["train_rows_read"],
        "steps": metrics["steps"],
        "batch_size": metrics["batch_size"],
        "wall_s": measured["wall_s"],
        "cpu_s": measured["cpu_s"],
        "train_seconds": metrics["train_seconds"],
        "examples_per_s": round(examples / metrics["train_seconds"]),
        "peak_rss_mb": measured["peak_rss_mb"],
        "max_process_rss_mb": measured["max_process_rss_mb"],
        "load_average_1min": measured["load_average_1min"],
        "rmse": metrics.get("rmse"),
    }


def check_targets(sizes: list[dict]) -> list[dict]:
    """The issue's targets, on the largest size measured (they are set for ``TARGET_ROWS``)."""
    small, large = sizes[0], sizes[-1]
    checks = [
        ("validate", "speed", "validate rows/s", large["validate"]["rows_per_s"], TARGET_VALIDATE_ROWS_S, "≥"),
        ("ingest", "speed", "ingest rows/s", large["ingest"]["rows_per_s"], TARGET_INGEST_ROWS_S, "≥"),
    ]
    for step in ("ingest", "validate"):
        ratio = large[step]["peak_rss_mb"] / small[step]["peak_rss_mb"]
        what = f"{step} peak RSS, {large['rows']:,} rows ÷ {small['rows']:,} rows"
        checks.append((step, "memory", what, ratio, TARGET_RSS_RATIO, "≤"))
    return [
        {
            "step": step,
            "kind": kind,
            "what": what,
            "rows": large["rows"],
            "value": round(value, 3) if isinstance(value, float) else value,
            "target": target,
            "op": op,
            "passed": value >= target if op == "≥" else value <= target,
            "at_target_size": large["rows"] >= TARGET_ROWS,
        }
        for step, kind, what, value, target, op in checks
    ]


def _assumed(name: str):
    return ASSUMPTIONS[name]["value"]


def _step_rate(step: dict, cores: int) -> float:
    """Rows/s of a step on `cores` cores that it keeps busy, from its measured CPU-seconds per row."""
    return step["rows_per_cpu_s"] * cores


def _rss_at(small: dict, large: dict, rows: int) -> float:
    """Peak RSS at `rows`: the largest size's when memory stayed flat (within ``TARGET_RSS_RATIO`` of the
    smallest size's), else extrapolated linearly through the smallest and largest sizes."""
    if large["peak_rss_mb"] <= TARGET_RSS_RATIO * small["peak_rss_mb"]:
        return large["peak_rss_mb"]
    slope = (large["peak_rss_mb"] - small["peak_rss_mb"]) / (large["rows"] - small["rows"])
    return large["peak_rss_mb"] + slope * (rows - large["rows"])


def project(sizes: list[dict], training: list[dict], rows_list: tuple[int, ...] = PROJECTED_ROWS) -> list[dict]:
    """Projected time (and memory or cost) of ingest and validate at each of `rows_list` rows: locally
    as measured, on Vertex AI machines, and in BigQuery; linear in rows from the largest size's rates."""
    small, large = sizes[0], sizes[-1]
    ingest, validate = large["ingest"], large["validate"]
    streaming = next((t for t in training if t["mode"] == "streaming"), None)
    bytes_per_row = large["bytes_per_row"]
    bq_bytes_s = _assumed("bigquery_slots") * _assumed("bigquery_mib_s_per_slot") * 2**20
    out = []
    for rows in rows_list:
        out.append(
            {
                "rows": rows,
                "where": f"local task ({ingest['cores']} cores, wall time as measured)",
                "ingest_s": rows / ingest["rows_per_s"],
                "validate_s": rows / validate["rows_per_s"],
                "train_pass_s": rows / streaming["examples_per_s"] if streaming else None,
                "ingest_peak_rss_mb": _rss_at(small["ingest"], ingest, rows),
                "validate_peak_rss_mb": _rss_at(small["validate"], validate, rows),
            }
        )
        machines = [("local task", ingest["cores"])]
        machines += [(f"Vertex task, {machine_type}", vcpus) for machine_type, vcpus in _assumed("vertex_machines")]
        for where, vcpus in machines:
            out.append(
                {
                    "rows": rows,
                    "where": f"{where} ({vcpus} cores kept busy)",
                    "ingest_s": rows / _step_rate(ingest, vcpus),
                    "validate_s": rows / _step_rate(validate, vcpus),
                }
            )
        workers = _assumed("vertex_workers")
        machine_type, vcpus = _assumed("vertex_machines")[-1]
        out.append(
            {
                "rows": rows,
                "where": f"Vertex, validation sharded over {workers} × {machine_type}",
                "ingest_s": None,
                "validate_s": rows / (workers * _step_rate(validate, vcpus)),
            }
        )
        scanned = _assumed("bigquery_scans") * rows * bytes_per_row
        out.append(
            {
                "rows": rows,
                "where": "BigQuery (no row through a task)",
                "ingest_s": None,
                "validate_s": scanned / bq_bytes_s + _assumed("bigquery_scans") * _assumed("bigquery_job_s"),
                "bytes_scanned": scanned,
                "cost_usd": scanned / 2**40 * _assumed("bigquery_usd_per_tib"),
            }
        )
    for p in out:
        for key, value in p.items():
            if isinstance(value, float):
                p[key] = round(value, 2)
    return out


def bench_scale(
    work: Path,
    out: Path | None = None,
    sizes: tuple[int, ...] = SIZES,
    train_steps: int | None = TRAIN_STEPS,
    projected_rows: tuple[int, ...] = PROJECTED_ROWS,
) -> dict:
    """Measure every size in `sizes` (ascending), train at the largest (cached and streaming; no training
    when `train_steps` is None), check the targets and project to `projected_rows`. Writes scale.json and
    scale.md to `out` when given; returns the figures."""
    sizes = tuple(sorted(sizes))
    loadavg_before = load_average()
    code = code_state()  # before measuring: the steps' code may change while this runs
    started = time.perf_counter()
    work = Path(work) / "scale"
    measured = [measure_size(work, rows) for rows in sizes]
    training = []
    if train_steps:
        training = [measure_training(work, measured[-1], mode, train_steps) for mode in ("cached", "streaming")]
    report = {
        "layout": LAYOUT,
        "block_rows": BLOCK_ROWS,
        "sizes": [{k: v for k, v in s.items() if k not in ("train_files", "valid_files")} for s in measured],
        "training": training,
        "train_steps": train_steps,
        "targets": check_targets(measured),
        "projection": project(measured, training, projected_rows),
        "assumptions": ASSUMPTIONS,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(loadavg_before),
        "code": code,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "scale.md").write_text(markdown(report))
    return report


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    """Seconds as a reader takes them in: s below two minutes, then min, then h."""
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{number(seconds, 1)} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _verdict(check: dict) -> str:
    return "pass" if check["passed"] else "**FAIL**"


def _rows_label(rows: int) -> str:
    exponent = len(str(rows)) - 1
    return f"10^{exponent}" if rows == 10**exponent else f"{rows:,}"


def report_details(report: dict) -> list[str]:
    """Every size, the training runs, the targets and the projection, for report.md and scale.md."""
    lines = [
        "## Scale",
        "",
        f"Synthetic {report['layout']} trips; each command in its own process on "
        f"{report['machine']['cpus']} CPUs. RSS: the process tree's peak (summed, sampled every "
        f"{RSS_SAMPLE_S * 1000:.0f} ms). Commit {report['code']['git_commit']}, files changed since: "
        f"{', '.join(report['code']['changed_files'] or []) or 'none'}.",
        "",
        "| rows | file MB | ingest s | ingest rows/s | ingest RSS MB | ingest cores busy | validate s "
        "| validate rows/s | validate RSS MB | validate cores busy | load average |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["sizes"]:
        i, v = s["ingest"], s["validate"]
        lines.append(
            f"| {_rows_label(s['rows'])} | {s['source_bytes'] / 1e6:,.0f} | {number(i['wall_s'], 1)} "
            f"| {number(i['rows_per_s'])} | {number(i['peak_rss_mb'], 0)} | {number(i['cores_used'], 2)} "
            f"| {number(v['wall_s'], 1)} | {number(v['rows_per_s'])} | {number(v['peak_rss_mb'], 0)} "
            f"| {number(v['cores_used'], 2)} | {i['load_average_1min']} / {v['load_average_1min']} |"
        )
    if report["training"]:
        lines += [
            "",
            f"Training, `python -m trainer.task --train_steps {report['train_steps']}` on the largest size's "
            "ingested files:",
            "",
            "| input | train rows | wall s | in `model.fit` s | outside it s | CPU s | examples/s | peak RSS MB "
            "| load average |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t in report["training"]:
            lines.append(
                f"| {t['mode']} | {number(t['train_rows'])} | {number(t['wall_s'], 1)} "
                f"| {number(t['train_seconds'], 1)} | {number(t['wall_s'] - t['train_seconds'], 1)} | {number(t['cpu_s'], 1)} "
                f"| {number(t['examples_per_s'])} | {number(t['peak_rss_mb'], 0)} | {t['load_average_1min']} |"
            )
        lines += [
            "",
            "Examples/s: steps × batch size ÷ the trainer's `train_seconds` (`model.fit`, with its evaluation at "
            "the end). Outside it: the trainer's pre-scan of the files, the final evaluation and the export.",
        ]
    lines += ["", "Targets:", ""]
    for c in report["targets"]:
        size = "" if c["at_target_size"] else f" (measured at {c['rows']:,} rows, not {TARGET_ROWS:,})"
        lines.append(
            f"- {c['what']}: {number(c['value'])} (target {c['op']} {number(c['target'])}){size} — {_verdict(c)}"
        )
    lines += [
        "",
        f"### Projection (linear from {report['sizes'][-1]['rows']:,} rows)",
        "",
        "| rows | where | ingest | validate | memory / cost |",
        "|---:|---|---:|---:|---|",
    ]
    for p in report["projection"]:
        if "cost_usd" in p:
            extra = f"{p['bytes_scanned'] / 2**40:,.2f} TiB scanned, ${p['cost_usd']:,.2f} (assumption)"
        elif "ingest_peak_rss_mb" in p:
            extra = f"RSS ingest {p['ingest_peak_rss_mb']:,.0f} MB, validate {p['validate_peak_rss_mb']:,.0f} MB"
            if p.get("train_pass_s"):
                extra += f"; one streaming training pass {duration(p['train_pass_s'])}"
        else:
            extra = "—"
        lines.append(
            f"| {_rows_label(p['rows'])} | {p['where']} | {duration(p['ingest_s'])} | {duration(p['validate_s'])} "
            f"| {extra} |"
        )
    lines += ["", "Assumptions (not measured here):", ""]
    lines += [f"- `{name}` = {a['value']}: {a['note']}" for name, a in report["assumptions"].items()]
    lines += [
        f"- peak RSS stays at the largest size's when it grew less than {TARGET_RSS_RATIO}× over the sizes "
        "measured, else grows linearly in rows",
    ]
    return lines


def markdown(report: dict) -> str:
    return "\n".join(["# Scale benchmark", "", *report_details(report)[2:], ""])


def report_rows(report: dict) -> list[Row]:
    """The summary-table rows of `taxifare bench`: ingest and validate at the largest size against their
    targets, memory growth, and training cached against streaming."""
    large, small = report["sizes"][-1], report["sizes"][0]
    checks = {(c["step"], c["kind"]): c for c in report["targets"]}
    label = _rows_label(large["rows"])
    rows = []
    for step in ("ingest", "validate"):
        s, speed, memory = large[step], checks[step, "speed"], checks[step, "memory"]
        rows.append(
            Row(
                f"{step.capitalize()} at {label} rows (`taxifare {step}`)",
                f"{number(s['rows_per_s'])} rows/s, {number(s['wall_s'], 1)} s, peak RSS {number(s['peak_rss_mb'], 0)} MB",
                f"target ≥ {number(speed['target'])} rows/s; RSS ≤ {TARGET_RSS_RATIO}× {_rows_label(small['rows'])} rows "
                f"({number(small[step]['peak_rss_mb'], 0)} MB)",
                f"{_verdict(speed)}; RSS **{memory['value']:.2f}×** {_verdict(memory)}",
            )
        )
    if report["training"]:
        by_mode = {t["mode"]: t for t in report["training"]}
        cached, streaming = by_mode["cached"], by_mode["streaming"]
        rows.append(
            Row(
                f"Training at {label} rows ({report['train_steps']} steps)",
                f"streaming {number(streaming['examples_per_s'])} examples/s, "
                f"peak RSS {number(streaming['peak_rss_mb'], 0)} MB",
                f"cached {number(cached['examples_per_s'])} examples/s, peak RSS {number(cached['peak_rss_mb'], 0)} MB",
                f"RSS **{streaming['peak_rss_mb'] / cached['peak_rss_mb']:.2f}×** cached",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/bench", help="where scale.json and scale.md go")
    parser.add_argument(
        "--sizes", default=",".join(str(s) for s in SIZES), help="comma-separated row counts (ascending)"
    )
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS, help="0: no training runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sizes = tuple(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="taxifare-bench-scale-") as work:
        report = bench_scale(Path(work), Path(args.out), sizes=sizes, train_steps=args.train_steps or None)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
