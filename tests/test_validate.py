"""trainer.validate: exact quarantine counts on hand-built dirty files, the bad-share gate, the smoke run."""

from __future__ import annotations

import base64
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from trainer import ingest, schema, storage, synth, validate, validate_result

HEADER = b"fare_amount,pickuplon,pickuplat,dropofflon,dropofflat,passengers,key\n"


def good(key: int) -> bytes:
    return f"{10 + key % 7}.5,-73.98{key % 10},40.75{key % 10},-73.96{key % 10},40.78{key % 10},{1 + key % 5},{key}\n".encode()


# Hand-built dirty file: (line bytes, expected outcome).
DIRTY = [
    (HEADER, "header"),
    *[(good(k), "clean") for k in range(10)],
    (b"nan,-73.98,40.75,-73.97,40.78,1,11\n", schema.REASON_NON_FINITE),
    (b"12.0,abc,40.75,-73.97,40.78,1,12\n", schema.REASON_NOT_A_NUMBER),
    (b"12.0,-73.98,40.75,-73.97,40.78,1,13,extra\n", schema.REASON_COLUMNS),
    (b"12.0,-73.98,40.75,-73.97,40.78,14\n", schema.REASON_COLUMNS),
    (b"\xff\xd8\xff\xe0JFIF\x00garbage\n", schema.REASON_BINARY),
    (b"\x00\x01\x02,\x03\n", schema.REASON_BINARY),
    (b"\n", "blank"),
    (b"fare_amount,foo,bar\n", schema.REASON_BAD_HEADER),
    (b"12.0,-80.0,40.75,-73.97,40.78,1,18\n", schema.REASON_OUTSIDE_NYC),
    (b"0,-73.98,40.75,-73.97,40.78,1,19\n", schema.REASON_FARE),
    (b"12.0,-73.98,40.7", schema.REASON_COLUMNS),  # truncated last line, no newline
]


