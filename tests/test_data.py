"""trainer.data: both layouts with and without header, malformed-line errors, implausible rows."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest
import tensorflow as tf

from trainer import data, schema, synth

LAB_LINES = [
    "12.0,-73.987625,40.750617,-73.971163,40.78518,1,0",
    "4.5,-73.96362,40.774363,-73.953485,40.772665,2,1",
    "45.0,-73.7781,40.6413,-73.9855,40.758,3,2",
]
DATED_LINES = [
    "11.3,2011-01-28 20:42:59 UTC,-73.999022,40.739146,-73.990369,40.717866,1,0",
    "7.7,2011-06-27 04:28:06 UTC,-73.987443,40.729221,-73.979013,40.758641,1,1",
    "52.0,2013-03-06 11:00:00 UTC,-73.7781,40.6413,-73.9855,40.758,6,2",
]


def _write(path, lines, header=None):
    text = ((header + "\n") if header else "") + "\n".join(lines) + "\n"
    path.write_text(text)
    return str(path)


def _rows(scan, **kwargs):
    out = {}
    for features, label in data.make_dataset(scan, 2, training=False, **kwargs):
        for k, v in {**features, schema.LABEL: label}.items():
            out.setdefault(k, []).extend(v.numpy().tolist())
    return out


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("cache", [False, True])
def test_lab_layout(tmp_path, header, cache):
    path = _write(tmp_path / "lab.csv", LAB_LINES, ",".join(schema.LAB.columns) if header else None)
    scan = data.scan_files([path])
    assert scan.layout is schema.LAB
    assert scan.files[0].has_header is header
    assert scan.rows == scan.plausible == 3
    rows = _rows(scan, cache=cache)
    assert set(rows) == {*schema.LAB.serving_fields, schema.LABEL}
    assert rows[schema.LABEL] == [12.0, 4.5, 45.0]
    assert rows["passengers"] == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(rows["pickuplon"], [-73.987625, -73.96362, -73.7781], rtol=1e-7)
    np.testing.assert_allclose(rows["dropofflat"], [40.78518, 40.772665, 40.758], rtol=1e-7)


@pytest.mark.parametrize("header", [False, True])
def test_dated_layout(tmp_path, header):
    path = _write(tmp_path / "dated.csv", DATED_LINES, ",".join(schema.DATED.columns) if header else None)
    scan = data.scan_files(path.split(","), layout="auto")
    assert scan.layout is schema.DATED and scan.files[0].has_header is header
    rows = _rows(scan)
    assert rows["pickup_datetime"] == [
        b"2011-01-28 20:42:59 UTC",
        b"2011-06-27 04:28:06 UTC",
        b"2013-03-06 11:00:00 UTC",
    ]
    assert rows["passenger_count"] == [1.0, 1.0, 6.0]
    assert rows[schema.LABEL] == pytest.approx([11.3, 7.7, 52.0])


def test_several_files_and_globs(tmp_path):
    a = _write(tmp_path / "part-0.csv", LAB_LINES[:2])
    _write(tmp_path / "part-1.csv", LAB_LINES[2:], ",".join(schema.LAB.columns))
    assert data.expand_paths(f"{tmp_path}/part-*.csv") == [a, str(tmp_path / "part-1.csv")]
    assert data.expand_paths(f"{a}, {tmp_path}/part-1.csv,{a}") == [a, str(tmp_path / "part-1.csv")]
    scan = data.scan_files(data.expand_paths(f"{tmp_path}/part-*.csv"))
    assert sorted(_rows(scan)[schema.LABEL]) == [4.5, 12.0, 45.0]
    with pytest.raises(data.DataError, match="no file matches"):
        data.expand_paths(f"{tmp_path}/nothing-*.csv")
    with pytest.raises(data.DataError, match="no such file"):
        data.expand_paths(str(tmp_path / "missing.csv"))


def test_layouts_must_agree(tmp_path):
    lab = _write(tmp_path / "lab.csv", LAB_LINES)
    dated = _write(tmp_path / "dated.csv", DATED_LINES)
    with pytest.raises(data.DataError, match="dated layout, but earlier files are lab"):
        data.scan_files([lab, dated])
    with pytest.raises(data.MalformedRowError, match="line 1: wrong_column_count"):
        data.scan_files([lab], layout="dated")


@pytest.mark.parametrize(
    ("bad_line", "reason", "text"),
    [
        ("12.0,-73.98,40.75,-73.97,40.78,1", schema.REASON_COLUMNS, "6 columns, expected 7"),
        ("12.0,-73.98,40.75,-73.97,40.78,1,0,extra", schema.REASON_COLUMNS, "8 columns, expected 7"),
        ("12.0,-73.98,forty,-73.97,40.78,1,0", schema.REASON_NOT_A_NUMBER, "pickuplat='forty' is not a number"),
        ("12.0,-73.98,40.75,-73.97,40.78,,0", schema.REASON_NOT_A_NUMBER, "passengers=''"),
        ("inf,-73.98,40.75,-73.97,40.78,1,0", schema.REASON_NON_FINITE, "fare_amount='inf'"),
        ("", schema.REASON_COLUMNS, "1 columns"),
    ],
)
@pytest.mark.parametrize("header", [False, True])
def test_malformed_line_names_file_line_and_reason(tmp_path, bad_line, reason, text, header):
    lines = LAB_LINES[:2] + [bad_line] + LAB_LINES[2:]
    path = _write(tmp_path / "bad.csv", lines, ",".join(schema.LAB.columns) if header else None)
    with pytest.raises(data.MalformedRowError) as info:
        data.scan_files([path])
    err = info.value
    expected_line = 4 if header else 3
    assert (err.path, err.line, err.reason) == (path, expected_line, reason)
    assert str(err).startswith(f"{path}: line {expected_line}: {reason}: ")
    assert text in str(err)


def test_bad_datetime_names_line(tmp_path):
    lines = DATED_LINES[:1] + ["9.0,2011-13-45 25:00:00 UTC,-73.99,40.73,-73.98,40.75,1,7"]
    path = _write(tmp_path / "dated.csv", lines)
    with pytest.raises(data.MalformedRowError, match=r"dated\.csv: line 2: bad_datetime: pickup_datetime="):
        data.scan_files([path])


def test_training_stops_on_a_malformed_line(tmp_path, capsys):
    from trainer import task

    good = synth.write_csv(tmp_path / "train.csv", 300, seed=1)
    lines = good.read_text().splitlines()
    lines[41] = lines[41].replace(",", ",x", 1)
    good.write_text("\n".join(lines) + "\n")
    code = task.main([f"--train_data_paths={good}", f"--eval_data_paths={good}", f"--output_dir={tmp_path / 'out'}"])
    assert code == task.EXIT_DATA
    err = capsys.readouterr().err
    assert f"{good}: line 42: not_a_number: pickuplon='x" in err
    assert not (tmp_path / "out" / "export").exists()


IMPLAUSIBLE_LINES = [
    "12.0,-73.987625,40.750617,-73.971163,40.78518,1,0",  # fine
    "9.5,0,0,-73.971163,40.78518,1,1",  # outside_nyc (pickup at 0,0)
    "9.5,-73.98,40.75,-72.50,40.78,1,2",  # outside_nyc (dropoff lon)
    "9.5,-73.98,40.75,-73.97,41.10,1,3",  # outside_nyc (dropoff lat)
    "0,-73.98,40.75,-73.97,40.78,1,4",  # fare_out_of_range (zero)
    "-3.5,-73.98,40.75,-73.97,40.78,1,5",  # fare_out_of_range (negative)
    "612.5,-73.98,40.75,-73.97,40.78,1,6",  # fare_out_of_range (too high)
    "500,-73.98,40.75,-73.97,40.78,1,7",  # fine: the upper bound is included
    "7.0,-73.98,40.75,-73.97,40.78,0,8",  # passengers_out_of_range
    "7.0,-73.98,40.75,-73.97,40.78,9,9",  # passengers_out_of_range
    "5.0,-73.98,40.75,-73.98,40.75,1,10",  # zero_length_trip
    "5.0,-73.98,40.75,-73.97995,40.75004,1,11",  # zero_length_trip (within 1e-4 degrees)
    "5.0,-73.98,40.75,-73.98,40.7502,1,12",  # fine
    "4.5,-73.96362,40.774363,-73.953485,40.772665,6,13",  # fine
]


@pytest.mark.parametrize("cache", [False, True])
def test_implausible_rows_are_counted_and_dropped(tmp_path, cache):
    path = _write(tmp_path / "mixed.csv", IMPLAUSIBLE_LINES)
    scan = data.scan_files([path])
    assert scan.rows == 14
    assert scan.dropped == {
        schema.REASON_OUTSIDE_NYC: 3,
        schema.REASON_FARE: 3,
        schema.REASON_PASSENGERS: 2,
        schema.REASON_ZERO_TRIP: 2,
    }
    assert scan.plausible == 4
    # The streaming pipeline drops exactly those rows in training mode...
    ds = data.make_dataset(scan, 3, training=True, cache=cache, seed=0)
    labels = sorted(float(x) for _, label in ds.take(20) for x in label.numpy())
    assert set(labels) == {12.0, 500.0, 5.0, 4.5}
    # ...and keeps every parseable row, with a plausibility mask, for evaluation.
    rows = list(data.make_dataset(scan, 100, training=False, with_mask=True, cache=cache))
    assert len(rows) == 1
    _, label, mask = rows[0]
    assert label.shape == (14,)
    assert mask.numpy().tolist() == [
        schema.check_row(line.split(","), schema.LAB)[0] is None for line in IMPLAUSIBLE_LINES
    ]


def test_tf_mask_agrees_with_schema_on_synthetic_rows(tmp_path):
    path = synth.write_csv(tmp_path / "s.csv", 5000, layout="dated", seed=4, dirty_fraction=0.2)
    scan = data.scan_files([str(path)])
    cols = data.read_columns(scan)
    expected = [schema.check_row(line.split(","), schema.DATED)[0] is None for line in path.read_text().splitlines()]
    assert cols["_plausible"].numpy().tolist() == expected
    assert int(cols["_plausible"].numpy().sum()) == scan.plausible


def test_header_and_encoding_errors(tmp_path):
    bad_header = _write(tmp_path / "h.csv", LAB_LINES, "fare_amount,lon,lat,dlon,dlat,n,key")
    with pytest.raises(data.MalformedRowError, match=r"h\.csv: line 1: bad_header: header .* matches no layout"):
        data.scan_files([bad_header])
    dated_header = _write(tmp_path / "d.csv", DATED_LINES, ",".join(schema.DATED.columns))
    with pytest.raises(data.MalformedRowError, match="line 1: bad_header: header is the dated layout, expected lab"):
        data.scan_files([dated_header], layout="lab")
    binary = tmp_path / "b.csv"
    binary.write_bytes(("\n".join(LAB_LINES) + "\n").encode() + b"\xff\xfe,1,2\n")
    with pytest.raises(data.MalformedRowError, match=r"b\.csv: line 4: binary_data"):
        data.scan_files([str(binary)])
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(data.DataError, match="file is empty"):
        data.scan_files([str(empty)])
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(("\r\n".join(LAB_LINES) + "\r\n").encode())
    scan = data.scan_files([str(crlf)])
    assert scan.rows == 3 and _rows(scan)[schema.LABEL] == [12.0, 4.5, 45.0]


def _row_keys(columns: dict) -> list[tuple]:
    """Rows as tuples of float32 numbers, label first (the synthetic rows differ in their coordinates)."""
    names = [schema.LABEL, *schema.LAB.serving_fields]
    return list(zip(*(np.asarray(columns[k], np.float32).tolist() for k in names)))


def _line_keys(lines: list[str]) -> list[tuple]:
    """The same tuples computed from CSV lines in Python (float64 parse, then float32, as decode_csv + cast)."""
    return [tuple(np.float32(float(v)).item() for v in line.split(",")[:6]) for line in lines]


@pytest.mark.parametrize(
    "header,line_end,final_newline",
    [(False, "\n", True), (True, "\n", False), (True, "\r\n", True), (False, "\r\n", False)],
)
def test_block_reading_keeps_every_row_once(tmp_path, monkeypatch, header, line_end, final_newline):
    """Lines cut by block boundaries are joined again: one pass yields the file's rows, each once."""
    monkeypatch.setattr(data, "BLOCK_BYTES", 1000)  # ~20 lines per block, most lines split across two
    source = synth.write_csv(tmp_path / "s.csv", 3000, layout="lab", seed=7, header=header)
    lines = source.read_text().splitlines()
    path = tmp_path / "blocks.csv"
    path.write_bytes((line_end.join(lines) + (line_end if final_newline else "")).encode())
    scan = data.scan_files([str(path)])
    file_scan = scan.files[0]
    assert file_scan.size == path.stat().st_size and file_scan.final_newline is final_newline
    assert file_scan.crlf is (line_end == "\r\n")
    assert file_scan.header_bytes == (len(lines[0]) + len(line_end) if header else 0)

    data_lines = lines[1:] if header else lines
    # Evaluation: every parseable row, in file order.
    assert _row_keys(_rows(scan)) == _line_keys(data_lines)

    # Training: one pass's worth of rows is each plausible row exactly once, and mixed.
    plausible = [line for line in data_lines if schema.check_row(line.split(","), schema.LAB)[0] is None]
    assert len(plausible) == scan.plausible < len(data_lines)
    ds = data.make_dataset(scan, 64, training=True, cache=False, seed=3, shuffle_buffer=64)
    seen: list[tuple] = []
    for features, label in ds:
        assert label.shape[0] == 64  # full batches although implausible rows were dropped
        seen.extend(_row_keys({**features, schema.LABEL: label}))
        if len(seen) >= len(plausible):
            break
    first_pass = seen[: len(plausible)]
    assert Counter(first_pass) == Counter(_line_keys(plausible))
    assert first_pass != _line_keys(plausible)  # not in file order


