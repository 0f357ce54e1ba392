"""How each line of a split CSV is judged: the scalar check for one line, and the same verdicts for
whole blocks of lines at the speed of parsing.

``classify_line`` is the one definition of a line's verdict: UTF-8 text without control
characters, then a header (of the layout or not), then ``schema.check_row``.

``check_block`` gives the verdict of every line of a block of bytes. Lines whose verdict is
certain from vectorised checks go the fast way (numpy over the block's bytes, pyarrow to turn
number text into floats, the rules of ``schema.RULES`` over whole columns); every other line goes
through ``classify_line``. A line is certain only when it is printable ASCII (a "\\r" just before
its "\\n" allowed), has the layout's number of commas, ends with "\\n", every number field is
made of ``-``, ``.`` and digits only and pyarrow turns it into a finite float (on such text
pyarrow and Python's ``float`` accept the same strings and give the same float), and its pickup
time has the exact shape of ``schema.DATETIME_FORMAT`` with a real calendar date. Such a line is
clean when every rule holds; otherwise the first rule it breaks gives the reason and, through the
rule's own ``first_break``, the detail — what ``check_row`` says after parsing the same floats.
Anything else — blank lines, headers, spaces, exponents, ``nan``, non-ASCII text, control
characters, wrong column counts, a last line without newline — is judged by ``classify_line``
itself, so reasons and details have a single source.

``check_file_blocks`` reads a file in blocks cut at a newline and checks them on a pool of
threads (numpy and pyarrow release the GIL), a fixed number of blocks in flight, results in order.
"""

from __future__ import annotations

import base64
import ctypes
import functools
import json
import re
import sys
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainer import schema
from trainer.config import usable_cores

# Blocks of this size keep every core busy while a few blocks in flight stay small next to the
# interpreter itself (so memory does not grow with the file).
BLOCK_BYTES = 1 << 20
IN_FLIGHT_PER_WORKER = 2

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_NEWLINE, _CR, _COMMA = ord("\n"), ord("\r"), ord(",")
# When pyarrow refuses some number text of a block, the text the fast path still takes: an optional
# minus, digits, at most one point with digits on both sides (a float for Python and pyarrow alike).
_STRICT_NUMBER = r"^-?[0-9]+(\.[0-9]+)?$"


