r"""The row checks as BigQuery Standard SQL, generated from ``trainer.schema``.

For a ``bq://`` source the checks run in the warehouse: one multi-statement script reads the
source tables once into a temporary table that carries, for every row, the first failing reason
and its detail (``reason`` NULL for a clean row), then writes the quarantine table, exports the
clean rows of each split to CSV shards in GCS (``EXPORT DATA``) and returns the counts per split
and reason as its result.

Source shape: one table per split whose columns are named as the layout's (``schema.LAB`` or
``schema.DATED`` column names; other columns are ignored). Columns are best STRING (the CSV loaded
as text, e.g. ``bq load --source_format=CSV`` with every column STRING), so that every malformed
value is seen as written. Typed columns are read as the text an extract job writes for them (a
TIMESTAMP as ``schema.DATETIME_FORMAT``, a number as its decimal text); NULL reads as an empty
field. A table has a fixed width, so ``wrong_column_count`` cannot occur; a row of column names (a
CSV header loaded as data) is counted as a header, as a header line is locally.

What is derived from the schema rather than written here:

* the order of the checks — control characters (``rowcheck.CONTROL``), header, then per
  column in layout order ``bad_datetime`` / ``not_a_number`` / ``non_finite`` (as ``check_row``),
  then ``schema.RULES`` in order, each range rule's fields in order;
* the ranges and open/closed ends of each ``RangeRule``, the ``ZeroTripRule`` threshold, and the
  detail text: rule details are rendered from their templates, malformed-row details from what
  ``check_row``/``classify_line`` say about a probe row;
* the pickup-time grammar: the regular expression Python's ``strptime`` builds for
  ``schema.DATETIME_FORMAT`` (stdlib ``_strptime``), plus the calendar checks ``datetime`` makes.

Numbers follow Python's ``float()`` grammar (surrounding whitespace, ``_`` between digits,
``inf``/``infinity``/``nan`` in any case); a text of that grammar that the cast cannot hold (e.g.
``1e999``) is ``non_finite``, as Python reads it as infinity.

Where the SQL and the local checks can differ (reasons are the same otherwise; the tests compare
them row by row in DuckDB):

* digits and whitespace outside ASCII: Python's ``float()`` and ``strptime`` read non-ASCII
  decimal digits (e.g. Arabic-Indic); RE2's ``\d`` does not, so such a field is
  ``not_a_number``/``bad_datetime`` here;
* details quote a field the way ``repr`` does only for text without quotes, backslashes or
  unprintable characters, and print an out-of-range value as ``-80.0`` when it is integral but
  otherwise as the engine's shortest text of the double (DuckDB's matches ``repr``; BigQuery's
  may spell exponents differently, e.g. for ``1e-05``);
* ``1e-999``-like underflows: Python reads 0.0; an engine whose cast refuses them reports
  ``non_finite``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from trainer import rowcheck, schema

CHECKED_TABLE = "taxifare_checked"
REASON_HEADER = "header"  # classify_line's verdict for a header of the layout: counted, not quarantined
SPLIT_COLUMN = "split"
REASON_COLUMN = "reason"
DETAIL_COLUMN = "detail"

# Whitespace as Python's str.strip()/float() see it (str.isspace), for RE2.
_WS = r"[\s\x0b\x1c-\x1f\x85\pZ]"
_DIGITS = r"\d(?:_?\d)*"
_SPECIAL = r"[+-]?(?:inf|infinity|nan)"
_DECIMAL = rf"[+-]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?"
_NUMBER_RE = rf"(?i)^{_WS}*(?:{_SPECIAL}|{_DECIMAL}){_WS}*$"
_SPECIAL_RE = rf"(?i)^{_WS}*{_SPECIAL}{_WS}*$"
_STRIP_RE = rf"^{_WS}+|{_WS}+$"

# One source table split into train and valid in the warehouse, by the rule ingest splits a CSV
# with (``ingest_split.row_key`` / ``in_valid``): zlib's CRC-32 of the row's key, bucketed.
# BigQuery has no CRC-32, so the script defines it as a JavaScript function (a FLOAT64 return:
# JavaScript functions cannot return INT64, and a double holds 32 bits exactly).
SPLIT_BY_KEY = "*"  # the ``sources`` key of a table that holds both splits
CRC32_FUNCTION = "taxifare_crc32"
CRC32_JS = """
var bytes = unescape(encodeURIComponent(text));
var crc = -1;
for (var i = 0; i < bytes.length; i++) {
  crc ^= bytes.charCodeAt(i);
  for (var k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xEDB88320 & -(crc & 1));
}
return (crc ^ -1) >>> 0;
"""
_KEY_STRIP_RE = r"^[ \t\n\r\x0b\x0c]+|[ \t\n\r\x0b\x0c]+$"  # what bytes.strip() removes

_PROBE = "Probe7q"  # a text that is no number, no date, and in no column name


def _literal(text: str) -> str:
    """A BigQuery string literal (raw, so regular expressions keep their backslashes)."""
    if "'" in text or "\n" in text or text.endswith("\\"):
        escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
        return f"'{escaped}'"
    return f"r'{text}'" if "\\" in text else f"'{text}'"


def _ident(name: str) -> str:
    return f"`{name}`"


def _float(value: float) -> str:
    return f"CAST({float(value)!r} AS FLOAT64)"


def _re2(pattern: str) -> str:
    """A Python pattern with literal control characters, spelled with RE2 escapes."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in pattern)


