"""trainer.rowcheck: the block checks give exactly the verdicts of the line-by-line check.

Every comparison runs the same file twice through ``validate_rows.check_file``: with the
vectorised checks, and with ``vectorised=False`` (every line through ``classify_line``). The clean
bytes, the quarantine entries and every count must be identical — on every fault the reliability
suite injects, on the course's real files, on lines built to sit at the edge of the fast path, and
whatever the block size or number of workers.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import random
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.test_reliability_data import KINDS, clean_row, fault_line, truncated
from trainer import rowcheck, schema, synth, validate, validate_rows


def _check(path, layout: str, out: Path, **options):
    quarantine = io.StringIO()
    report = validate_rows.check_file(path, out, quarantine, schema.get_layout(layout), "train", **options)
    clean = (
        out.read_bytes()
        if report.shards is None
        else {s.clean_path: Path(s.clean_path).read_bytes() for s in report.shards}
    )
    return report, clean, quarantine.getvalue()


def assert_same_as_scalar(path, layout: str, tmp_path: Path, **options) -> validate_rows.SplitReport:
    """Vectorised and line-by-line verdicts of ``path`` agree byte for byte; the vectorised report."""
    sharded = isinstance(path, list) or Path(path).is_dir()
    fast_out, slow_out = (tmp_path / name / ("clean" if sharded else "clean.csv") for name in ("fast", "slow"))
    fast_out.parent.mkdir(parents=True, exist_ok=True)
    slow_out.parent.mkdir(parents=True, exist_ok=True)
    fast, fast_clean, fast_quarantine = _check(path, layout, fast_out, **options)
    slow, slow_clean, slow_quarantine = _check(path, layout, slow_out, vectorised=False)
    if sharded:
        fast_clean = {Path(k).name: v for k, v in fast_clean.items()}
        slow_clean = {Path(k).name: v for k, v in slow_clean.items()}
    assert fast_clean == slow_clean
    assert fast_quarantine == slow_quarantine
    skip = {"clean_path": True, "shards": {"__all__": {"clean_path"}}}
    assert fast.model_dump(exclude=skip) == slow.model_dump(exclude=skip)
    return fast


def _blocks_scalar_lines(path: Path, layout: str) -> tuple[int, int]:
    results = [r for _, r in rowcheck.check_file_blocks(path, schema.get_layout(layout))]
    return sum(r.lines for r in results), sum(r.scalar_lines for r in results)


# -- the lines at the edge of the fast path --------------------------------------------------------
def edge_lines(layout: str, rng: random.Random) -> list[bytes]:
    """Lines whose verdict a vectorised check could get wrong: each must go the scalar way or agree."""
    lay = schema.get_layout(layout)
    base = clean_row(layout, 1, rng).decode().rstrip("\n").split(",")
    numeric = [i for i, c in enumerate(lay.columns) if c not in (schema.KEY, lay.pickup_datetime)]

    def with_field(i: int, text: str) -> bytes:
        fields = list(base)
        fields[i] = text
        return ",".join(fields).encode() + b"\n"

    lines = [with_field(i, text) for i in numeric for text in NUMBER_EDGES]
    lines += [with_field(numeric[0], f) for f in ("0", "-0", "-0.0", "500", "500.0000000000001", "0.001")]
    lines += [with_field(numeric[-1], p) for p in ("0", "1", "6", "7", "1.5", "6.0000000001")]
    if lay.pickup_datetime:
        at = lay.columns.index(lay.pickup_datetime)
        lines += [with_field(at, text) for text in DATETIME_EDGES]
    row = ",".join(base).encode()
    lines += [
        row + b"\r\n",  # CRLF
        row + b"\r\r\n",
        row.replace(b",", b"\r,", 1) + b"\n",  # a lone carriage return inside a field
        row + b"\t\n",
        row + "é\n".encode(),  # non-ASCII text in the key: clean
        row + b"\xe9\n",  # not UTF-8
        row + b"\x7f\n",
        b"\xef\xbb\xbf" + row + b"\n",  # a byte-order mark
        b"\n",
        b"\r\n",
        b"   \n",
        b"\t\n",
        b",".join(c.encode() for c in lay.columns) + b"\n",  # the layout's header
        b",".join(c.upper().encode() for c in lay.columns) + b"\n",
        b" fare_amount,x\n",
        row + b",extra\n",
        b",".join(row.split(b",")[:-1]) + b"\n",
        b"," * (len(lay.columns) - 1) + b"\n",  # every field empty
        row.replace(b",", b";") + b"\n",
        b'"' + row + b'"\n',  # quotes are no CSV quoting here
    ]
    return lines


NUMBER_EDGES = (
    "",
    " ",
    " 1.5",
    "1.5 ",
    "1e5",
    "1E-3",
    "+1",
    "-",
    ".",
    ".5",
    "5.",
    "-.5",
    "--1",
    "1-2",
    "1..2",
    "1.2.3",
    "0x10",
    "1_000",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1" * 400,  # overflows to inf: non_finite
    "0." + "0" * 400 + "1",
    "-73.98986053466797",
    "40.742313385009766",
    "00012.50",
    "١٢",  # Arabic-Indic digits: Python reads them as a number
    "12/5",
    "abc",
)

DATETIME_EDGES = (
    "2012-02-29 10:00:00 UTC",  # leap day
    "2013-02-29 10:00:00 UTC",
    "1900-02-29 10:00:00 UTC",
    "2000-02-29 10:00:00 UTC",
    "2013-04-31 10:00:00 UTC",
    "2013-12-31 23:59:59 UTC",
    "2013-13-01 10:00:00 UTC",
    "2013-00-10 10:00:00 UTC",
    "2013-01-00 10:00:00 UTC",
    "2013-01-32 10:00:00 UTC",
    "2013-01-10 24:00:00 UTC",
    "2013-01-10 10:60:00 UTC",
    "2013-01-10 10:00:60 UTC",
    "2013-01-10 10:00:61 UTC",
    "0000-01-10 10:00:00 UTC",
    "0001-01-01 00:00:00 UTC",
    "2013-01-10 10:00:00 utc",
    "2013-1-10 10:00:00 UTC",
    "2013-01-10 10:00:00 UTC ",
    " 2013-01-10 10:00:00 UTC",
    "2013-01-10T10:00:00 UTC",
    "2013/01/10 10:00:00 UTC",
    "2013-01-10 10:00:00",
    "2013-01-10 10:00:00 GMT",
    "201a-01-10 10:00:00 UTC",
    "",
)


@pytest.mark.parametrize("layout", ["lab", "dated"])
def test_every_reliability_fault_and_edge_line_gets_the_scalar_verdict(layout, tmp_path):
    rng = random.Random(f"rowcheck-{layout}")
    lines = [clean_row(layout, k, rng) for k in range(400)]
    for kind in KINDS[layout]:
        lines += [fault_line(kind, layout, 1000 + i, rng)[0] for i in range(5)]
    lines += edge_lines(layout, rng)
    rng.shuffle(lines)
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"".join(lines) + truncated(clean_row(layout, 10_000, rng)))
    report = assert_same_as_scalar(path, layout, tmp_path)
    assert report.clean > 350 and report.header_lines == 1 and report.blank_lines == 4 and not report.final_newline
    assert set(report.reasons) >= {schema.REASON_BINARY, schema.REASON_COLUMNS, schema.REASON_NOT_A_NUMBER}
    # The well-formed clean rows went the fast way; the edge and fault lines did not.
    lines_read, scalar = _blocks_scalar_lines(path, layout)
    assert lines_read == len(lines) + 1 and scalar < len(lines) - 350


@pytest.mark.parametrize("layout", ["lab", "dated"])
@pytest.mark.parametrize("block_bytes, workers", [(1, 1), (7, 2), (300, 2), (4096, 1)])
def test_block_boundaries_and_workers_do_not_change_anything(layout, block_bytes, workers, tmp_path):
    rng = random.Random(f"blocks-{layout}")
    lines = [clean_row(layout, k, rng) for k in range(150)]
    lines += [fault_line(kind, layout, 500 + i, rng)[0] for i, kind in enumerate(KINDS[layout])]
    lines += edge_lines(layout, rng)[::5]
    rng.shuffle(lines)
    path = tmp_path / "blocks.csv"
    path.write_bytes(b"".join(lines))
    options = {"block_bytes": block_bytes, "workers": workers}
    report = assert_same_as_scalar(path, layout, tmp_path, **options)
    whole = assert_same_as_scalar(path, layout, tmp_path / "whole")
    assert report.model_dump(exclude={"clean_path"}) == whole.model_dump(exclude={"clean_path"})
    assert report.lines == len(lines) and report.final_newline


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\n",
        b"\n\n  \n",
        b"fare_amount,pickuplon,pickuplat,dropofflon,dropofflat,passengers,key\n",
        b"fare_amount,pickuplon,pickuplat,dropofflon,dropofflat,passengers,key",
        b"12.0,-73.98,40.75,-73.97,40.78,1,1",  # one clean row without newline
        b"12.0,-73.98,40.75,-73.97,40.78,1,1\r\n12.0,-73.98,40.75,-73.97,40.78,1,2\r\n",
        b"12.0,-73.98,40.75,-73.97,40.78,1,1\r",
        b"\xef\xbb\xbf12.0,-73.98,40.75,-73.97,40.78,1,1\n",
        bytes(range(256)) * 40,  # binary, no newline at the end
    ],
    ids=["empty", "newline", "blank", "header", "header-no-newline", "no-newline", "crlf", "cr-end", "bom", "binary"],
)
def test_small_whole_files(payload, tmp_path):
    path = tmp_path / "small.csv"
    path.write_bytes(payload)
    for block_bytes in (1, 5, rowcheck.BLOCK_BYTES):
        report = assert_same_as_scalar(path, "lab", tmp_path / str(block_bytes), block_bytes=block_bytes)
        assert report.lines == payload.count(b"\n") + (not payload.endswith(b"\n") and bool(payload))
        assert report.final_newline == (not payload or payload.endswith(b"\n"))


@pytest.mark.parametrize("which", ["lab", "dated"])
def test_course_data_gets_the_scalar_verdict_the_fast_way(which, lab_csvs, dated_csvs, tmp_path):
    train, valid = lab_csvs if which == "lab" else dated_csvs
    for path in (train, valid):
        report = assert_same_as_scalar(path, which, tmp_path / path.stem)
        lines, scalar = _blocks_scalar_lines(path, which)
        assert report.rows == lines and scalar <= lines // 100  # nearly every line went the fast way


def test_synthetic_dirty_trips_are_judged_without_the_scalar_check(tmp_path):
    path = synth.write_csv(tmp_path / "trips.csv", rows=8000, layout="dated", seed=7)
    report = assert_same_as_scalar(path, "dated", tmp_path, block_bytes=64 * 1024)
    assert set(report.reasons) == set(schema.IMPLAUSIBLE_REASONS) and report.quarantined > 60
    assert _blocks_scalar_lines(path, "dated") == (8000, 0)


# -- the fast path's own parsing against Python's ---------------------------------------------------
def _python_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def test_number_text_certain_only_where_python_reads_the_same_float():
    alphabet_texts = ["".join(t) for n in range(7) for t in itertools.product("01-.", repeat=n)]
    rng = random.Random("numbers")
    long_texts = [
        ("-" if rng.random() < 0.5 else "")
        + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20)))
        + ("." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20))) if rng.random() < 0.8 else "")
        for _ in range(5000)
    ]
    texts = alphabet_texts + long_texts + list(NUMBER_EDGES)
    floats, certain = rowcheck._numbers(pa.array(texts, pa.string()))
    for text, value, sure in zip(texts, floats.tolist(), certain.tolist()):
        expected = _python_float(text)
        if sure:
            assert expected is not None and repr(value) == repr(expected), text
    # Plain decimal text is always certain (so clean rows do go the fast way).
    plain = [t for t in texts if t and all(c in "0123456789.-" for c in t) and _python_float(t) is not None]
    plain = [t for t in plain if not t.startswith(".") and not t.endswith(".") and not t.startswith("-.")]
    assert all(certain[texts.index(t)] for t in plain[:2000])


def test_datetime_shape_certain_only_where_strptime_agrees():
    rng = random.Random("datetimes")
    texts = list(DATETIME_EDGES)
    for _ in range(10_000):
        texts.append(
            f"{rng.randint(0, 2100):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d} "
            f"{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 62):02d} UTC"
        )
    width = len(texts[0])
    shaped = [t for t in texts if len(t) == width]
    certain = rowcheck._real_datetimes(np.frombuffer("".join(shaped).encode(), np.uint8).reshape(-1, width))
    for text, sure in zip(shaped, certain.tolist()):
        try:
            datetime.strptime(text, schema.DATETIME_FORMAT)
            parses = True
        except ValueError:
            parses = False
        assert sure == (parses and text.endswith(" UTC")), text


# -- shards ------------------------------------------------------------------------------------------
def test_sharded_split_keeps_shard_names_and_names_the_shard_in_the_quarantine(tmp_path):
    rng = random.Random("shards")
    shards = tmp_path / "train"
    shards.mkdir()
    for s in range(3):
        lines = [clean_row("dated", 100 * s + k, rng) for k in range(50)]
        lines.insert(7, fault_line("bad_datetime", "dated", s, rng)[0])
        (shards / f"train-{s:05d}-of-00003.csv").write_bytes(b"".join(lines))
    report = assert_same_as_scalar(shards, "dated", tmp_path, block_bytes=512)
    assert [Path(s.clean_path).name for s in report.shards] == [f"train-{s:05d}-of-00003.csv" for s in range(3)]
    assert report.rows == 153 and report.clean == 150 and report.reasons == {schema.REASON_BAD_DATETIME: 3}
    for shard in report.shards:
        alone, alone_clean, alone_quarantine = _check(shard.source, "dated", tmp_path / "alone.csv")
        assert Path(shard.clean_path).read_bytes() == alone_clean
        assert shard.clean_crc32c == alone.clean_crc32c and shard.rows == alone.rows == 51
        entry = json.loads(alone_quarantine)
        assert entry["file"] == shard.source and entry["line"] == 8
    # A list of shard paths is the same split.
    listed = assert_same_as_scalar(sorted(shards.glob("*.csv")), "dated", tmp_path / "listed")
    assert listed.clean_crc32c == report.clean_crc32c


def test_shards_with_the_same_name_or_no_shard_are_refused(tmp_path):
    for d in ("a", "b"):
        synth.write_csv(tmp_path / d / "part.csv", rows=5, layout="lab")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"a/part.csv and .*b/part.csv have the same name"):
        validate_rows.split_files([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(FileNotFoundError, match="empty: directory holds no .csv shard"):
        validate_rows.split_files(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"nope\*.csv: no file matches"):
        validate_rows.split_files(str(tmp_path / "nope*.csv"))
    assert validate_rows.split_files(tmp_path / "a" / "part.csv") == ([tmp_path / "a" / "part.csv"], False)


def test_validate_with_sharded_splits_writes_shard_directories(tmp_path):
    shards = tmp_path / "in" / "train"
    for s in range(2):
        synth.write_csv(shards / f"train-{s}.csv", rows=300, layout="lab", seed=s)
    valid = synth.write_csv(tmp_path / "in" / "valid.csv", rows=200, layout="lab", seed=9)
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "train" / "train-7.csv").write_text("a shard of an earlier run\n")
    result = validate.validate(shards, valid, out, smoke_steps=0)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["train-0.csv", "train-1.csv"]
    assert result.train.clean_path == str(out / "train") and len(result.train.shards) == 2
    assert result.valid.clean_path == str(out / "valid.csv") and result.valid.shards is None
    assert result.train.rows == 600 and result.train.clean == sum(s.clean for s in result.train.shards)
    saved = json.loads((out / "validation.json").read_text())
    assert "shards" not in saved["valid"] and len(saved["train"]["shards"]) == 2
    entries = [json.loads(line) for line in Path(result.quarantine).read_text().splitlines()]
    assert {Path(e["file"]).name for e in entries if e["split"] == "train"} == {"train-0.csv", "train-1.csv"}


def test_quarantine_entries_are_the_json_of_the_entry():
    lines = [
        b'12,"quoted",\\back\\slash\n',
        "é,ü,中,😀\n".encode(),
        b"\x00\x01\x1f,\x7f\n",
        b"\xff\xfe not utf-8\n",
        b"no newline",
        b"tab\there\r\n",
        b"",
    ]
    head = rowcheck.entry_head("valid", "/data/shard 1/valid-00001.csv")
    for number, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        entry = {"split": "valid", "file": "/data/shard 1/valid-00001.csv", "line": number}
        entry |= {"reason": schema.REASON_BINARY, "detail": 'a "detail" \\ é'}
        try:
            entry["text"] = line.decode("utf-8")
        except UnicodeDecodeError:
            entry |= {"text": None, "raw_base64": base64.b64encode(line).decode("ascii")}
        tail = rowcheck.entry_tail(raw, schema.REASON_BINARY, 'a "detail" \\ é')
        assert rowcheck.entry_line(head, number, tail) == json.dumps(entry) + "\n"


def test_validate_refuses_to_write_shards_where_an_input_lives(tmp_path):
    shards = tmp_path / "in"
    synth.write_csv(shards / "train-0.csv", rows=50, layout="lab")
    out = tmp_path / "out"
    valid = synth.write_csv(out / "train" / "valid.csv", rows=50, layout="lab", seed=3)
    with pytest.raises(ValueError, match=r"would overwrite the valid input .*valid.csv"):
        validate.validate(shards, valid, out, smoke_steps=0)
    assert valid.is_file()