def classify_line(raw: bytes, layout: schema.Layout) -> tuple[str | None, str]:
    """(reason, detail) for one line (newline included or not); reason "header" for a header."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return schema.REASON_BINARY, f"not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})"
    text = text.rstrip("\r\n")
    control = CONTROL.search(text)
    if control:
        return schema.REASON_BINARY, f"control character {control.group()!r} at column {control.start() + 1}"
    fields = text.split(",")
    if schema.is_header(fields):
        names = tuple(f.strip() for f in fields)
        if names == layout.columns:
            return "header", ""
        return schema.REASON_BAD_HEADER, f"header {','.join(names)!r} is not the {layout.name} layout's"
    return schema.check_row(fields, layout)


_json_string = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str


# -- quarantine entries ----------------------------------------------------------------------------
# One entry is the JSON of {"split", "file", "line", "reason", "detail", "text"} (with "text": null
# and "raw_base64" for a line that is not UTF-8). Workers write everything after the line number;
# the file's reader, which knows the line numbers, puts the head in front.
def entry_head(split: str, source: str) -> str:
    """The start of every quarantine entry of one file, up to the line number."""
    return json.dumps({"split": split, "file": source, "line": 0})[: -len("0}")]


def entry_tail(raw: bytes, reason: str, detail: str) -> str:
    """The rest of a quarantine entry after the line number: reason, detail and the original line.

    Written with json's own string encoder, exactly as ``json.dumps`` writes these keys and values.
    """
    line = raw[:-1] if raw.endswith(b"\n") else raw
    head = f', "reason": {_json_string(reason)}, "detail": {_json_string(detail)}, "text": '
    try:
        return f"{head}{_json_string(line.decode('utf-8'))}}}"
    except UnicodeDecodeError:
        return f'{head}null, "raw_base64": "{base64.b64encode(line).decode("ascii")}"}}'


def entry_line(head: str, number: int, tail: str) -> str:
    return f"{head}{number}{tail}\n"


# -- one block ------------------------------------------------------------------------------------
@dataclass
class BlockResult:
    """The verdicts of one block: its clean lines (each ending in "\\n"), counts and quarantine."""

    lines: int = 0
    clean: bytes = b""
    clean_lines: int = 0
    header_lines: int = 0
    blank_lines: int = 0
    reasons: Counter = field(default_factory=Counter)
    # (line index within the block, entry_tail) per quarantined line, in line order.
    quarantined: list[tuple[int, str]] = field(default_factory=list)
    last_byte: int | None = None  # the block's last byte (the file ends with "\n" or not)
    scalar_lines: int = 0  # lines judged by classify_line (the vectorised checks were not sure)
    crlf: bool = False  # some line of the block ends with "\r\n"
    clean_newlines: int = 0  # newlines in ``clean`` (must equal clean_lines)


def _datetime_shape(fmt: str) -> tuple[bytes, dict[str, slice]]:
    """A template (digits as "0") and where each field sits, for a fixed-width strptime format."""
    widths = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2}
    template, places, i = [], {}, 0
    while i < len(fmt):
        if fmt[i] == "%":
            code = fmt[i + 1]
            if code not in widths:
                raise ValueError(f"schema.DATETIME_FORMAT {fmt!r}: %{code} has no fixed width for the fast check")
            places[code] = slice(len(template), len(template) + widths[code])
            template.extend("0" * widths[code])
            i += 2
        else:
            template.append(fmt[i])
            i += 1
    return "".join(template).encode("ascii"), places


_DT_TEMPLATE, _DT_PLACES = _datetime_shape(schema.DATETIME_FORMAT)
# Text minus the template is a digit's value where the template has a digit and 0 where the
# template's literal character matches, so one comparison checks the whole shape.
_DT_BASE = np.frombuffer(_DT_TEMPLATE, np.uint8)
_DT_LIMIT = np.ones(len(_DT_TEMPLATE), np.uint8)
for _place in _DT_PLACES.values():
    _DT_LIMIT[_place] = 10
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _real_datetimes(shaped: np.ndarray) -> np.ndarray:
    """Rows of fixed-width datetime text (uint8, one row per value) that strptime accepts for sure."""
    digits = shaped - _DT_BASE
    ok = np.all(digits < _DT_LIMIT, axis=1)

    def number(code: str) -> np.ndarray:
        place = _DT_PLACES[code]
        value = digits[:, place.start].astype(np.int32)
        for column in range(place.start + 1, place.stop):
            value = value * 10 + digits[:, column]
        return value

    year, month, day = number("Y"), number("m"), number("d")
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    days = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + ((month == 2) & leap)
    ok &= (year >= 1) & month_ok & (day >= 1) & (day <= days)
    ok &= (number("H") <= 23) & (number("M") <= 59) & (number("S") <= 59)
    return ok


def _strings(block_buffer: pa.Buffer, starts: np.ndarray, stops: np.ndarray) -> pa.StringArray:
    """The byte ranges [starts[i], stops[i]) of the block (flattened) as one contiguous string array."""
    n = starts.size
    if n == 0:
        return pa.array([], pa.string())
    offsets = np.empty(2 * n, np.int32)
    offsets[0::2], offsets[1::2] = starts.ravel(), stops.ravel()
    # Every other string of this zero-copy view is a wanted range; the others span the gaps.
    view = pa.StringArray.from_buffers(2 * n - 1, pa.py_buffer(offsets), block_buffer)
    return pc.take(view, pa.array(np.arange(0, 2 * n - 1, 2)))


def _values_bytes(strings: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes from the first string's start) of a string array."""
    offsets = np.frombuffer(strings.buffers()[1], np.int32)[strings.offset : strings.offset + len(strings) + 1]
    data = strings.buffers()[2]
    values = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return offsets - offsets[0], values[offsets[0] : offsets[-1]]