def _write(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def _quarantine(result) -> list[dict]:
    return [json.loads(line) for line in Path(result.quarantine).read_text().splitlines()]


def test_exact_quarantine_counts_and_nothing_lost(tmp_path):
    train = _write(tmp_path / "train.csv", [line for line, _ in DIRTY])
    valid = _write(tmp_path / "valid.csv", [good(k) for k in range(100, 120)])
    result = validate.validate(train, valid, tmp_path / "out", max_bad_fraction=0.6, smoke_steps=0)

    expected = Counter(outcome for _, outcome in DIRTY)
    rep = result.train
    assert rep.lines == len(DIRTY)
    assert rep.header_lines == expected.pop("header") and rep.blank_lines == expected.pop("blank")
    assert rep.clean == expected.pop("clean") == 10
    assert rep.reasons == dict(expected)
    assert rep.quarantined == 10 and rep.rows == 20
    assert rep.bad_fraction == pytest.approx(10 / 20)
    assert not rep.final_newline
    assert result.valid.clean == 20 and result.valid.quarantined == 0
    assert result.passed and result.bad_by_reason == dict(expected)

    # Clean lines are byte-identical and in order.
    clean_lines = [line for line, outcome in DIRTY if outcome == "clean"]
    assert result.clean_train.read_bytes() == b"".join(clean_lines)
    assert storage.crc32c_of_file(result.clean_train) == rep.clean_crc32c

    # Each quarantined line keeps its number, reason and original bytes.
    entries = _quarantine(result)
    assert len(entries) == 10
    for entry in entries:
        line, outcome = DIRTY[entry["line"] - 1]
        assert entry["reason"] == outcome and entry["split"] == "train" and entry["detail"]
        original = base64.b64decode(entry["raw_base64"]) if entry["text"] is None else entry["text"].encode()
        assert original == line.rstrip(b"\n")
    truncated = next(e for e in entries if e["line"] == len(DIRTY))
    assert "no newline" in truncated["detail"] and truncated["detail"].startswith("3 columns")

    report = Path(result.report_path).read_text()
    assert report == result.report_markdown and "PASSED" in report
    assert "| binary_data | 2 | 0 |" in report and "*(binary)*" in report
    assert json.loads((tmp_path / "out" / "validation.json").read_text())["train"]["quarantined"] == 10


def test_too_many_bad_rows_fails_with_counts_and_quarantine_path(tmp_path, bucket):
    train = _write(tmp_path / "train.csv", [line for line, _ in DIRTY])
    valid = _write(tmp_path / "valid.csv", [good(k) for k in range(20)])
    quarantine_uri = f"gs://{bucket}/runs/1/quarantine.jsonl"
    with pytest.raises(validate_result.ValidationError) as info:
        validate.validate(train, valid, tmp_path / "out", smoke_steps=5, quarantine_uri=quarantine_uri)
    message = str(info.value)
    assert "train: 10 of 20 rows bad (50.0% > max_bad_fraction 5.0%" in message
    for reason, count in [("binary_data", 2), ("wrong_column_count", 3), ("non_finite", 1)]:
        assert f"{reason}={count}" in message
    assert message.endswith(f"quarantined rows: {quarantine_uri}")
    assert "\n" not in message
    result = info.value.result
    assert not result.passed and result.smoke is None  # no smoke run on failed rows
    assert "FAILED" in result.report_markdown and "Not run" in result.report_markdown
    assert len(storage.read_text(quarantine_uri).splitlines()) == 10  # there before the failure


def test_ten_percent_dirty_file_against_the_threshold(tmp_path):
    rng = random.Random(3)
    dirty = [b"x,y\n", b"nan,1,2,3,4,5,6\n", b"\xfe\xff\n", b"1,2,3,4,5,6,7,8,9\n"]
    lines = [good(k) for k in range(900)] + [dirty[i % 4] for i in range(100)]
    rng.shuffle(lines)
    train = _write(tmp_path / "train.csv", lines)
    valid = _write(tmp_path / "valid.csv", [good(k) for k in range(50)])
    with pytest.raises(validate_result.ValidationError, match=r"100 of 1000 rows bad \(10.0% > max_bad_fraction 9.0%"):
        validate.validate(train, valid, tmp_path / "a", max_bad_fraction=0.09, smoke_steps=0)
    result = validate.validate(train, valid, tmp_path / "b", max_bad_fraction=0.10, smoke_steps=0)
    assert result.train.clean == 900 and result.train.quarantined == 100
    assert result.train.reasons == {"binary_data": 25, "non_finite": 25, "wrong_column_count": 50}
    assert Counter(result.clean_train.read_bytes().splitlines(keepends=True)) == Counter(
        line for line in lines if line not in dirty
    )


def test_empty_files(tmp_path):
    empty = _write(tmp_path / "empty.csv", [])
    valid = _write(tmp_path / "valid.csv", [good(1), good(2)])
    with pytest.raises(validate_result.ValidationError, match=r"train: .*empty.csv has no data rows \(0 lines\)"):
        validate.validate(empty, valid, tmp_path / "out", smoke_steps=0)
    with pytest.raises(validate_result.ValidationError, match="hold no data rows"):
        validate.validate(empty, empty, tmp_path / "out2", smoke_steps=0)
    only_header = _write(tmp_path / "header.csv", [HEADER])
    with pytest.raises(validate_result.ValidationError, match=r"valid: .*header.csv has no data rows \(1 lines\)"):
        validate.validate(valid, only_header, tmp_path / "out3", smoke_steps=0)


def test_missing_file_and_mixed_layouts(tmp_path):
    lab = synth.write_csv(tmp_path / "lab.csv", rows=20, layout="lab")
    dated = synth.write_csv(tmp_path / "dated.csv", rows=20, layout="dated")
    with pytest.raises(validate_result.ValidationError, match="valid file not found: .*nope.csv"):
        validate.validate(lab, tmp_path / "nope.csv", tmp_path / "out")
    with pytest.raises(validate_result.ValidationError, match="different layouts"):
        validate.validate(lab, dated, tmp_path / "out", smoke_steps=0)
    # An explicit layout judges every row against it instead.
    result = validate.validate(lab, dated, tmp_path / "out", smoke_steps=0, layout="lab", max_bad_fraction=1)
    assert result.valid.reasons == {"wrong_column_count": 20}


def test_dirty_file_through_ingest_and_validate(bucket, tmp_path):
    source = _write(tmp_path / "source.csv", [line for line, _ in DIRTY])
    result = ingest.ingest(str(source), bucket=bucket, prefix="p")
    assert result.header_lines_dropped == 1 and result.blank_lines_dropped == 1
    train, valid, _ = ingest.download_dataset(result.dataset_uri, tmp_path / "data")
    checked = validate.validate(
        train, valid, tmp_path / "out", max_bad_fraction=1.0, smoke_steps=0, layout=result.layout
    )
    expected = Counter(o for _, o in DIRTY if o not in ("header", "blank", "clean"))
    assert checked.bad_by_reason == dict(expected)
    assert checked.clean_rows == 10 and checked.bad_rows == sum(expected.values())
    clean = checked.clean_train.read_bytes().splitlines() + checked.clean_valid.read_bytes().splitlines()
    assert Counter(clean) == Counter(line.rstrip(b"\n") for line, o in DIRTY if o == "clean")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["lab", "dated"])
