"""Corrupt inputs end to end: source file → ingest (GCS emulator) → download → validate.

Every kind of damage, in both course layouts, mixed into clean rows: the quarantine counts per
reason are exact, every clean row comes out byte-identical, every bad line is in the quarantine
with its original text, and the run passes or fails exactly at ``max_bad_fraction``. Whole-file
damage (empty, header only, binary garbage) is refused with a message naming the source, and
nothing is written to the bucket.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability import record
from trainer import ingest, ingest_sources, ingest_split, schema, storage, validate, validate_result

pytestmark = pytest.mark.reliability


# -- rows ----------------------------------------------------------------------------------------
def clean_row(layout: str, key: int, rng: random.Random) -> bytes:
    """A plausible trip (inside NYC, fare in range, 1–6 passengers, not zero-length)."""
    plon, plat = rng.uniform(-74.02, -73.93), rng.uniform(40.70, 40.80)
    dlon, dlat = plon + rng.uniform(0.005, 0.05), plat + rng.uniform(-0.04, 0.04)
    fare, passengers = rng.uniform(3.0, 60.0), rng.randint(1, 6)
    if layout == "lab":
        text = f"{fare:.2f},{plon:.6f},{plat:.6f},{dlon:.6f},{dlat:.6f},{passengers},{key}"
    else:
        when = f"2013-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00 UTC"
        text = f"{fare:.2f},{when},{plon:.6f},{plat:.6f},{dlon:.6f},{dlat:.6f},{passengers},k{key}"
    return text.encode() + b"\n"


def _fields(row: bytes) -> list[str]:
    return row.decode().rstrip("\n").split(",")


def _join(fields: list[str]) -> bytes:
    return ",".join(fields).encode() + b"\n"


def _numeric_index(layout: str, name: str) -> int:
    return schema.get_layout(layout).columns.index(name)


def _binary(rng: random.Random) -> bytes:
    # Starts with a NUL so it can never pass for text; no line breaks inside (one line).
    body = bytes(b for b in rng.randbytes(60) if b not in (0x0A, 0x0D))
    return b"\x00" + body + b"\n"


def fault_line(kind: str, layout: str, key: int, rng: random.Random) -> tuple[bytes, str]:
    """One damaged line of the given kind and the quarantine reason it must get."""
    lay = schema.get_layout(layout)
    fields = _fields(clean_row(layout, key, rng))
    if kind == "nan":
        fields[0] = "nan"
        return _join(fields), schema.REASON_NON_FINITE
    if kind == "infinity":
        fields[_numeric_index(layout, lay.pickup_lat)] = "-inf"
        return _join(fields), schema.REASON_NON_FINITE
    if kind == "text_in_number":
        fields[_numeric_index(layout, lay.dropoff_lon)] = "seventy-three west"
        return _join(fields), schema.REASON_NOT_A_NUMBER
    if kind == "extra_column":
        return _join(fields + ["surcharge"]), schema.REASON_COLUMNS
    if kind == "missing_column":
        del fields[_numeric_index(layout, lay.passengers)]
        return _join(fields), schema.REASON_COLUMNS
    if kind == "binary":
        return _binary(rng), schema.REASON_BINARY
    if kind == "bad_datetime":
        fields[1] = "2013-02-30 25:61:00 UTC"
        return _join(fields), schema.REASON_BAD_DATETIME
    raise ValueError(kind)


KINDS = {
    "lab": ["nan", "infinity", "text_in_number", "extra_column", "missing_column", "binary"],
    "dated": ["nan", "infinity", "text_in_number", "extra_column", "missing_column", "binary", "bad_datetime"],
}


def truncated(row: bytes) -> bytes:
    """The row cut in the middle of its third field, without a final newline."""
    text = row.rstrip(b"\n")
    cut = [i for i, c in enumerate(text) if c == ord(",")][2] + 3
    return text[:cut]


# -- the end-to-end path -------------------------------------------------------------------------
def ingest_and_validate(source: Path, bucket: str, work: Path, max_bad_fraction: float):
    result = ingest.ingest(str(source), bucket=bucket, prefix="reliability")
    train, valid, _ = ingest.download_dataset(result.dataset_uri, work / "downloaded")
    checked = validate.validate(
        train, valid, work / "validated", max_bad_fraction=max_bad_fraction, smoke_steps=0, layout=result.layout
    )
    return result, checked


def _clean_out(checked) -> Counter:
    return Counter(checked.clean_train.read_bytes().splitlines()) + Counter(
        checked.clean_valid.read_bytes().splitlines()
    )


def _quarantined(checked) -> Counter:
    out = Counter()
    for line in Path(checked.quarantine).read_text().splitlines():
        entry = json.loads(line)
        raw = base64.b64decode(entry["raw_base64"]) if entry["text"] is None else entry["text"].encode()
        out[(raw, entry["reason"])] += 1
    return out


@pytest.mark.parametrize("layout", ["lab", "dated"])
def test_every_fault_kind_is_quarantined_exactly_and_no_clean_row_is_lost(layout, bucket, tmp_path):
    rng = random.Random(f"faults-{layout}")
    figures: dict[str, dict] = {}
    problems: list[str] = []
    for kind in KINDS[layout] + ["truncated_last_line"]:
        clean = [clean_row(layout, k, rng) for k in range(300)]
        lines = list(clean)
        expected_bad: list[tuple[bytes, str]] = []
        if kind == "truncated_last_line":
            cut = truncated(clean_row(layout, 10_000, rng))
            lines.append(cut)
            expected_bad.append((cut, schema.REASON_COLUMNS))
        else:
            for i in range(7):
                line, reason = fault_line(kind, layout, 1000 + i, rng)
                lines.insert(rng.randrange(len(lines) + 1), line)
                expected_bad.append((line.rstrip(b"\n"), reason))
        source = tmp_path / kind / "source.csv"
        source.parent.mkdir(parents=True)
        source.write_bytes(b"".join(lines))

        result, checked = ingest_and_validate(source, bucket, tmp_path / kind, max_bad_fraction=1.0)
        want_reasons = dict(Counter(reason for _, reason in expected_bad))
        clean_kept = _clean_out(checked) == Counter(row.rstrip(b"\n") for row in clean)
        quarantine_exact = _quarantined(checked) == Counter(expected_bad)
        figures[kind] = {
            "rows": len(lines),
            "faults_injected": len(expected_bad),
            "quarantined": checked.bad_rows,
            "reasons": checked.bad_by_reason,
            "clean_rows_in": len(clean),
            "clean_rows_out": checked.clean_rows,
            "ingested_rows": result.train.rows + result.valid.rows,
        }
        if checked.bad_by_reason != want_reasons:
            problems.append(f"{kind}: reasons {checked.bad_by_reason} != {want_reasons}")
        if not clean_kept:
            problems.append(f"{kind}: clean rows differ after ingest + validate")
        if not quarantine_exact:
            problems.append(f"{kind}: quarantine does not hold exactly the damaged lines")
        if result.train.rows + result.valid.rows != len(lines):
            problems.append(f"{kind}: ingest carried {result.train.rows + result.valid.rows} of {len(lines)} rows")

    record(
        f"data_faults_{layout}",
        f"Corrupt inputs ({layout} layout) through ingest → validate",
        passed=not problems,
        fault_kinds=len(figures),
        rows_checked=sum(f["rows"] for f in figures.values()),
        faults_injected=sum(f["faults_injected"] for f in figures.values()),
        quarantined=sum(f["quarantined"] for f in figures.values()),
        clean_rows_lost=sum(f["clean_rows_in"] - f["clean_rows_out"] for f in figures.values()),
        by_kind=figures,
    )
    assert not problems, problems


@pytest.mark.parametrize("layout, rows", [("lab", 20_000), ("dated", 10_000)])
def test_ten_percent_dirty_file_passes_or_fails_exactly_at_max_bad_fraction(layout, rows, bucket, tmp_path):
    rng = random.Random(f"dirty-{layout}")
    bad_count = rows // 10
    clean = [clean_row(layout, k, rng) for k in range(rows - bad_count)]
    kinds = KINDS[layout]
    bad = [fault_line(kinds[i % len(kinds)], layout, rows + i, rng) for i in range(bad_count - 1)]
    last = truncated(clean_row(layout, 10 * rows, rng))
    body = [*clean, *(line for line, _ in bad)]
    rng.shuffle(body)
    source = tmp_path / "dirty.csv"
    source.write_bytes(b"".join(body) + last)
    expected = Counter(reason for _, reason in bad) + Counter({schema.REASON_COLUMNS: 1})

    # Permissive threshold: the run passes, with exact counts and every clean row kept.
    _, checked = ingest_and_validate(source, bucket, tmp_path / "pass", max_bad_fraction=1.0)
    worst = max(checked.train.bad_fraction, checked.valid.bad_fraction)
    clean_kept = _clean_out(checked) == Counter(row.rstrip(b"\n") for row in clean)

    # At exactly the worst split's bad share it still passes; just below it fails, naming counts.
    _, at_limit = ingest_and_validate(source, bucket, tmp_path / "limit", max_bad_fraction=worst)
    with pytest.raises(validate_result.ValidationError) as below:
        ingest_and_validate(source, bucket, tmp_path / "below", max_bad_fraction=worst - 1e-4)
    with pytest.raises(validate_result.ValidationError) as default:
        ingest_and_validate(source, bucket, tmp_path / "default", max_bad_fraction=0.05)
    failed = below.value.result
    record(
        f"data_ten_percent_dirty_{layout}",
        f"10 % dirty {layout} file through ingest → validate, gated by max_bad_fraction",
        passed=checked.bad_by_reason == dict(expected) and clean_kept and at_limit.passed,
        rows_checked=checked.total_rows,
        faults_injected=bad_count,
        quarantined=checked.bad_rows,
        clean_rows_in=len(clean),
        clean_rows_out=checked.clean_rows,
        worst_split_bad_fraction=round(worst, 5),
        passes_at=round(worst, 5),
        fails_below=round(worst - 1e-4, 5),
        fails_at_default_0_05=True,
    )
    assert checked.total_rows == rows
    assert checked.bad_by_reason == dict(expected)
    assert checked.bad_rows == bad_count and checked.clean_rows == rows - bad_count
    assert clean_kept
    assert at_limit.passed
    assert failed is not None and not failed.passed and failed.bad_rows == bad_count
    message = str(below.value)
    assert "max_bad_fraction" in message and "quarantined rows:" in message and "\n" not in message
    # The worse split is named with its exact counts.
    split = failed.train if failed.train.bad_fraction >= failed.valid.bad_fraction else failed.valid
    assert f"{split.name}: {split.quarantined} of {split.rows} rows bad" in message
    for reason, count in split.reasons.items():
        assert f"{reason}={count}" in message
    assert "max_bad_fraction 5.0%" in str(default.value)


def test_whole_file_damage_is_refused_naming_the_source_and_writes_nothing(bucket, tmp_path):
    rng = random.Random("whole-files")
    cases = {
        "empty.csv": (b"", "no data rows"),
        "header-only.csv": (b",".join(c.encode() for c in schema.LAB.columns) + b"\n", "no data rows"),
        "blank-lines.csv": (b"\n\n  \n", "no data rows"),
        "garbage.bin": (rng.randbytes(256 * 1024), "matches a layout"),
    }
    refused = {}
    for name, (payload, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises((ingest_split.IngestError, ingest_sources.SourceError)) as info:
            ingest.ingest(str(path), bucket=bucket, prefix="reliability")
        message = str(info.value)
        refused[name] = message[:200]
        assert expected in message, message
        assert "\n" not in message
    # Validation of such files on their own: the same refusal, from validate's side.
    good = tmp_path / "good.csv"
    good.write_bytes(b"".join(clean_row("lab", k, rng) for k in range(20)))
    for name in ("empty.csv", "header-only.csv", "blank-lines.csv"):
        with pytest.raises(validate_result.ValidationError, match="no data rows"):
            validate.validate(tmp_path / name, good, tmp_path / f"v-{name}", smoke_steps=0, layout="lab")
    written = storage.list_blobs(f"gs://{bucket}")
    record(
        "data_whole_file_damage",
        "Empty, header-only, blank and binary files refused with a clear error",
        passed=not written,
        files_tried=len(cases),
        refused=len(refused),
        objects_written=len(written),
        messages=refused,
    )
    assert written == []