def _numbers(strings: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """(floats, certain): certain where the text is plain decimal and its float is finite."""
    offsets, used = _values_bytes(strings)
    # Bytes other than "-", "." and digits ("/" sits between them) mark their strings uncertain.
    odd = np.flatnonzero(((used - np.uint8(ord("-"))) > ord("9") - ord("-")) | (used == ord("/")))
    certain = np.diff(offsets) > 0
    certain[np.searchsorted(offsets, odd, side="right") - 1] = False
    if certain.all():
        try:
            floats = pc.cast(strings, pa.float64()).to_numpy(zero_copy_only=False)
            return floats, np.isfinite(floats)
        except pa.ArrowInvalid:  # text like "1-2" or "1..2": sort it out string by string below
            pass
    certain &= pc.match_substring_regex(strings, _STRICT_NUMBER).to_numpy(zero_copy_only=False)
    plain = pc.if_else(pa.array(certain), strings, "0")
    floats = pc.cast(plain, pa.float64()).to_numpy(zero_copy_only=False)
    return floats, certain & np.isfinite(floats)


def _fast_verdicts(
    block_buffer: pa.Buffer, starts: np.ndarray, commas: np.ndarray, layout: schema.Layout
) -> tuple[np.ndarray, np.ndarray]:
    """For well-shaped lines (line start, the comma positions of each): (certain, floats), the floats
    one row per line in the order of ``_numeric_columns(layout)``."""
    numeric = _numeric_columns(layout)
    field_start = np.column_stack([starts, commas + 1])
    n = len(starts)
    # All number fields of all lines in one array: one cast per block.
    floats, sure = _numbers(_strings(block_buffer, field_start[:, numeric], commas[:, numeric]))
    floats = floats.reshape(n, len(numeric))
    certain = sure.reshape(n, len(numeric)).all(axis=1)
    if layout.pickup_datetime:
        i = layout.columns.index(layout.pickup_datetime)
        width = len(_DT_TEMPLATE)
        sized = np.flatnonzero(commas[:, i] - field_start[:, i] == width)
        _, text = _values_bytes(_strings(block_buffer, field_start[sized, i], commas[sized, i]))
        real = np.zeros(n, bool)
        real[sized] = _real_datetimes(text.reshape(len(sized), width))
        certain &= real
    return certain, floats


def _numeric_columns(layout: schema.Layout) -> list[int]:
    """Indexes of the columns ``check_row`` reads as numbers (all but the key and the pickup time)."""
    numeric = [i for i, name in enumerate(layout.columns) if name not in (schema.KEY, layout.pickup_datetime)]
    if layout.columns[-1] != schema.KEY:
        raise ValueError(f"{layout.name}: the fast check needs the unchecked key as the last column")
    return numeric


def _broken_rules(columns: dict[str, np.ndarray], layout: schema.Layout) -> np.ndarray:
    """Per row, the index in ``schema.RULES`` of the first rule it breaks (len(RULES) when none)."""
    first = np.full(len(next(iter(columns.values()))), len(schema.RULES))
    for index in reversed(range(len(schema.RULES))):
        holds = np.asarray(schema.RULES[index].holds(columns, layout), bool)
        first[~holds] = index
    return first


def _scalar_verdict(raw: bytes, layout: schema.Layout) -> tuple[str | None, str]:
    """What a line is, as the line-by-line check says: "blank", "header", None (clean) or a reason."""
    if not raw.strip():
        return "blank", ""
    reason, detail = classify_line(raw, layout)
    if reason not in (None, "header") and not raw.endswith(b"\n"):
        detail += " (last line has no newline: truncated?)"
    return reason, detail


def check_block(block: bytes, layout: schema.Layout, *, vectorised: bool = True) -> BlockResult:
    """The verdict of every line of ``block`` (complete lines; only a file's last may lack "\\n")."""
    result = BlockResult(last_byte=block[-1] if block else None, crlf=b"\r\n" in block)
    if not block:
        return result
    data = np.frombuffer(block, np.uint8)
    # One pass finds newlines, commas and any byte outside printable ASCII.
    marked = np.flatnonzero(((data - np.uint8(0x20)) > 0x7E - 0x20) | (data == _COMMA))
    kinds = data[marked]
    newlines = marked[kinds == _NEWLINE]
    commas = marked[kinds == _COMMA]
    odd = marked[(kinds != _NEWLINE) & (kinds != _COMMA)]
    stops = newlines + 1
    if stops.size == 0 or stops[-1] != len(block):
        stops = np.append(stops, len(block))
    starts = np.concatenate([[0], stops[:-1]])
    n = len(stops)
    result.lines = n

    certain = np.zeros(n, bool)
    if vectorised and len(block) < 2**31:  # string offsets are 32-bit
        per_line = np.diff(np.searchsorted(commas, stops), prepend=0)
        certain = per_line == len(layout.columns) - 1
        # A "\r" right before the "\n" is a CRLF line end (classify_line strips it); any other odd
        # byte makes its line uncertain.
        crlf = (data[odd] == _CR) & (odd + 1 < len(block))
        crlf[crlf] = data[odd[crlf] + 1] == _NEWLINE
        certain[np.searchsorted(newlines, odd[~crlf])] = False
        if block[-1] != _NEWLINE:
            certain[-1] = False
    sure = np.flatnonzero(certain)
    clean = np.zeros(n, bool)
    broken: dict[int, tuple[int, list[float]]] = {}  # line index → (rule index, its floats)
    if sure.size:
        line_commas = commas[np.repeat(certain, per_line)].reshape(sure.size, len(layout.columns) - 1)
        ok, floats = _fast_verdicts(pa.py_buffer(block), starts[sure], line_commas, layout)
        names = [layout.columns[i] for i in _numeric_columns(layout)]
        rules = _broken_rules(dict(zip(names, floats.T)), layout)
        clean[sure[ok & (rules == len(schema.RULES))]] = True
        rows = np.flatnonzero(ok & (rules < len(schema.RULES)))
        broken = dict(zip(sure[rows].tolist(), zip(rules[rows].tolist(), floats[rows].tolist())))

    for index in np.flatnonzero(~clean).tolist():
        raw = block[starts[index] : stops[index]]
        if index in broken:
            # Parsed for sure: the first broken rule's own detail, as check_values gives it (which
            # has the last word should the scalar and vectorised forms of a rule ever differ).
            rule_index, values = broken[index]
            values = dict(zip(names, values))
            rule = schema.RULES[rule_index]
            detail = rule.first_break(values, layout)
            reason, detail = (rule.reason, detail) if detail is not None else schema.check_values(values, layout)
        else:
            reason, detail = _scalar_verdict(raw, layout)
            result.scalar_lines += 1
        if reason == "blank":
            result.blank_lines += 1
        elif reason == "header":
            result.header_lines += 1
        elif reason is None:
            clean[index] = True
        else:
            result.reasons[reason] += 1
            result.quarantined.append((index, entry_tail(raw, reason, detail)))

    result.clean_lines = int(clean.sum())
    if result.clean_lines == n and block[-1] == _NEWLINE:
        result.clean = block
    else:
        # Runs of consecutive clean lines, copied once.
        edges = np.flatnonzero(np.diff(np.concatenate([[False], clean, [False]]).astype(np.int8)))
        pieces = [block[starts[a] : stops[b - 1]] for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist())]
        if clean[-1] and block[-1] != _NEWLINE:
            pieces.append(b"\n")
        result.clean = b"".join(pieces)
    result.clean_newlines = int(np.count_nonzero(np.frombuffer(result.clean, np.uint8) == _NEWLINE))
    return result