@pytest.mark.parametrize("block_bytes", [16, 46, 47, 48, 140, 141, 142, 1 << 20])
def test_block_edges_exact_multiples_long_lines_and_header_only_files(tmp_path, monkeypatch, block_bytes):
    """Bodies that are whole numbers of blocks, lines longer than a block, a file with only a header."""
    monkeypatch.setattr(data, "BLOCK_BYTES", block_bytes)
    body = "\n".join(LAB_LINES) + "\n"
    assert len(body.encode()) == 141  # = 3 × 47: 47, 141 and their neighbours hit the block edges
    a = _write(tmp_path / "a.csv", LAB_LINES)
    only_header = tmp_path / "b.csv"
    only_header.write_text(",".join(schema.LAB.columns) + "\n")
    c = _write(tmp_path / "c.csv", LAB_LINES[::-1], ",".join(schema.LAB.columns))
    scan = data.scan_files([a, str(only_header), c])
    assert [f.rows for f in scan.files] == [3, 0, 3]
    assert _rows(scan)[schema.LABEL] == [12.0, 4.5, 45.0, 45.0, 4.5, 12.0]
    assert data.read_columns(scan)[schema.LABEL].numpy().tolist() == [12.0, 4.5, 45.0, 45.0, 4.5, 12.0]