def _concat(*parts: str) -> str:
    return "CONCAT(" + ", ".join(parts) + ")"


def _pieces(detail: str, *inner: str) -> list[str]:
    """``detail`` cut around each of ``inner`` (in order, each once): the literal text between them."""
    pieces, rest = [], detail
    for part in inner:
        before, found, rest = rest.partition(part)
        if not found:
            raise ValueError(f"cannot derive a SQL detail from {detail!r}: {part!r} not found")
        pieces.append(before)
    return [*pieces, rest]


def _around(detail: str, inner: str, *sql: str) -> str:
    """The SQL text of ``detail`` with each occurrence-in-order of ``inner`` replaced by ``sql``."""
    pieces = _pieces(detail, *([inner] * len(sql)))
    out = [_literal(pieces[0])]
    for expr, piece in zip(sql, pieces[1:]):
        out += [expr, _literal(piece)]
    return _concat(*(p for p in out if p != "''"))


def _py_repr(expr: str) -> str:
    """Python's repr of a str, for texts without quotes, backslashes or unprintable characters."""
    return _concat('"\'"', expr, '"\'"')


def _py_float(expr: str) -> str:
    """Python's repr of a float: integral values as ``-80.0``, others as the engine's shortest text."""
    return (
        f"(CASE WHEN {expr} = TRUNC({expr}) AND ABS({expr}) < 1e16 "
        f"THEN CONCAT(CAST(CAST({expr} AS INT64) AS STRING), '.0') ELSE CAST({expr} AS STRING) END)"
    )


# -- the probes: the local checks' own words for each malformed case ---------------------------------
def _good_fields(layout: schema.Layout) -> list[str]:
    instance = schema.TEST_INSTANCES[layout.name]
    values = {schema.LABEL: "10.5", schema.KEY: "k", **{k: str(v) for k, v in instance.items()}}
    fields = [values[c] for c in layout.columns]
    if schema.check_row(fields, layout) != (None, ""):
        raise ValueError(f"the {layout.name} layout's test instance is no clean row: {fields}")
    return fields


def _row_detail(layout: schema.Layout, column: str, text: str, reason: str) -> str:
    fields = _good_fields(layout)
    fields[layout.columns.index(column)] = text
    got, detail = schema.check_row(fields, layout)
    if got != reason:
        raise ValueError(f"probe {column}={text!r}: check_row says {got!r}, expected {reason!r}")
    return detail


def _line_detail(layout: schema.Layout, raw: bytes, reason: str) -> str:
    got, detail = rowcheck.classify_line(raw, layout)
    if got != reason:
        raise ValueError(f"probe line {raw!r}: classify_line says {got!r}, expected {reason!r}")
    return detail