@functools.cache
def _keep_freed_memory() -> None:
    """Let glibc's malloc keep the few MB each block allocates and frees, instead of giving them
    back to the system after every block and faulting them in again (measured at 10^7 rows: system
    time 3.4 s → 0.7 s, a quarter of all CPU time, with the same peak RSS). Only ever raises the
    thresholds; a no-op off glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's own upper limit for its dynamic threshold
    mallopt(m_trim_threshold, 128 << 20)


# -- a whole file ---------------------------------------------------------------------------------
def read_blocks(path: str | Path, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The file's bytes in blocks of about ``block_bytes``, each cut after a newline (but the last)."""
    pending: list[bytes] = []
    with open(path, "rb") as source:
        while chunk := source.read(block_bytes):
            cut = chunk.rfind(b"\n")
            if cut < 0:  # a line longer than a block: keep reading
                pending.append(chunk)
                continue
            yield b"".join([*pending, chunk[: cut + 1]])
            pending = [chunk[cut + 1 :]]
    rest = b"".join(pending)
    if rest:
        yield rest


def check_file_blocks(
    path: str | Path,
    layout: schema.Layout,
    *,
    block_bytes: int = BLOCK_BYTES,
    workers: int | None = None,
    vectorised: bool = True,
) -> Iterator[tuple[int, BlockResult]]:
    """(number of the block's first line, verdicts) per block of ``path``, in file order.

    Blocks are checked on ``workers`` threads (default: the usable cores) with at most
    ``IN_FLIGHT_PER_WORKER`` blocks per worker read ahead, so memory does not grow with the file.
    """
    workers = workers or usable_cores()
    _keep_freed_memory()
    first_line = 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rowcheck") as pool:
        pending: deque = deque()
        try:
            for block in read_blocks(path, block_bytes):
                pending.append(pool.submit(check_block, block, layout, vectorised=vectorised))
                while len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                    result = pending.popleft().result()
                    yield first_line, result
                    first_line += result.lines
            while pending:
                result = pending.popleft().result()
                yield first_line, result
                first_line += result.lines
        finally:
            for future in pending:
                future.cancel()
