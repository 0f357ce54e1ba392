"""The scale section's machinery at tiny sizes: rows counted, memory measured, projection, files written."""

from __future__ import annotations

import json

import pytest

from pipelines.bench import scale
from pipelines.bench.report import Row
from trainer import schema, synth

SIZES = (2_000, 10_000)


def test_trips_beyond_one_block_repeat_it_with_a_key_per_row(tmp_path):
    block = 1_000
    small = scale.write_trips(tmp_path / "small.csv", 700, block=block)
    assert small.read_text() == synth.write_csv(tmp_path / "synth.csv", 700, layout=scale.LAYOUT).read_text()

    lines = scale.write_trips(tmp_path / "big.csv", 2_500, block=block).read_text().splitlines()
    k = schema.get_layout(scale.LAYOUT).columns.index(schema.KEY)
    assert len(lines) == 2_500
    assert [line.split(",")[k] for line in lines] == [str(i) for i in range(2_500)]
    first = synth.write_csv(tmp_path / "block.csv", block, layout=scale.LAYOUT).read_text().splitlines()
    assert lines[:block] == first

    def without_key(line):
        fields = line.split(",")
        return fields[:k] + fields[k + 1 :]

    assert [without_key(line) for line in lines[block : 2 * block]] == [without_key(line) for line in first]


def _check_report(report, out):
    for size, rows in zip(report["sizes"], SIZES, strict=True):
        assert size["rows"] == rows
        for step in ("ingest", "validate"):
            figures = size[step]
            assert figures["rows"] == rows  # what the command reported equals what was generated
            assert figures["peak_rss_mb"] > 0 and figures["max_process_rss_mb"] > 0
            assert figures["wall_s"] > 0 and figures["rows_per_s"] > 0
        assert size["validate"]["clean"] + size["validate"]["quarantined"] == rows
    assert {c["what"].split(" ")[0] for c in report["targets"]} == {"ingest", "validate"}
    assert all(isinstance(c["passed"], bool) and not c["at_target_size"] for c in report["targets"])

    projection = report["projection"]
    for where in {p["where"] for p in projection}:
        line = [p for p in projection if p["where"] == where]
        assert [p["rows"] for p in line] == list(scale.PROJECTED_ROWS)
        for key in ("ingest_s", "validate_s", "cost_usd"):
            values = [p.get(key) for p in line]
            if values[0] is not None:
                assert 0 < values[0] < values[1], (where, key, values)

    saved = json.loads((out / "scale.json").read_text())
    assert saved["sizes"] == report["sizes"] and saved["projection"] == projection
    md = (out / "scale.md").read_text()
    assert md.startswith("# Scale benchmark") and "### Projection" in md and "$" in md
    rows = scale.report_rows(report)
    assert rows and all(isinstance(row, Row) and row.area and row.measured for row in rows)
    assert scale.report_details(report)[0] == "## Scale"
    return rows


def test_data_steps_at_tiny_sizes(tmp_path):
    report = scale.bench_scale(tmp_path / "work", tmp_path / "out", sizes=SIZES, train_steps=None)
    rows = _check_report(report, tmp_path / "out")
    assert report["training"] == [] and len(rows) == 2


@pytest.mark.slow
def test_training_cached_and_streaming_at_a_tiny_size(tmp_path):
    report = scale.bench_scale(tmp_path / "work", tmp_path / "out", sizes=SIZES, train_steps=20)
    rows = _check_report(report, tmp_path / "out")
    by_mode = {t["mode"]: t for t in report["training"]}
    assert set(by_mode) == {"cached", "streaming"} and len(rows) == 3
    for t in by_mode.values():
        assert t["steps"] == 20 and t["examples_per_s"] > 0 and t["peak_rss_mb"] > 0
        assert t["train_rows"] == report["sizes"][-1]["split_rows"]["train"]
