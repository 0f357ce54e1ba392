"""Every benchmark in one run: ``taxifare bench --out build/bench [--quick]`` (``make bench``).

In one process, one after the other (never in parallel: two cores):

1. model quality — the trainer with its defaults on the course files (``../shared/data/lab`` and
   ``dated``; synthetic files when absent) next to the training mean, the distance rule and
   gradient-boosted trees fit in the same run on the same rows (``pipelines.bench.model`` and
   ``pipelines.bench.baselines``);
2. training throughput — streaming CSV vs cached in-memory tensors, same model (ratio);
3. serving — p50/p99 and throughput vs the in-process signature call and the naive server
   (``pipelines.bench.serve``);
4. ingest — vs a plain google-cloud-storage upload of the same bytes, and re-ingest
   (``pipelines.bench.ingest``);
5. local pipeline — the default ``make run`` (``run_local`` with default parameters in a fresh
   work dir): total wall time, per-step time and orchestration overhead; then the same again,
   answered from the cache;
6. reliability — the ``reliability`` test suite (plus the least-privilege setup test) run with
   pytest; each test's figures (requests tried, faults injected, rows checked, nothing lost) are
   read from ``<out>/reliability/*.json``.

Writes ``report.json`` and ``report.md`` to ``--out`` (plus each area's own ``<area>.json``).
A section that fails is reported as failed (with its error) and the command exits non-zero.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("pipelines.bench.all")

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("quality", "throughput", "serve", "ingest", "pipeline", "reliability")
TIME_BUDGET_S = 600.0
QUICK_TRAIN_STEPS = 200
PIPELINE_TARGET_S = 60.0
STEP_OVERHEAD_TARGET_S = 0.5
EXTRA_RELIABILITY_TESTS = ("tests/test_setup_gcp.py::test_no_project_level_storage_role_is_ever_granted",)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
def _course_files(layout: str, work: Path) -> tuple[Path, Path, str]:
    from pipelines.bench import model as model_bench
    from trainer import synth

    shared = model_bench.course_data_dir()
    if shared is not None:
        return (
            shared / layout / "taxi-train.csv",
            shared / layout / "taxi-valid.csv",
            f"course data ({shared / layout})",
        )
    # The same synthetic files pipelines.bench.model writes when the course data is absent.
    train = synth.write_csv(work / f"{layout}-train.csv", 8000, layout=layout, seed=1)
    valid = synth.write_csv(work / f"{layout}-valid.csv", 1600, layout=layout, seed=2)
    return train, valid, "synthetic (course data not found)"


def bench_quality(work: Path, quick: bool, shared: dict) -> dict:
    from pipelines.bench import baselines
    from pipelines.bench import model as model_bench
    from trainer import model

    results = {}
    for layout in ("lab", "dated"):
        train, valid, source = _course_files(layout, work)
        if quick:
            started = time.monotonic()
            metrics = model.train_and_evaluate(
                str(train), str(valid), work / f"quick-{layout}", train_steps=QUICK_TRAIN_STEPS
            )
            ours = {
                "layout": layout,
                "data": source,
                "rmse": round(metrics["rmse"], 4),
                "rmse_plausible": round(metrics["rmse_plausible"], 4),
                "eval_rows": metrics["eval_rows"],
                "steps": metrics["steps"],
                "run_seconds": round(time.monotonic() - started, 2),
                "target_rmse": model_bench.TARGET_RMSE[layout],
                "quick": True,
            }
        else:
            ours = model_bench.bench_quality(layout, work)
        # Where pipelines.bench.model trains (work/train-<layout>): the serving section reuses the lab model.
        trained = work / (f"quick-{layout}" if quick else f"train-{layout}")
        if (trained / "export" / "exporter").is_dir():
            shared[f"{layout}_model_dir"] = trained
        references = baselines.fit_and_score(train, valid, layout)
        results[layout] = {"model": ours, "references": references, "data": source}
    return results


def bench_throughput(work: Path, quick: bool) -> dict:
    from pipelines.bench import model as model_bench
    from trainer import model

    if quick:
        rows, passes, repeats = 100_000, 1.0, 1
    else:
        rows, passes, repeats = 1_000_000, model_bench.THROUGHPUT_PASSES, model_bench.THROUGHPUT_REPEATS
    return model_bench.bench_throughput(
        work, rows=rows, files=4, batch_size=model.DEFAULT_BATCH_SIZE, passes=passes, repeats=repeats
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


def bench_pipeline(work: Path, quick: bool) -> dict:
    """The default local run in a fresh work dir, then the same run again (cached)."""
    from pipelines.bench import overhead
    from pipelines.local.run import run_local

    params = {"train_steps": QUICK_TRAIN_STEPS} if quick else {}
    workdir = work / "pipeline"
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
        "orchestration_overhead_per_task_s": overhead.measure()["per_task_s"],
        "max_step_overhead_s": round(max(overheads), 3) if overheads else None,
        "mean_step_overhead_s": round(sum(overheads) / len(overheads), 3) if overheads else None,
        "cached_steps_on_rerun": [n for n, s in runs["cached"]["steps"].items() if s["cached"]],
        "target_wall_s": PIPELINE_TARGET_S,
        "target_step_overhead_s": STEP_OVERHEAD_TARGET_S,
    }


def _junit_cases(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
                message = (child.get("message") or "").splitlines()
                cases.append(
                    {
                        "test": f"{case.get('classname')}::{case.get('name')}",
                        "outcome": outcome,
                        "seconds": float(case.get("time") or 0),
                        "message": (message[0] if message else "")[:300],
                    }
                )
                break
            if child.tag == "skipped":
                outcome = "skipped"
        if outcome != "failed":
            cases.append(
                {
                    "test": f"{case.get('classname')}::{case.get('name')}",
                    "outcome": outcome,
                    "seconds": float(case.get("time") or 0),
                }
            )
    return cases


def read_reliability_figures(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def bench_reliability(out: Path, mode: str) -> dict:
    """Run the reliability suite (mode "run") or only collect the figures of its last run ("collect")."""
    folder = out / "reliability"
    runs = []
    if mode == "run":
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        env = {**os.environ, "TAXIFARE_RELIABILITY_OUT": str(folder.resolve())}
        for label, selection in (("suite", ["-m", "reliability", "tests"]), ("extra", list(EXTRA_RELIABILITY_TESTS))):
            junit = folder / f"junit-{label}.xml"
            command = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "addopts=",
                f"--junitxml={junit}",
                *selection,
            ]
            started = time.monotonic()
            done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
            tail = [line for line in done.stdout.strip().splitlines() if line.strip()][-1:]
            runs.append(
                {
                    "selection": " ".join(selection),
                    "exit_code": done.returncode,
                    "seconds": round(time.monotonic() - started, 1),
                    "summary": tail[0] if tail else "",
                }
            )
            log.info("pytest %s: %s", " ".join(selection), runs[-1]["summary"])
    cases = [c for p in sorted(folder.glob("junit-*.xml")) for c in _junit_cases(p)]
    return {
        "mode": mode,
        "pytest_runs": runs,
        "tests": cases,
        "figures": read_reliability_figures(folder),
    }


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
    """Run the selected sections; write report.json and report.md to `out`; return the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown bench sections {unknown}; expected some of {', '.join(SECTIONS)}")
    if reliability not in ("run", "collect"):
        raise ValueError(f"reliability={reliability!r}: expected run or collect")
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    report: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "taxifare bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "run_all",
        "quick": quick,
        "git_commit": _git_commit(),
        "sections": {},
    }
    shared: dict[str, Any] = {}  # what one section leaves for another (the trained lab model)
    with tempfile.TemporaryDirectory(prefix="taxifare-bench-") as tmp:
        work = Path(tmp)
        plan = {
            "quality": lambda: bench_quality(work, quick, shared),
            "throughput": lambda: bench_throughput(work, quick),
            "serve": lambda: bench_serve(out, quick, shared),
            "ingest": lambda: bench_ingest(out, quick),
            "pipeline": lambda: bench_pipeline(work, quick),
            "reliability": lambda: bench_reliability(out, reliability),
        }
        for name in SECTIONS:
            if name in sections:
                report["sections"][name] = _timed(name, plan[name])
                _write(out, report, started, loadavg_before)  # a partial report survives a crash
    return _write(out, report, started, loadavg_before)