def _batch_rows(features, label, mask=None) -> list[tuple]:
    """A batch as row tuples: label, the serving fields in sorted order, then the mask if any."""
    columns = [label.numpy().tolist()] + [features[k].numpy().tolist() for k in sorted(features)]
    if mask is not None:
        columns.append(mask.numpy().tolist())
    return list(zip(*columns))


@pytest.mark.parametrize("layout", ["lab", "dated"])
def test_packed_cache_yields_what_streaming_yields(layout, request):
    """The course's files: the packed in-memory rows give the batches the files give when streamed."""
    train, valid = request.getfixturevalue(f"{layout}_csvs")
    scan = data.scan_files([str(train), str(valid)])
    assert scan.layout.name == layout and scan.plausible < scan.rows  # the course data has implausible rows

    # One pass in file order, every parseable row with its mask: the same batches, value for value.
    def batches(cache):
        ds = data.make_dataset(scan, 1000, training=False, with_mask=True, cache=cache)
        return [_batch_rows(*batch) for batch in ds]

    streamed = batches(cache=False)
    assert batches(cache=True) == streamed
    assert sum(len(b) for b in streamed) == scan.rows

    # Training: each pass is every plausible row once, in a new random order, in full batches.
    plausible = sorted(row[:-1] for batch in streamed for row in batch if row[-1])
    assert len(plausible) == scan.plausible
    ds = data.make_dataset(scan, 256, training=True, cache=True, seed=5)
    seen: list[tuple] = []
    for features, label in ds:
        assert label.shape[0] == 256
        seen.extend(_batch_rows(features, label))
        if len(seen) >= 2 * scan.plausible:
            break
    passes = [seen[: scan.plausible], seen[scan.plausible : 2 * scan.plausible]]
    assert sorted(passes[0]) == sorted(passes[1]) == plausible
    assert passes[0] != passes[1] and passes[0] != sorted(passes[0])


