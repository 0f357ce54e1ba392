"""taxifare bench: one run writes report.md/report.json with each section's figures side by side."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pipelines.bench import ingest as ingest_bench
from pipelines.bench.all import render_table, run_all
from pipelines.cli import app
from tests import reliability


def test_quick_ingest_and_collected_reliability_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("TAXIFARE_RELIABILITY_OUT", str(tmp_path / "reliability"))
    reliability.record(
        "endpoint_load",
        "8 clients for 60 s",
        passed=False,
        clients=8,
        seconds=60.0,
        requests=1234,
        errors=3,
        rss_after_warmup_mib=600.0,
        rss_at_end_mib=700.0,
        rss_growth=0.1667,
        rss_growth_limit=0.1,
    )
    report = run_all(tmp_path, quick=True, sections=("ingest", "reliability"), reliability="collect")

    assert set(report["sections"]) == {"ingest", "reliability"}
    assert all(s["ok"] for s in report["sections"].values()), report["sections"]
    ingest = report["sections"]["ingest"]["figures"]
    assert ingest["objects_uploaded_on_reingest"] == [0]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["total_seconds"] == report["total_seconds"] > 0
    markdown = (tmp_path / "report.md").read_text()
    table = render_table(report)
    assert table in markdown
    assert "| Ingest (20,000 rows" in table and "| Re-ingest, same data |" in table
    # The table's ingest rows are the ones the ingest module renders from the figures it measured.
    assert table.splitlines()[2:4] == [row.markdown() for row in ingest_bench.report_rows(ingest)]
    # A failed reliability figure shows as a failure with its numbers, not as a pass.
    (row,) = [line for line in table.splitlines() if "8 clients for 60 s" in line]
    assert "1,234 requests, 3 errors" in row and "+16.7%" in row and row.endswith("| **FAIL** |")


def test_unknown_section_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path), "--only", "quality,speed"])
    assert result.exit_code == 2
    assert "unknown sections ['speed']" in result.output
    assert not (tmp_path / "report.md").exists()
