"""The generated BigQuery SQL against the local checks, on the same rows.

The SQL from ``trainer.validate_sql`` is transpiled by sqlglot (BigQuery → DuckDB) and run in DuckDB
over tables of STRING columns holding the course's rows (``../shared/data``, else synthetic rows)
plus injected faults. Every row's reason must be the one ``validate_rows.classify_line`` gives the
same fields as a CSV line, and the counts per reason must agree. Details are compared exactly where
the SQL can spell them as Python does (see ``_detail_matches``).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from tests.fixtures.data import shared_data_dir
from trainer import schema, synth, validate_rows
from trainer import validate_sql as vsql

duckdb = pytest.importorskip("duckdb")
sqlglot = pytest.importorskip("sqlglot")

SOURCES = {"train": "src_train", "valid": "src_valid"}


def _duck(sql: str) -> str:
    (out,) = sqlglot.transpile(sql, read="bigquery", write="duckdb")
    return out


def _course_rows(layout: schema.Layout, split: str) -> list[list[str]]:
    shared = shared_data_dir()
    path = shared / layout.name / f"taxi-{split}.csv" if shared else None
    if path is not None and path.is_file():
        lines = path.read_text().splitlines()
    else:
        lines = [",".join(r) for r in synth.iter_rows(2000, layout.name, seed=7 if split == "train" else 8)]
    rows = [line.split(",") for line in lines if line.strip()]
    return [r for r in rows if len(r) == len(layout.columns)]


def _faults(layout: schema.Layout, good: list[str]) -> list[list[str]]:
    """Rows breaking each check (alone or in combination), built from one clean row."""
    col = layout.columns.index
    out = []

    def row(**changes: str) -> None:
        fields = list(good)
        for name, text in changes.items():
            fields[col(name)] = text
        fields[col(schema.KEY)] = f"fault-{len(out)}"
        out.append(fields)

    lon, lat, pas = layout.pickup_lon, layout.pickup_lat, layout.passengers
    dlon, dlat = layout.dropoff_lon, layout.dropoff_lat
    for text in ("abc", "", "1.2.3", "0x10", "1__0", "_1", "1e", "--1", "nan nan"):
        row(**{lon: text})
    for text in ("nan", "NaN", "-inf", "+Infinity", "INF", "1e999", "-1e400", " nan "):
        row(**{lat: text})
    for text in (" -73.99 ", "-7_3.99", "\t-73.99", "-73.99e0", "-.7399e2", "-73.", "+40.7"):
        row(**{lon: text})  # numbers Python reads (most outside NYC or fine)
    row(**{schema.LABEL: "x", lon: "nan"})  # the first column's reason wins
    row(**{lon: "nan", lat: "x"})
    for text in ("-80.0", "-80", "-74.31", "-72.89", "0", "1e-05", "-1e+20", "-74.3", "-72.9"):
        row(**{lon: text})
        row(**{dlon: text})
    for text in ("40.44", "41.01", "40.45", "41.0", "-40.7"):
        row(**{lat: text})
        row(**{dlat: text})
    for text in ("0", "0.0", "-5", "500", "500.01", "1e3", "0.01"):
        row(**{schema.LABEL: text})
    for text in ("0", "7", "6", "1", "2.5", "-1"):
        row(**{pas: text})
    row(**{dlon: good[col(lon)], dlat: good[col(lat)]})  # zero-length trip
    row(**{dlon: str(float(good[col(lon)]) + 5e-5), dlat: good[col(lat)]})
    row(**{dlon: str(float(good[col(lon)]) + 2e-4), dlat: good[col(lat)]})
    row(**{lon: "-80", pas: "0", schema.LABEL: "0"})  # rules in order: outside_nyc first
    row(**{pas: "9", dlon: good[col(lon)], dlat: good[col(lat)]})
    row(**{lon: "a\x01b"})  # control characters
    row(**{schema.KEY: "k\x7f"})
    row(**{schema.LABEL: " Fare_Amount "})  # a header of another layout
    header = dict(zip(layout.columns, layout.columns))
    header[schema.LABEL] = " fare_amount"
    row(**header)
    out[-1][col(schema.KEY)] = schema.KEY  # a header of this layout: counted, not quarantined
    if layout.pickup_datetime:
        dt = layout.pickup_datetime
        for text in (
            "2011-01-28 20:42:59",
            "2011-01-28T20:42:59 UTC",
            "2011-13-01 00:00:00 UTC",
            "2011-02-29 00:00:00 UTC",
            "2012-02-29 00:00:00 UTC",
            "1900-02-29 00:00:00 UTC",
            "2000-02-29 00:00:00 UTC",
            "2011-04-31 00:00:00 UTC",
            "2011-01-28 24:00:00 UTC",
            "2011-01-28 20:60:00 UTC",
            "2011-01-28 20:42:60 UTC",
            "2011-01-28 20:42:61 UTC",
            "0000-01-01 00:00:00 UTC",
            "2011-1-2 3:4:5 utc",
            " 2011-01- 8  20:42:59   UTC ",
            "2011-01-28 20:42:59 UTC x",
            "yesterday",
            "",
        ):
            row(**{dt: text})
        row(**{dt: "bad", schema.LABEL: "x"})  # the label column comes first
        row(**{dt: "bad", lon: "x"})
    return out


def _expected(fields: list[str], layout: schema.Layout) -> tuple[str | None, str]:
    return validate_rows.classify_line(",".join(fields).encode(), layout)


def _run(layout: schema.Layout, rows: dict[str, list[list[str]]]):
    con = duckdb.connect(config={"threads": 1})
    columns = ", ".join(f'"{c}" VARCHAR' for c in layout.columns)
    marks = ", ".join("?" for _ in layout.columns)
    for split, table in SOURCES.items():
        con.execute(f"CREATE TABLE {table} ({columns})")
        con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows[split])
    sql = vsql.validation_sql(layout, SOURCES, "quarantine_rows", "gs://bucket/run")
    for statement in (sql.checked, sql.quarantine):  # the script's own statements, in order
        con.execute(_duck(statement))
    return con, sql


def _detail_matches(got: str, want: str) -> bool:
    """Exact, except a float the engine prints differently from Python's repr (e.g. 1e-05)."""
    if got == want:
        return True
    number = r"-?[0-9.]+(?:e[+-]?[0-9]+)?"
    shape = re.escape(re.sub(number, "#", want)).replace("\\#", number)
    if not re.fullmatch(shape, got):
        return False
    return all(
        math.isclose(float(a), float(b)) for a, b in zip(re.findall(number, got), re.findall(number, want), strict=True)
    )