def test_packed_rows_cost_four_bytes_a_number_and_eight_for_the_pickup_time(tmp_path):
    lab = data.scan_files([str(synth.write_csv(tmp_path / "lab.csv", 2000, layout="lab", seed=3))])
    dated = data.scan_files([str(synth.write_csv(tmp_path / "dated.csv", 2000, layout="dated", seed=3))])
    for scan, bytes_a_row in ((lab, 24), (dated, 32)):
        columns = data.pack_rows(scan)
        assert list(columns) == [schema.LABEL, *scan.layout.serving_fields]
        assert sum(c.numpy().nbytes for c in columns.values()) == scan.plausible * bytes_a_row
        # Keeping the implausible rows adds their rows and a one-byte mask.
        kept = data.pack_rows(scan, keep_implausible=True)
        assert sum(c.numpy().nbytes for c in kept.values()) == scan.rows * (bytes_a_row + 1)
        assert int(kept[data.PLAUSIBLE].numpy().sum()) == scan.plausible


def test_pickup_time_packs_to_seconds_and_back_to_the_same_text():
    stamps = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(1900, 3, 1, 0, 0, 1, tzinfo=UTC),
        datetime(2000, 2, 29, 12, 30, 5, tzinfo=UTC),
        datetime(2012, 9, 4, 0, 0, 0, tzinfo=UTC),
        datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC),
    ]
    rng = np.random.default_rng(0)
    start = int(datetime(2009, 1, 1, tzinfo=UTC).timestamp())
    stamps += [datetime.fromtimestamp(int(s), UTC) for s in rng.integers(start, start + 7 * 365 * 86400, 2000)]
    texts = [s.strftime(schema.DATETIME_FORMAT) for s in stamps]
    seconds = data.pickup_seconds(tf.constant(texts))
    assert seconds.dtype == tf.int64
    assert seconds.numpy().tolist() == [int(s.timestamp()) for s in stamps]
    assert [t.decode() for t in data.pickup_text(seconds).numpy()] == texts