# -- expressions over one row -----------------------------------------------------------------------
def _text_expr(column: str, bq_type: str | None) -> str:
    """A source column as the text the local checks would read (NULL as an empty field)."""
    col = _ident(column)
    kind = (bq_type or "STRING").upper()
    if kind == "STRING":
        text = col
    elif kind == "TIMESTAMP":
        text = f"FORMAT_TIMESTAMP({_literal(schema.DATETIME_FORMAT)}, {col}, 'UTC')"
    elif kind == "DATETIME":
        text = f"FORMAT_DATETIME({_literal(schema.DATETIME_FORMAT)}, {col})"
    else:
        text = f"CAST({col} AS STRING)"
    return f"COALESCE({text}, '')"


def _value_col(column: str) -> str:
    return _ident(f"v__{column}")


def _stripped_col(column: str) -> str:
    """The column's text without surrounding whitespace (as ``str.strip``), computed once per row."""
    return _ident(f"s__{column}")


def _strip(expr: str) -> str:
    return f"REGEXP_REPLACE({expr}, {_literal(_STRIP_RE)}, '')"


_DATETIME_PARTS = ("Y", "m", "d", "H", "M", "S")


def _datetime_patterns() -> tuple[str, dict[str, str]]:
    """The strptime pattern for ``DATETIME_FORMAT`` as one RE2 pattern, and per directive a
    pattern capturing just that directive (for REGEXP_EXTRACT, which takes one group)."""
    import _strptime  # the pattern Python's own strptime matches with

    pattern = _strptime.TimeRE().pattern(schema.DATETIME_FORMAT)

    def only(keep: str | None) -> str:
        out = pattern
        for name in _DATETIME_PARTS:
            out = out.replace(f"(?P<{name}>", "(" if name == keep else "(?:")
        return out

    if "(?P<" in only(None):
        raise ValueError(f"{schema.DATETIME_FORMAT!r}: only %Y %m %d %H %M %S can be checked in SQL")
    parts = {name: f"(?i)^{only(name)}$" for name in _DATETIME_PARTS if f"(?P<{name}>" in pattern}
    return f"(?i)^{_WS}*{only(None)}{_WS}*$", parts


_PART_NAMES = {"Y": "year", "m": "month", "d": "day", "H": "hour", "M": "minute", "S": "second"}


def _datetime_col(column: str, part: str) -> str:
    return _ident(f"{_PART_NAMES[part]}__{column}")  # column names are case-insensitive


def _datetime_values(column: str) -> list[str]:
    """``parsed``'s integer columns, one per directive of the pickup time (NULL when it does not match)."""
    _, parts = _datetime_patterns()
    return [
        f"SAFE_CAST(TRIM(REGEXP_EXTRACT({_stripped_col(column)}, {_literal(regex)})) AS INT64) "
        f"AS {_datetime_col(column, name)}"
        for name, regex in parts.items()
    ]


def _datetime_ok(column: str) -> str:
    """``strptime`` accepts the text and ``datetime`` the values it read."""
    pattern, parts = _datetime_patterns()
    conds = [f"REGEXP_CONTAINS({_ident(column)}, {_literal(pattern)})"]
    y, m, d = (_datetime_col(column, n) if n in parts else None for n in ("Y", "m", "d"))
    if y:
        conds.append(f"{y} >= 1")  # datetime.MINYEAR
    if y and m and d:
        leap = f"(MOD({y}, 4) = 0 AND (MOD({y}, 100) != 0 OR MOD({y}, 400) = 0))"
        days = f"(CASE WHEN {m} = 2 THEN IF({leap}, 29, 28) WHEN {m} IN (4, 6, 9, 11) THEN 30 ELSE 31 END)"
        conds.append(f"{d} <= {days}")
    for name, top in (("H", 23), ("M", 59), ("S", 59)):
        if name in parts:
            conds.append(f"{_datetime_col(column, name)} <= {top}")
    return "(" + " AND ".join(conds) + ")"