@pytest.mark.parametrize("layout", [schema.LAB, schema.DATED], ids=lambda lay: lay.name)
def test_sql_reasons_equal_the_local_checks(layout):
    train, valid = _course_rows(layout, "train"), _course_rows(layout, "valid")
    assert train and valid
    rows = {"train": train + _faults(layout, train[0]), "valid": valid + _faults(layout, valid[0])}
    con, sql = _run(layout, rows)

    checked = con.execute(f"SELECT * FROM {vsql.CHECKED_TABLE}").fetchall()
    width = len(layout.columns)
    got = Counter((r[0], tuple(r[1 : 1 + width]), r[1 + width]) for r in checked)
    want = Counter()
    for split, split_rows in rows.items():
        for fields in split_rows:
            want[(split, tuple(fields), _expected(fields, layout)[0])] += 1
    assert got == want

    mismatched = []
    for r in checked:
        fields, reason, detail = list(r[1 : 1 + width]), r[1 + width], r[2 + width]
        expected = _expected(fields, layout)[1]
        if reason not in (None, vsql.REASON_HEADER) and not _detail_matches(detail, expected):
            mismatched.append((fields, reason, detail, expected))
    assert not mismatched

    # every injected kind of fault was seen, so the comparison covered each check
    seen = {reason for _, _, reason in got}
    assert set(schema.IMPLAUSIBLE_REASONS) <= seen
    assert {schema.REASON_NOT_A_NUMBER, schema.REASON_NON_FINITE, schema.REASON_BINARY} <= seen
    assert {schema.REASON_BAD_HEADER, vsql.REASON_HEADER, None} <= seen
    if layout.pickup_datetime:
        assert schema.REASON_BAD_DATETIME in seen

    counts = Counter()
    for split, reason, n in con.execute(_duck(sql.counts)).fetchall():
        counts[(split, reason)] = n
    per_reason = Counter()
    for (split, _, reason), n in got.items():
        per_reason[(split, reason)] += n
    assert counts == per_reason


@pytest.mark.parametrize("layout", [schema.LAB, schema.DATED], ids=lambda lay: lay.name)
def test_quarantine_and_clean_rows_partition_the_input(layout):
    rows = {split: _course_rows(layout, split)[:200] for split in SOURCES}
    rows = {split: r + _faults(layout, r[0]) for split, r in rows.items()}
    con, sql = _run(layout, rows)
    width = len(layout.columns)

    quarantined = con.execute("SELECT * FROM quarantine_rows").fetchall()
    assert [d[0] for d in con.description] == ["split", "reason", "detail", *layout.columns]
    for split, split_rows in rows.items():
        clean_sql = sql.exports[split].split(" AS\n", 1)[1]
        assert clean_sql == vsql.clean_select(layout, split)
        clean = [list(r) for r in con.execute(_duck(clean_sql)).fetchall()]
        bad = [list(r[3 : 3 + width]) for r in quarantined if r[0] == split]
        expected = [_expected(f, layout)[0] for f in split_rows]
        assert Counter(map(tuple, clean)) == Counter(tuple(f) for f, e in zip(split_rows, expected) if e is None)
        assert Counter(map(tuple, bad)) == Counter(
            tuple(f) for f, e in zip(split_rows, expected) if e not in (None, "header")
        )
        # clean rows leave in the layout's column order, as the local clean file holds them
        assert all(schema.check_row(f, layout) == (None, "") for f in clean)
    assert {r[1] for r in quarantined} <= set(
        schema.MALFORMED_REASONS + schema.IMPLAUSIBLE_REASONS + schema.LINE_REASONS
    )


