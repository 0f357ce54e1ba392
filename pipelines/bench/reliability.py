"""The reliability suite in `taxifare bench`: run it with pytest, read each test's figures, render them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from pipelines.bench.report import REPO_ROOT, Row

log = logging.getLogger("pipelines.bench.reliability")

EXTRA_TESTS = ("tests/test_setup_gcp.py::test_no_project_level_storage_role_is_ever_granted",)
VERDICTS = {"passed": "pass", "failed": "**FAIL**", "skipped": "skipped"}


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


def read_figures(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def bench_reliability(out: Path, mode: str) -> dict:
    """Run the reliability suite (``-m reliability`` plus the least-privilege setup test) with pytest
    (mode "run") or only collect the figures of its last run ("collect"); each test's figures
    (requests tried, faults injected, rows checked, nothing lost) are read from ``<out>/reliability/*.json``."""
    folder = out / "reliability"
    runs = []
    if mode == "run":
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        env = {**os.environ, "TAXIFARE_RELIABILITY_OUT": str(folder.resolve())}
        for label, selection in (("suite", ["-m", "reliability", "tests"]), ("extra", list(EXTRA_TESTS))):
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
        "figures": read_figures(folder),
    }


def summary(entry: dict) -> str:
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


def report_rows(r: dict) -> list[Row]:
    """The summary-table rows of `taxifare bench`: each test's figures, then the tests that write none."""
    if not r["figures"] and not r["tests"]:
        return [
            Row(
                "Reliability",
                "no figures found: run `make test-reliability` or `taxifare bench --reliability run`",
                "",
                "—",
            )
        ]
    rows = [
        Row(f"Reliability: {entry['title']}", summary(entry), "", "pass" if entry["passed"] else "**FAIL**")
        for entry in r["figures"]
    ]
    for case in r["tests"]:
        if ".test_reliability_" in case["test"]:
            continue  # these tests write their figures, shown above
        short = case["test"].rsplit(".", 1)[-1]
        measured = f"{case.get('message', '') or 'no figures (test outcome only)'} ({case['seconds']:.1f} s)"
        rows.append(Row(f"Reliability: `{short}`", measured, "", VERDICTS[case["outcome"]]))
    return rows


def report_details(r: dict) -> list[str]:
    """The pytest runs and every test's outcome, for report.md."""
    lines = ["## Reliability tests", ""]
    for run in r["pytest_runs"]:
        lines.append(f"- `pytest {run['selection']}`: {run['summary']} ({run['seconds']} s, exit {run['exit_code']})")
    lines += ["", "| test | outcome | seconds |", "|---|---|---|"]
    for case in r["tests"]:
        note = f" — {case['message']}" if case.get("message") else ""
        lines.append(f"| `{case['test']}` | {case['outcome']}{note} | {case['seconds']:.1f} |")
    return lines