def _number_value(column: str) -> str:
    return f"SAFE_CAST(REPLACE({_stripped_col(column)}, '_', '') AS FLOAT64)"


def _finite(column: str) -> str:
    value = _value_col(column)
    return (
        f"(NOT REGEXP_CONTAINS({_ident(column)}, {_literal(_SPECIAL_RE)}) AND {value} IS NOT NULL "
        f"AND NOT IS_INF({value}) AND NOT IS_NAN({value}))"
    )


def _range_holds(rule: schema.RangeRule, value: str) -> str:
    low = f"{value} {'>' if rule.low_open else '>='} {_float(rule.low)}"
    return f"({low} AND {value} <= {_float(rule.high)})"


def _rule_detail(template: str, field: str, value: str) -> str:
    out = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if literal:
            out.append(_literal(literal))
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"detail {template!r}: format specs have no SQL form")
        if name == "field":
            out.append(_literal(field))
        elif name == "value":
            out.append(_py_float(value))
        else:
            raise ValueError(f"detail {template!r}: unknown field {name!r}")
    return _concat(*out) if len(out) > 1 else out[0]


def _checks(layout: schema.Layout) -> list[tuple[str, str, str]]:
    """(condition that the row fails, reason, detail) in the order the local checks report."""
    checks = []
    line = "CONCAT(" + ", ',', ".join(_ident(c) for c in layout.columns) + ")"
    control = _re2(rowcheck.CONTROL.pattern)
    probe = _line_detail(layout, b"abcdef\x01", schema.REASON_BINARY)
    char = f"REGEXP_EXTRACT({line}, {_literal(control)})"
    hexed = f"TO_HEX(CAST({char} AS BYTES))"
    position = f"CAST(REGEXP_INSTR({line}, {_literal(control)}) AS STRING)"
    pieces = _pieces(probe, "'\\x01'", "7")
    detail = _concat(_literal(pieces[0]), _literal("'\\x"), hexed, '"\'"', _literal(pieces[1]), position)
    checks.append((f"REGEXP_CONTAINS({line}, {_literal(control)})", schema.REASON_BINARY, detail))

    stripped = [_stripped_col(c) for c in layout.columns]
    is_header = f"LOWER({stripped[0]}) = {_literal(schema.LABEL)}"
    exact = " AND ".join(f"{s} = {_literal(c)}" for s, c in zip(stripped, layout.columns))
    checks.append((f"({is_header} AND {exact})", REASON_HEADER, "''"))
    names = ",".join(["Fare_Amount"] + [_PROBE] * (len(layout.columns) - 1))
    probe = _line_detail(layout, names.encode(), schema.REASON_BAD_HEADER)
    joined = "CONCAT(" + ", ',', ".join(stripped) + ")"
    checks.append((is_header, schema.REASON_BAD_HEADER, _around(probe, repr(names), _py_repr(joined))))

    for column in layout.columns:
        if column == schema.KEY:
            continue
        col = _ident(column)
        if column == layout.pickup_datetime:
            probe = _row_detail(layout, column, _PROBE, schema.REASON_BAD_DATETIME)
            checks.append(
                (f"NOT {_datetime_ok(column)}", schema.REASON_BAD_DATETIME, _around(probe, repr(_PROBE), _py_repr(col)))
            )
            continue
        probe = _row_detail(layout, column, _PROBE, schema.REASON_NOT_A_NUMBER)
        number = f"REGEXP_CONTAINS({col}, {_literal(_NUMBER_RE)})"
        checks.append((f"NOT {number}", schema.REASON_NOT_A_NUMBER, _around(probe, repr(_PROBE), _py_repr(col))))
        special = "-InFiNiTy"
        probe = _row_detail(layout, column, special, schema.REASON_NON_FINITE)
        checks.append(
            (f"NOT {_finite(column)}", schema.REASON_NON_FINITE, _around(probe, repr(special), _py_repr(col)))
        )

    for rule in schema.RULES:
        if isinstance(rule, schema.RangeRule):
            for field in rule.fields(layout):
                value = _value_col(field)
                checks.append(
                    (f"NOT {_range_holds(rule, value)}", rule.reason, _rule_detail(rule.detail, field, value))
                )
        elif isinstance(rule, schema.ZeroTripRule):
            near = [
                f"ABS({_value_col(a)} - {_value_col(b)}) < {_float(rule.min_degrees)}"
                for a, b in ((layout.pickup_lon, layout.dropoff_lon), (layout.pickup_lat, layout.dropoff_lat))
            ]
            checks.append(("(" + " AND ".join(near) + ")", rule.reason, _literal(rule.detail)))
        else:  # a new kind of rule needs its SQL form here
            raise TypeError(f"no SQL form for rule {rule!r}")
    return checks