def _write(out: Path, report: dict, started: float, loadavg_before: list[float]) -> dict:
    report["total_seconds"] = round(time.monotonic() - started, 1)
    report["within_budget"] = report["total_seconds"] <= TIME_BUDGET_S
    report["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": loadavg_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
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
# Rendering
# --------------------------------------------------------------------------------------------
def _f(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (int,)) or (isinstance(value, float) and abs(value) >= 1000):
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _figures(report: dict, name: str) -> dict | None:
    section = report["sections"].get(name)
    return section["figures"] if section and section.get("ok") else None


def _failed_row(report: dict, name: str, area: str) -> list[str]:
    section = report["sections"].get(name)
    if section and not section.get("ok"):
        return [f"| {area} | **failed** | {section['error'][:160]} | |"]
    return []


def _quality_rows(report: dict) -> list[str]:
    quality = _figures(report, "quality")
    if not quality:
        return _failed_row(report, "quality", "Model quality")
    rows = []
    for layout, entry in quality.items():
        ours, refs = entry["model"], entry["references"]
        rmse = refs["rmse"]
        gbt = rmse["gradient-boosted trees"]
        quick = " (quick)" if ours.get("quick") else ""
        rows.append(
            f"| Model quality, {layout} | validation RMSE{quick}, all {ours['eval_rows']:,} rows: "
            f"**{_f(ours['rmse'], 3)}** (target ≤ {ours['target_rmse']}) "
            f"| training mean {_f(rmse['training mean'], 3)} · distance rule {_f(rmse['distance rule'], 3)} · "
            f"GBT {_f(gbt, 3)} (same run) | ours / GBT **{ours['rmse'] / gbt:.2f}×** |"
        )
    return rows


def _throughput_rows(report: dict) -> list[str]:
    t = _figures(report, "throughput")
    if not t:
        return _failed_row(report, "throughput", "Training throughput")
    return [
        f"| Training throughput | streaming CSV {_f(t['streaming_examples_per_s'])} examples/s "
        f"({t['rows']:,} rows) | cached in-memory tensors {_f(t['in_memory_examples_per_s'])} examples/s "
        f"| **{t['ratio']:.2f}×** (target ≥ {t['target_ratio']}) |"
    ]


def _pipeline_rows(report: dict) -> list[str]:
    p = _figures(report, "pipeline")
    if not p:
        return _failed_row(report, "pipeline", "Local pipeline")
    first, cached = p["runs"]["first"], p["runs"]["cached"]
    steps = " · ".join(
        f"{n} {_f(s['wall_s'], 1)} s ({_f(s['overhead_s'], 2)})"
        for n, s in first["steps"].items()
        if s["wall_s"] is not None
    )
    return [
        f"| Local pipeline (`make run`) | default run **{_f(first['wall_s'], 1)} s** wall (target ≤ {p['target_wall_s']:.0f} s) "
        f"| cached re-run {_f(cached['wall_s'], 1)} s ({len(p['cached_steps_on_rerun'])} steps from cache) "
        f"| re-run takes **{cached['wall_s'] / first['wall_s']:.2f}×** the first |",
        f"| Local pipeline, per step | wall s (wall − time in the step function, i.e. Python/TF start and exit + "
        f"orchestration): {steps} | kfp.local orchestration per task (6 no-op tasks): "
        f"**{_f(p.get('orchestration_overhead_per_task_s'), 3)} s** (target ≤ {p['target_step_overhead_s']}) | |",
    ]


def _serve_rows(report: dict) -> list[str]:
    s = _figures(report, "serve")
    if not s:
        return _failed_row(report, "serve", "Serving")
    mode = s["verdict"]["mode"]
    best, ip = s["servers"][mode], s["in_process"]
    rows = [
        f"| Serving, 1 instance | p50 **{_f(best['single']['p50_ms'], 3)} ms**, p99 {_f(best['single']['p99_ms'], 3)} ms "
        f"| in-process signature call p50 {_f(ip['signature_call_p50_ms'], 3)} ms "
        f"| **{best['single']['p50_ms'] / ip['signature_call_p50_ms']:.1f}×** the signature call |",
        f"| Serving, 8 clients | p99 {_f(best['concurrent_single']['p99_ms'], 2)} ms (1 instance); "
        f"**{_f(best['throughput_100']['instances_per_s'])} instances/s** (100-instance requests) "
        f"| targets: p99 ≤ {s['verdict']['targets']['concurrent_p99_ms']:.0f} ms, "
        f"≥ {s['verdict']['targets']['throughput_instances_per_s']:,.0f} instances/s "
        f"| {'both met' if s['verdict']['met']['concurrent_p99_ms'] and s['verdict']['met']['throughput_instances_per_s'] else '**not met**'} |",
    ]
    naive = s["servers"].get("naive")
    if naive:
        rows.append(
            f"| Serving vs naive server | naive (`model.predict` per request): p50 {_f(naive['single']['p50_ms'], 2)} ms, "
            f"{naive['throughput_100']['instances_per_s']:,.0f} instances/s "
            f"| ours {_f(best['single']['p50_ms'], 3)} ms, {_f(best['throughput_100']['instances_per_s'])} instances/s "
            f"| p50 **{naive['single']['p50_ms'] / best['single']['p50_ms']:.0f}×** lower, throughput "
            f"**{best['throughput_100']['instances_per_s'] / naive['throughput_100']['instances_per_s']:.0f}×** higher |"
        )
    return rows


def _ingest_rows(report: dict) -> list[str]:
    i = _figures(report, "ingest")
    if not i:
        return _failed_row(report, "ingest", "Ingest")
    thr, ratio = i["throughput_mib_s"], i["time_ratio_to_plain"]
    return [
        f"| Ingest ({i['rows']:,} rows, {i['upload_bytes'] / 2**20:.1f} MiB) | end to end {_f(thr['ingest'], 1)} MiB/s; "
        f"upload with crc32c verify {_f(thr['storage'], 1)} MiB/s | plain `upload_from_filename` {_f(thr['plain'], 1)} MiB/s "
        f"| time **{ratio['ingest']:.2f}×** / {ratio['storage']:.2f}× plain |",
        f"| Re-ingest, same data | {_f(i['median_seconds']['reingest'], 3)} s, objects uploaded "
        f"{sorted(set(i['objects_uploaded_on_reingest']))} | first ingest {_f(i['median_seconds']['ingest'], 3)} s "
        f"| **{i['reingest_vs_ingest']:.2f}×** |",
    ]


def reliability_summary(entry: dict) -> str:
    """One line of what a reliability test tried and found."""
    f = entry["figures"]
    name = entry["name"]
    if name.startswith("data_faults_"):
        return (
            f"{f['fault_kinds']} fault kinds, {f['rows_checked']:,} rows checked, {f['faults_injected']} faults injected, "
            f"{f['quarantined']} quarantined, {f['clean_rows_lost']} clean rows lost"
        )
    if name.startswith("data_ten_percent"):
        return (
            f"{f['rows_checked']:,} rows, {f['faults_injected']:,} faults → {f['quarantined']:,} quarantined, "
            f"{f['clean_rows_in'] - f['clean_rows_out']} clean rows lost; passes at max_bad_fraction "
            f"{f['passes_at']}, fails at {f['fails_below']} and at 0.05"
        )
    if name == "data_whole_file_damage":
        return f"{f['files_tried']} files tried, {f['refused']} refused with a one-line error, {f['objects_written']} objects written"
    if name == "ingest_rerun_and_tamper":
        return (
            f"{f['rows']:,} rows / {f['objects']} objects; re-run uploaded {f['rerun_objects_uploaded']}; "
            f"{f['faults_injected']} one-byte alterations → {f['detections']}/{f['checks']} checksum detections"
        )
    if name == "pipeline_fault_rerun":
        return (
            f"{f['faults_injected']} fault ({f['faulty_step']}: unreachable store); re-run executed "
            f"{', '.join(f['rerun_executed'])}, cached {', '.join(f['rerun_cached'])}; "
            f"{f['objects_lost_or_changed']} objects lost or changed"
        )
    if name == "endpoint_fuzz":
        return (
            f"{f['requests_tried']:,} requests, {f['responses_5xx']} × 5xx, {f['oversize_413']} oversize → 413, "
            f"server alive and healthy after: {f['server_alive_after'] and f['health_after'] == 200}"
        )
    if name == "endpoint_load":
        return (
            f"{f['clients']} clients × {f['seconds']:.0f} s: {f['requests']:,} requests, {f['errors']} errors, "
            f"RSS {f['rss_after_warmup_mib']} → {f['rss_at_end_mib']} MiB ({f['rss_growth']:+.1%}, limit {f['rss_growth_limit']:.0%})"
        )
    if name == "security_bind":
        return "; ".join(f"{k}: {', '.join(v)}" for k, v in f["listening"].items())
    if name == "security_secrets":
        found = f": {'; '.join(f['findings'][:3])}" if f["findings"] else ""
        return f"{f['files_scanned']} tracked files ({f['bytes_scanned'] / 2**20:.1f} MiB), {f['patterns']} patterns, {len(f['findings'])} findings{found}"
    if name == "security_pip_audit":
        if "packages_audited" not in f:
            return "NOT AUDITED — " + "; ".join(f.get("unreachable", []))[:300]
        return (
            f"{f['packages_audited']} packages via {f['service']}: {len(f['vulnerable_with_fix'])} fixable, "
            f"{len(f['vulnerable_without_fix'])} without fix"
        )
    return ", ".join(f"{k}={v}" for k, v in f.items() if isinstance(v, (int, float, str, bool)))[:300]


def _reliability_rows(report: dict) -> list[str]:
    r = _figures(report, "reliability")
    if not r:
        return _failed_row(report, "reliability", "Reliability")
    if not r["figures"] and not r["tests"]:
        return [
            "| Reliability | no figures found: run `make test-reliability` or `taxifare bench --reliability run` | | — |"
        ]
    rows = []
    for entry in r["figures"]:
        verdict = "pass" if entry["passed"] else "**FAIL**"
        rows.append(f"| Reliability: {entry['title']} | {reliability_summary(entry)} | | {verdict} |")
    for case in r["tests"]:
        short = case["test"].rsplit(".", 1)[-1]
        if ".test_reliability_" in case["test"]:
            continue  # these tests write their figures, shown above
        verdict = {"passed": "pass", "failed": "**FAIL**", "skipped": "skipped"}[case["outcome"]]
        rows.append(
            f"| Reliability: `{short}` | {case.get('message', '') or 'no figures (test outcome only)'} ({case['seconds']:.1f} s) | | {verdict} |"
        )
    return rows


def render_table(report: dict) -> str:
    """The summary table (Markdown) — what README.md shows."""
    lines = [
        "| area | measured | compared with | ratio / verdict |",
        "|---|---|---|---|",
        *_quality_rows(report),
        *_throughput_rows(report),
        *_pipeline_rows(report),
        *_serve_rows(report),
        *_ingest_rows(report),
        *_reliability_rows(report),
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
    r = _figures(report, "reliability")
    if r:
        lines += ["", "## Reliability tests", ""]
        for run in r["pytest_runs"]:
            lines.append(
                f"- `pytest {run['selection']}`: {run['summary']} ({run['seconds']} s, exit {run['exit_code']})"
            )
        lines += ["", "| test | outcome | seconds |", "|---|---|---|"]
        for case in r["tests"]:
            note = f" — {case['message']}" if case.get("message") else ""
            lines.append(f"| `{case['test']}` | {case['outcome']}{note} | {case['seconds']:.1f} |")
    p = _figures(report, "pipeline")
    if p:
        lines += [
            "",
            "## Local pipeline steps",
            "",
            "| step | run | wall s | in step s | overhead s | cached |",
            "|---|---|---|---|---|---|",
        ]
        for run_name, run in p["runs"].items():
            for step, t in run["steps"].items():
                lines.append(
                    f"| {step} | {run_name} | {_f(t['wall_s'], 2)} | {_f(t['in_step_s'], 2)} | {_f(t['overhead_s'], 3)} | {t['cached']} |"
                )
    q = _figures(report, "quality")
    if q:
        lines += [
            "",
            "## Model quality detail (validation RMSE)",
            "",
            "| layout | data | ours (all rows) | ours (plausible rows) | mean | distance rule | GBT | GBT (plausible) | train run s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for layout, e in q.items():
            o, r_ = e["model"], e["references"]
            lines.append(
                f"| {layout} | {e['data']} | {_f(o['rmse'], 3)} | {_f(o.get('rmse_plausible'), 3)} | {_f(r_['rmse']['training mean'], 3)} "
                f"| {_f(r_['rmse']['distance rule'], 3)} | {_f(r_['rmse']['gradient-boosted trees'], 3)} "
                f"| {_f(r_['rmse_plausible']['gradient-boosted trees'], 3)} | {_f(o.get('run_seconds'), 1)} |"
            )
    lines += ["", "Each area's own report: `model.md`, `serve.md`, `ingest.md`; figures in `report.json`.", ""]
    return "\n".join(lines)