def test_smoke_run_on_course_data(which, lab_csvs, dated_csvs, tmp_path):
    train, valid = lab_csvs if which == "lab" else dated_csvs
    result = validate.validate(train, valid, tmp_path / "out", smoke_steps=10, smoke_rows=500)
    assert result.passed and result.layout == which
    smoke = result.smoke
    assert smoke.steps == 10 and smoke.train_rows == 500
    assert math.isfinite(smoke.prediction) and smoke.prediction != 0
    assert smoke.instance == schema.TEST_INSTANCES[which]
    assert Path(smoke.export_dir, "saved_model.pb").is_file()
    assert "test instance → fare" in result.report_markdown


def test_bad_parameters(tmp_path):
    lab = synth.write_csv(tmp_path / "lab.csv", rows=5, layout="lab")
    with pytest.raises(ValueError, match="max_bad_fraction=2"):
        validate.validate(lab, lab, tmp_path / "out", max_bad_fraction=2)
    with pytest.raises(ValueError, match="smoke_steps=-1"):
        validate.validate(lab, lab, tmp_path / "out", smoke_steps=-1)
    train = synth.write_csv(tmp_path / "in" / "train.csv", rows=5, layout="lab")
    with pytest.raises(ValueError, match="would overwrite the train input"):
        validate.validate(train, lab, tmp_path / "in", smoke_steps=0)
    assert len(train.read_bytes().splitlines()) == 5


def test_dirty_file_as_shards_gives_the_same_verdicts_per_shard(tmp_path):
    lines = [line for line, _ in DIRTY]
    shards = tmp_path / "train"
    _write(shards / "train-00000-of-00002.csv", lines[:9])
    _write(shards / "train-00001-of-00002.csv", lines[9:])
    valid = _write(tmp_path / "valid.csv", [good(k) for k in range(100, 120)])
    result = validate.validate(shards, valid, tmp_path / "out", max_bad_fraction=0.6, smoke_steps=0)

    expected = Counter(outcome for _, outcome in DIRTY)
    rep = result.train
    assert rep.lines == len(DIRTY) and rep.header_lines == 1 and rep.blank_lines == 1
    assert rep.clean == 10 and rep.quarantined == 10 and not rep.final_newline
    assert rep.reasons == {r: n for r, n in expected.items() if r not in ("header", "blank", "clean")}
    assert [s.final_newline for s in rep.shards] == [True, False]
    clean_dir = tmp_path / "out" / "train"
    assert Path(rep.clean_path) == clean_dir and sorted(p.name for p in clean_dir.iterdir()) == [
        "train-00000-of-00002.csv",
        "train-00001-of-00002.csv",
    ]
    both = b"".join((clean_dir / name).read_bytes() for name in sorted(p.name for p in clean_dir.iterdir()))
    assert both == b"".join(line for line, outcome in DIRTY if outcome == "clean")
    # Each entry names its shard and the line number within that shard.
    for entry in _quarantine(result):
        offset = 0 if entry["file"].endswith("00000-of-00002.csv") else 9
        line, outcome = DIRTY[offset + entry["line"] - 1]
        assert entry["reason"] == outcome and Path(entry["file"]).parent == shards
    assert result.valid.shards is None and result.clean_valid == tmp_path / "out" / "valid.csv"


def test_validate_step_gives_a_directory_artifact_for_sharded_input(tmp_path):
    from kfp import dsl

    from components.validate import validate as validate_step

    for s in range(2):
        synth.write_csv(tmp_path / "in" / "train" / f"train-{s}.csv", rows=200, layout="lab", seed=s)
    synth.write_csv(tmp_path / "in" / "valid.csv", rows=100, layout="lab", seed=5)
    artifacts = {
        name: kind(uri=str(tmp_path / "run" / name))
        for name, kind in [
            ("clean_train", dsl.Dataset),
            ("clean_valid", dsl.Dataset),
            ("quarantine", dsl.Dataset),
            ("report", dsl.Markdown),
        ]
    }
    layout, clean_rows, bad_rows = validate_step.python_func(
        train_data=dsl.Dataset(uri=str(tmp_path / "in" / "train"), metadata={"layout": "lab"}),
        valid_data=dsl.Dataset(uri=str(tmp_path / "in" / "valid.csv"), metadata={"layout": "lab"}),
        max_bad_fraction=0.05,
        smoke_steps=0,
        **artifacts,
    )
    train_out, valid_out = Path(artifacts["clean_train"].path), Path(artifacts["clean_valid"].path)
    assert sorted(p.name for p in train_out.iterdir()) == ["train-0.csv", "train-1.csv"]
    assert valid_out.is_file() and layout == "lab"
    rows = sum(len(p.read_bytes().splitlines()) for p in train_out.iterdir()) + len(valid_out.read_bytes().splitlines())
    assert rows == clean_rows and clean_rows + bad_rows == 500
    assert artifacts["clean_train"].metadata["shards"] == 2 and "shards" not in artifacts["clean_valid"].metadata
    assert artifacts["clean_train"].metadata["rows"] + artifacts["clean_valid"].metadata["rows"] == clean_rows