def test_packing_files_that_changed_since_the_scan_is_an_error(tmp_path):
    path = _write(tmp_path / "lab.csv", LAB_LINES)
    scan = data.scan_files([path])
    # Same size, but the first fare is now negative: one plausible row fewer than counted.
    _write(tmp_path / "lab.csv", [LAB_LINES[0].replace("12.0", "-2.0", 1), *LAB_LINES[1:]])
    with pytest.raises(data.DataError, match="the rows differ from the 3 the scan counted"):
        data.pack_rows(scan)


def _scan_fields(scan: data.FileScan) -> tuple:
    return (
        scan.layout.name,
        scan.has_header,
        scan.rows,
        dict(scan.dropped),
        scan.size,
        scan.header_bytes,
        scan.final_newline,
        scan.crlf,
    )


@pytest.mark.parametrize("layout", ["lab", "dated"])
def test_block_scan_equals_the_line_scan(layout, request, tmp_path):
    """Local files are scanned in blocks; what the scan learns is what the line-by-line scan learns —
    on the course files, with a header, CRLF line ends, no final newline and implausible rows."""
    train, _ = request.getfixturevalue(f"{layout}_csvs")
    lines = train.read_bytes().splitlines(keepends=True)
    lay = schema.get_layout(layout)
    header = (",".join(lay.columns) + "\n").encode()
    variants = {
        "course": b"".join(lines),
        "header": header + b"".join(lines),
        "crlf": b"".join(line.replace(b"\n", b"\r\n") for line in lines),
        "no_final_newline": b"".join(lines).rstrip(b"\n"),
        "key_with_control_byte": b"".join(lines[:-1]) + lines[-1].rstrip(b"\n") + b"\x7f\n",
    }
    for name, content in variants.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(content)
        fast = data.scan_file(str(path))
        assert _scan_fields(fast) == _scan_fields(data._scan_lines(str(path), None)), name
        assert fast.rows == len(lines) and sum(fast.dropped.values()) > 0


@pytest.mark.parametrize(
    "bad, reason",
    [
        (b"\n", schema.REASON_COLUMNS),  # a blank line
        (b"12.0,abc,40.7,-73.9,40.8,1,k\n", schema.REASON_NOT_A_NUMBER),
        (b"fare_amount,pickuplon,pickuplat,dropofflon,dropofflat,passengers,key\n", schema.REASON_NOT_A_NUMBER),
        (b"12.0,-73.9,40.7\n", schema.REASON_COLUMNS),
    ],
)
def test_block_scan_names_the_first_bad_line_as_the_line_scan_does(bad, reason, lab_csvs, tmp_path):
    lines = lab_csvs[0].read_bytes().splitlines(keepends=True)
    path = tmp_path / "bad.csv"
    path.write_bytes(b"".join(lines[:100]) + bad + b"".join(lines[100:]))
    with pytest.raises(data.MalformedRowError) as info:
        data.scan_file(str(path))
    assert info.value.line == 101 and info.value.reason == reason