def test_the_script_holds_each_statement_once():
    sql = vsql.validation_sql(schema.DATED, {"train": "p.d.t1", "valid": "p.d.t2"}, "p.d.quarantine", "gs://b/x/")
    script = sql.script
    for statement in (sql.checked, sql.quarantine, *sql.exports.values(), sql.counts):
        assert script.count(statement) == 1
    assert "uri = 'gs://b/x/train/train-*.csv'" in sql.exports["train"]
    assert "header = false" in sql.exports["valid"]
    # BigQuery's own dialect parses every statement of the script
    assert len(sqlglot.parse(script, read="bigquery")) == 5


def test_sql_carries_no_hand_written_ranges():
    """Ranges come from schema.RULES: changing a rule changes the SQL."""
    sql = vsql.checked_select(schema.LAB, SOURCES)
    for rule in schema.RULES:
        if isinstance(rule, schema.RangeRule):
            assert f"CAST({float(rule.low)!r} AS FLOAT64)" in sql
            assert f"CAST({float(rule.high)!r} AS FLOAT64)" in sql
    assert sql.count(f"'{schema.REASON_OUTSIDE_NYC}'") == 4  # two rules of two fields each


def test_typed_columns_read_as_extracted_text():
    sql = vsql.checked_select(schema.DATED, SOURCES, {"pickup_datetime": "TIMESTAMP", "passenger_count": "INT64"})
    assert f"FORMAT_TIMESTAMP('{schema.DATETIME_FORMAT}', `pickup_datetime`, 'UTC')" in sql
    assert "CAST(`passenger_count` AS STRING)" in sql


def test_export_needs_a_bucket():
    with pytest.raises(ValueError, match="gs://"):
        vsql.export_uri("/tmp/out", "train")


# -- one table split in the warehouse by ingest's rule ------------------------------------------------
def test_crc32_function_is_zlibs(tmp_path):
    """The script's JavaScript CRC-32, run by node, equals zlib.crc32 of the key's UTF-8 bytes."""
    import json
    import shutil
    import subprocess
    import zlib

    node = shutil.which("node")
    assert node, "node is needed to run the split's JavaScript function (.ci/run installs nodejs)"
    keys = [r[-1] for r in _course_rows(schema.DATED, "valid")[:300]]
    keys += ["", "k", "fault-17", "é", "日本", "\U0001f695 taxi", "a,b,c", "x" * 200]
    script = tmp_path / "crc.js"
    script.write_text(
        f"function crc32(text) {{{vsql.CRC32_JS}}}\n"
        "const keys = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        "process.stdout.write(JSON.stringify(keys.map(crc32)));\n"
    )
    done = subprocess.run([node, str(script)], input=json.dumps(keys), capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [zlib.crc32(k.encode()) for k in keys]


@pytest.mark.parametrize("layout", [schema.LAB, schema.DATED], ids=lambda lay: lay.name)
def test_one_table_splits_as_ingest_does(layout):
    """A table holding both splits: every row lands in the split ingest gives its line, and its
    reason is the local check's."""
    import zlib

    from trainer import ingest_split

    rows = _course_rows(layout, "train")[:1500] + _faults(layout, _course_rows(layout, "train")[0])
    for fields in rows[:40:4]:
        fields[layout.columns.index(schema.KEY)] = "  "  # no key: the whole line is hashed
    con = duckdb.connect(config={"threads": 1})
    con.create_function(vsql.CRC32_FUNCTION, lambda text: float(zlib.crc32(text.encode())), ["VARCHAR"], "DOUBLE")
    con.execute(f"CREATE TABLE src ({', '.join(f'{chr(34)}{c}{chr(34)} VARCHAR' for c in layout.columns)})")
    con.executemany(f"INSERT INTO src VALUES ({', '.join('?' for _ in layout.columns)})", rows)
    sql = vsql.validation_sql(layout, {vsql.SPLIT_BY_KEY: "src"}, "q", "gs://b/x", valid_fraction=0.2)
    assert sql.functions == (vsql.crc32_function(),) and sql.script.startswith("CREATE TEMP FUNCTION")
    assert set(sql.exports) == {"train", "valid"}
    con.execute(_duck(sql.checked))
    width = len(layout.columns)
    got = Counter(
        (r[0], tuple(r[1 : 1 + width]), r[1 + width])
        for r in con.execute(f"SELECT * FROM {vsql.CHECKED_TABLE}").fetchall()
    )
    want = Counter()
    for fields in rows:
        line = ",".join(fields).encode()
        split = "valid" if ingest_split.in_valid(zlib.crc32(ingest_split.row_key(line, layout)), 0.2) else "train"
        want[(split, tuple(fields), _expected(fields, layout)[0])] += 1
    assert got == want
    assert {s for s, _, _ in got} == {"train", "valid"}