# -- the statements -------------------------------------------------------------------------------
def crc32_function() -> str:
    """The statement that defines ``CRC32_FUNCTION`` for the script (BigQuery JavaScript UDF)."""
    return f'CREATE TEMP FUNCTION {CRC32_FUNCTION}(text STRING) RETURNS FLOAT64 LANGUAGE js AS r"""{CRC32_JS}"""'


def split_expr(layout: schema.Layout, valid_fraction: float) -> str:
    """The split of a row whose layout columns are text (``train``/``valid``): ingest's rule."""
    from trainer import ingest_split

    buckets, below = ingest_split.valid_buckets(valid_fraction)
    key = f"REGEXP_REPLACE({_ident(schema.KEY)}, {_literal(_KEY_STRIP_RE)}, '')"
    line = "CONCAT(" + ", ',', ".join(_ident(c) for c in layout.columns) + ")"
    crc = f"CAST({CRC32_FUNCTION}(IF({key} != '', {key}, {line})) AS INT64)"
    return f"IF(MOD({crc}, {buckets}) < {below}, 'valid', 'train')"


def checked_select(
    layout: schema.Layout,
    sources: dict[str, str],
    column_types: dict[str, str] | None = None,
    valid_fraction: float | None = None,
) -> str:
    """One SELECT over ``sources`` (split name → ``project.dataset.table``; or ``SPLIT_BY_KEY`` →
    one table split by ingest's rule with ``valid_fraction``): per row its split, the layout's
    columns as text, ``reason`` (NULL when clean, ``'header'`` for a header row) and ``detail``."""
    if not sources:
        raise ValueError("no source tables")
    types = column_types or {}
    columns = ", ".join(f"{_text_expr(c, types.get(c))} AS {_ident(c)}" for c in layout.columns)
    if SPLIT_BY_KEY in sources:
        if len(sources) != 1 or valid_fraction is None:
            raise ValueError("a table split by key is the only source, and needs valid_fraction")
        names = ", ".join(_ident(c) for c in layout.columns)
        union = (
            f"SELECT {split_expr(layout, valid_fraction)} AS {SPLIT_COLUMN}, {names} "
            f"FROM (SELECT {columns} FROM {_ident(sources[SPLIT_BY_KEY])})"
        )
    else:
        union = "\n  UNION ALL\n  ".join(
            f"SELECT {_literal(split)} AS {SPLIT_COLUMN}, {columns} FROM {_ident(table)}"
            for split, table in sources.items()
        )
    stripped = ", ".join(f"{_strip(_ident(c))} AS {_stripped_col(c)}" for c in layout.columns)
    values = [
        f"{_number_value(c)} AS {_value_col(c)}"
        for c in layout.columns
        if c != schema.KEY and c != layout.pickup_datetime
    ]
    if layout.pickup_datetime:
        values += _datetime_values(layout.pickup_datetime)
    checks = _checks(layout)
    reason = "CASE\n" + "".join(f"    WHEN {cond} THEN {_literal(r)}\n" for cond, r, _ in checks) + "  END"
    detail = "CASE\n" + "".join(f"    WHEN {cond} THEN {d}\n" for cond, _, d in checks) + "  END"
    out = ", ".join(_ident(c) for c in (SPLIT_COLUMN, *layout.columns))
    return (
        f"WITH source_rows AS (\n  {union}\n),\n"
        f"stripped AS (SELECT *, {stripped} FROM source_rows),\n"
        f"parsed AS (SELECT *, {', '.join(values)} FROM stripped)\n"
        f"SELECT {out},\n  {reason} AS {REASON_COLUMN},\n  {detail} AS {DETAIL_COLUMN}\nFROM parsed"
    )


