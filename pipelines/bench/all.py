"""Every benchmark in one run: ``taxifare bench --out build/bench [--quick]`` (``make bench``)."""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.bench.report import REPO_ROOT, Row, load_average, machine

log = logging.getLogger("pipelines.bench.all")

# The order the sections run in: one after the other, never in parallel (two cores); quality
# first, because serving reuses the lab model it trains; first_run last, because its compileall over
# the venv may write bytecode that every section after it would profit from.
SECTIONS = ("quality", "cv", "throughput", "serve", "ingest", "scale", "pipeline", "reliability", "first_run")
# Each section's module: it measures the section and renders its rows (report_rows), and the area
# named on the one row of a section that failed (its module may be what failed to import).
MODULES = {
    "quality": ("model", "Model quality"),
    "cv": ("quality", "Model quality by cross-validation"),
    "throughput": ("throughput", "Training throughput"),
    "serve": ("serve", "Serving"),
    "ingest": ("ingest", "Ingest"),
    "scale": ("scale", "Scale"),
    "pipeline": ("overhead", "Local pipeline"),
    "reliability": ("reliability", "Reliability"),
    "first_run": ("first_run", "First run"),
}
TABLE_ORDER = ("quality", "cv", "throughput", "pipeline", "first_run", "serve", "ingest", "scale", "reliability")
# The sections with a report_details section in report.md.
DETAILS_ORDER = ("reliability", "pipeline", "first_run", "quality", "cv", "scale")
# The first-run section adds a whole `taxifare run` and a trainer run; cv (~220 s: 2 × 5 folds of
# ours and a LightGBM search) and scale (~100 s of data steps, two trainer runs on 10^7 rows) ~320 s.
TIME_BUDGET_S = 1500.0
QUICK_TRAIN_STEPS = 200


def _module(name: str):
    # Imported when needed: a report without the model sections renders without loading TensorFlow.
    return importlib.import_module(f"pipelines.bench.{MODULES[name][0]}")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
def bench_throughput(work: Path, quick: bool) -> dict:
    from pipelines.bench import throughput
    from trainer import hparams

    if quick:
        rows, passes, repeats = 100_000, 1.0, 1
    else:
        rows, passes, repeats = 1_000_000, throughput.THROUGHPUT_PASSES, throughput.THROUGHPUT_REPEATS
    return throughput.bench_throughput(
        work, rows=rows, files=4, batch_size=hparams.DEFAULTS["batch_size"], passes=passes, repeats=repeats
    )


def bench_serve(out: Path, quick: bool, shared: dict) -> dict:
    """The serving benchmark on the lab model the quality section trained (when it ran), each
    scenario bounded to 5 s: the fast servers finish their request counts well within it, and the
    naive baseline (~50 ms a request) would otherwise spend 20 s on each scenario and its warm-up."""
    from pipelines.bench import serve as serve_bench

    argv = ["--out", str(out), "--limit-s", "5"]
    if "lab_model_dir" in shared:
        argv += ["--model-dir", str(shared["lab_model_dir"])]
    if quick:
        argv += ["--scale", "0.1", "--train-steps", "50"]
    code = serve_bench.main(argv)
    if code != 0:
        raise RuntimeError(f"serving benchmark exited with code {code}")
    return json.loads((out / "serve.json").read_text())


def bench_ingest(out: Path, quick: bool) -> dict:
    from pipelines.bench import ingest as ingest_bench

    argv = ["--out", str(out)] + (["--rows", "20000", "--repeats", "1"] if quick else [])
    code = ingest_bench.main(argv)
    if code != 0:
        raise RuntimeError(f"ingest benchmark exited with code {code}")
    return json.loads((out / "ingest.json").read_text())


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def _timed(name: str, func: Callable[[], dict]) -> dict:
    started = time.monotonic()
    try:
        figures = func()
        entry = {"ok": True, "figures": figures}
    except Exception as exc:  # noqa: BLE001 — one broken area must not hide the others' figures
        log.error("section %s failed: %s", name, exc)
        entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    entry["seconds"] = round(time.monotonic() - started, 1)
    log.info("section %s: %.1f s", name, entry["seconds"])
    return entry


def run_all(
    out: str | Path, *, quick: bool = False, sections: tuple[str, ...] = SECTIONS, reliability: str = "run"
) -> dict:
    """Run the selected sections; write report.json and report.md to `out` (each area also writes its
    own ``<area>.json``); return the report. A section that fails is reported as failed, with its error."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown bench sections {unknown}; expected some of {', '.join(SECTIONS)}")
    if reliability not in ("run", "collect"):
        raise ValueError(f"reliability={reliability!r}: expected run or collect")
    loadavg_before = load_average()
    started = time.monotonic()
    report: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "taxifare bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "run_all",
        "quick": quick,
        "git_commit": _git_commit(),
        "sections": {},
    }
    shared: dict[str, Any] = {}  # what one section leaves for another (the trained lab model)
    quick_steps = QUICK_TRAIN_STEPS if quick else None
    with tempfile.TemporaryDirectory(prefix="taxifare-bench-") as tmp:
        work = Path(tmp)
        plan = {
            "quality": lambda: _module("quality").bench_section(work, quick_steps, shared),
            # 5-fold CV over the course's train+valid rows: ours vs LightGBM tuned in the same run
            # (inner split of the training folds only) vs the distance rule, both layouts.
            "cv": lambda: _module("cv").bench_section(work / "cv", quick),
            "throughput": lambda: bench_throughput(work, quick),
            "serve": lambda: bench_serve(out, quick, shared),
            "ingest": lambda: bench_ingest(out, quick),
            # 10^5, 10^6, 10^7 rows through ingest and validate, the trainer cached and streaming
            # at the largest size, and the projection to 10^8 / 10^9 rows; quick: up to 10^6.
            "scale": lambda: _module("scale").bench_scale(
                work / "scale",
                out,
                sizes=_module("scale").QUICK_SIZES if quick else _module("scale").SIZES,
                train_steps=quick_steps or _module("scale").TRAIN_STEPS,
            ),
            "pipeline": lambda: _module("pipeline").bench_local_run(
                work / "pipeline", {"train_steps": quick_steps} if quick else {}
            ),
            "reliability": lambda: _module("reliability").bench_reliability(out, reliability),
            # `taxifare run --no-cache` as a subprocess, the trainer on its rows, import tensorflow
            # before/after compileall; quick: -p train_steps=200 for the run and the trainer.
            "first_run": lambda: _module("first_run").bench_first_run(
                work / "first_run", {"train_steps": quick_steps} if quick else {}, out
            ),
        }
        for name in SECTIONS:
            if name in sections:
                report["sections"][name] = _timed(name, plan[name])
                _write(out, report, started, loadavg_before)  # a partial report survives a crash
    return _write(out, report, started, loadavg_before)


def _write(out: Path, report: dict, started: float, loadavg_before: list[float]) -> dict:
    report["total_seconds"] = round(time.monotonic() - started, 1)
    report["within_budget"] = report["total_seconds"] <= TIME_BUDGET_S
    report["machine"] = machine(loadavg_before)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


# --------------------------------------------------------------------------------------------
# The report, from the rows and details each section's module renders
# --------------------------------------------------------------------------------------------
def _figures(report: dict, name: str) -> dict | None:
    section = report["sections"].get(name)
    return section["figures"] if section and section.get("ok") else None


def _rows(report: dict, name: str) -> list[Row]:
    section = report["sections"].get(name)
    if section is None:
        return []
    if not section.get("ok"):
        return [Row(MODULES[name][1], "**failed**", section["error"][:160])]
    return _module(name).report_rows(section["figures"]) if section["figures"] else []


def render_table(report: dict) -> str:
    """The summary table (Markdown) — what README.md shows."""
    lines = [
        "| area | measured | compared with | ratio / verdict |",
        "|---|---|---|---|",
        *(row.markdown() for name in TABLE_ORDER for row in _rows(report, name)),
    ]
    m = report.get("machine", {})
    lines += [
        "",
        f"`taxifare bench` {'--quick ' if report.get('quick') else ''}on {m.get('cpus')} CPUs "
        f"(load average {m.get('loadavg_before')} → {m.get('loadavg_after')}), commit {report.get('git_commit')}, "
        f"{report.get('measured_at')}: all sections in **{report.get('total_seconds', 0):.0f} s** "
        f"(budget {TIME_BUDGET_S:.0f} s).",
    ]
    return "\n".join(lines) + "\n"


def render_markdown(report: dict) -> str:
    lines = ["# Benchmark report", "", render_table(report), "## Sections", ""]
    lines += ["| section | seconds | status |", "|---|---|---|"]
    for name, section in report["sections"].items():
        status = "ok" if section.get("ok") else f"failed: {section.get('error', '')[:200]}"
        lines.append(f"| {name} | {section['seconds']} | {status} |")
    for name in DETAILS_ORDER:
        figures = _figures(report, name)
        if figures:
            lines += ["", *_module(name).report_details(figures)]
    lines += ["", "Each area's own report: `model.md`, `serve.md`, `ingest.md`; figures in `report.json`.", ""]
    return "\n".join(lines)