def counts_select(checked: str = CHECKED_TABLE) -> str:
    """Rows per split and reason (reason NULL: clean rows; ``'header'``: header rows)."""
    return (
        f"SELECT {SPLIT_COLUMN}, {REASON_COLUMN}, COUNT(*) AS row_count FROM {checked} "
        f"GROUP BY {SPLIT_COLUMN}, {REASON_COLUMN} ORDER BY {SPLIT_COLUMN}, {REASON_COLUMN}"
    )


def quarantine_select(layout: schema.Layout, checked: str = CHECKED_TABLE) -> str:
    """The quarantined rows: split, reason, detail and the raw fields (``key`` names the row)."""
    cols = ", ".join(_ident(c) for c in (SPLIT_COLUMN, REASON_COLUMN, DETAIL_COLUMN, *layout.columns))
    return f"SELECT {cols} FROM {checked} WHERE {REASON_COLUMN} IS NOT NULL AND {REASON_COLUMN} != '{REASON_HEADER}'"


def clean_select(layout: schema.Layout, split: str, checked: str = CHECKED_TABLE) -> str:
    """The clean rows of ``split``, in the layout's column order."""
    cols = ", ".join(_ident(c) for c in layout.columns)
    return f"SELECT {cols} FROM {checked} WHERE {SPLIT_COLUMN} = {_literal(split)} AND {REASON_COLUMN} IS NULL"


@dataclass(frozen=True)
class ValidationSQL:
    """The statements of one validation in BigQuery; ``script`` runs them all as one job."""

    checked: str
    quarantine: str
    exports: dict[str, str]
    counts: str
    functions: tuple[str, ...] = ()  # what the statements call (the split's CRC-32)

    @property
    def script(self) -> str:
        statements = [*self.functions, self.checked, self.quarantine, *self.exports.values(), self.counts]
        return ";\n\n".join(statements) + ";\n"


def export_uri(prefix: str, split: str) -> str:
    """``gs://…/<split>/<split>-*.csv`` (BigQuery replaces the ``*`` with the shard number): each
    split a folder of shards, which the trainer reads as one split (``data.expand_paths``)."""
    if not prefix.startswith("gs://"):
        raise ValueError(f"export prefix {prefix!r}: EXPORT DATA writes to gs:// only")
    return f"{prefix.rstrip('/')}/{split}/{split}-*.csv"


def validation_sql(
    layout: schema.Layout,
    sources: dict[str, str],
    quarantine_table: str,
    export_prefix: str,
    column_types: dict[str, str] | None = None,
    valid_fraction: float | None = None,
) -> ValidationSQL:
    """The script: check every row once into a temporary table, write the quarantine table, export
    each split's clean rows as headerless CSV shards under ``export_prefix``, return the counts.
    With ``sources = {SPLIT_BY_KEY: table}`` the one table is split by ingest's rule first."""
    split_in_sql = SPLIT_BY_KEY in sources
    checked = f"CREATE TEMP TABLE {CHECKED_TABLE} AS\n{checked_select(layout, sources, column_types, valid_fraction)}"
    splits = ("train", "valid") if split_in_sql else tuple(sources)
    quarantine = f"CREATE OR REPLACE TABLE {_ident(quarantine_table)} AS\n{quarantine_select(layout)}"
    exports = {
        split: (
            f"EXPORT DATA OPTIONS (uri = {_literal(export_uri(export_prefix, split))}, format = 'CSV', "
            f"overwrite = true, header = false) AS\n{clean_select(layout, split)}"
        )
        for split in splits
    }
    functions = (crc32_function(),) if split_in_sql else ()
    return ValidationSQL(checked, quarantine, exports, counts_select(), functions)
