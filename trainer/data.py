"""Reading the course CSVs with tf.data.

Two passes over each file:

1. ``scan_files`` — a quick pass in Python that detects the layout (and a header line) with
   ``schema.detect_layout``, checks every line with ``schema.check_row``, stops on the first
   malformed line with a ``MalformedRowError`` naming file, line number and reason, and counts
   implausible rows by reason. Training never starts on a file that would fail mid-way.
2. ``make_dataset`` — the input pipeline. Each file is read once, front to back, in blocks
   of ``BLOCK_BYTES`` (``FixedLengthRecordDataset`` records placed with the byte sizes the scan
   measured); a ``Dataset.scan`` carries the partial last line of each block over to the next,
   so every element is the block's whole lines, split with one vectorised op rather than one
   dataset element per line → ``tf.io.decode_csv`` on those lines, in parallel → implausible
   rows dropped (the same rules as ``schema.check_values``, evaluated on float64 values so
   both passes agree). Then either
   * streaming: rows cut into batches (``rebatch``) → shuffle/repeat → prefetch, every pass
     reading the files again; or
   * cached: one pass packs the rows into one column per field (``pack_rows``: float32 numbers,
     the pickup time as int64 seconds since 1970) — 24 bytes a lab row, 32 a dated one — and
     each pass takes batches of them in a new random order.
   Each element is ``(features, label)`` where features maps the layout's raw serving fields to
   float32 tensors (``pickup_datetime`` stays a string), exactly what the exported model takes.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from trainer import config, schema, storage
from trainer.features import parse_pickup_datetime
from trainer.schema import Layout

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
BLOCK_BYTES = 1 << 20  # bytes read, split into lines and decoded at once


class MalformedRowError(ValueError):
    """A CSV line that cannot be parsed: training stops."""

    def __init__(self, path: str, line: int, reason: str, detail: str):
        self.path, self.line, self.reason, self.detail = str(path), line, reason, detail
        super().__init__(f"{path}: line {line}: {reason}: {detail}")


class DataError(ValueError):
    """Input files that cannot be used (none found, mixed layouts, no usable rows)."""


@dataclass
class FileScan:
    """What the scan learnt about one file."""

    path: str
    layout: Layout
    has_header: bool
    rows: int = 0  # data lines (header excluded)
    dropped: Counter = field(default_factory=Counter)  # implausible rows by reason
    size: int = 0  # bytes
    header_bytes: int = 0  # bytes of the header line, line end included (0 without a header)
    final_newline: bool = True  # the last line ends with "\n"
    crlf: bool = False  # some line ends with "\r\n"

    @property
    def plausible(self) -> int:
        return self.rows - sum(self.dropped.values())


@dataclass
class ScanResult:
    layout: Layout
    files: list[FileScan]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def plausible(self) -> int:
        return sum(f.plausible for f in self.files)

    @property
    def dropped(self) -> dict[str, int]:
        total = Counter()
        for f in self.files:
            total.update(f.dropped)
        return {reason: int(total.get(reason, 0)) for reason in schema.IMPLAUSIBLE_REASONS}


def expand_paths(spec: str | Sequence[str]) -> list[str]:
    """Comma-separated files, globs or shard directories (or a list of them) → de-duplicated file
    paths (``storage.expand_files`` through TensorFlow's file system, so gs:// too)."""
    try:
        return storage.expand_files(spec, isdir=tf.io.gfile.isdir, glob=tf.io.gfile.glob, exists=tf.io.gfile.exists)
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from None


def _raw_lines(path: str):
    """The lines of a file as exact bytes (line end included), read in large blocks.

    GFile's own line iteration drops the "\r" of "\r\n", so byte offsets are counted here.
    """
    pending: list[bytes] = []  # the current line's bytes so far, kept in pieces while it grows
    with tf.io.gfile.GFile(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            if b"\n" not in block:
                pending.append(block)
                continue
            lines = b"".join([*pending, block]).split(b"\n")
            pending = [lines.pop()]
            for line in lines:
                yield line + b"\n"
    if rest := b"".join(pending):
        yield rest


def scan_file(path: str, layout: Layout | None = None) -> FileScan:
    """Check every line of one CSV file; raise MalformedRowError on the first bad one.

    A local file is checked in blocks (``rowcheck``, the validate step's checks); a file that
    holds anything but plausible or implausible rows (a malformed line, a blank line, a second
    header), or one in the bucket, is read line by line, which finds and names the first bad line."""
    if not path.startswith("gs://") and os.path.isfile(path):
        scan = _scan_blocks(path, layout)
        if scan is not None:
            return scan
    return _scan_lines(path, layout)


def _scan_blocks(path: str, layout: Layout | None) -> FileScan | None:
    """The scan from the block checks; None when the file needs the line-by-line scan."""
    from trainer import rowcheck

    with open(path, "rb") as f:
        first = f.readline()
    try:
        first_line = first.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return None
    if not first_line.strip():
        return None
    scan = _start_scan(path, first_line, layout)
    implausible = set(schema.IMPLAUSIBLE_REASONS)
    lines = headers = 0
    dropped: Counter = Counter()
    crlf, last = False, None
    for _, block in rowcheck.check_file_blocks(path, scan.layout):
        if block.blank_lines or not implausible.issuperset(block.reasons):
            return None
        lines += block.lines
        headers += block.header_lines
        dropped.update(block.reasons)
        crlf, last = crlf or block.crlf, block.last_byte
    if headers != (1 if scan.has_header else 0):
        return None
    scan.header_bytes = len(first) if scan.has_header else 0
    scan.rows = lines - headers
    scan.dropped = dropped
    scan.size, scan.final_newline, scan.crlf = os.path.getsize(path), last == ord("\n"), crlf
    return scan


def _scan_lines(path: str, layout: Layout | None) -> FileScan:
    check_row = schema.check_row
    malformed = set(schema.MALFORMED_REASONS)
    scan: FileScan | None = None
    dropped: Counter = Counter()
    line_no = size = 0
    crlf = False
    raw = b""
    for raw in _raw_lines(path):
        line_no += 1
        size += len(raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRowError(path, line_no, schema.REASON_BINARY, "not UTF-8 text") from None
        if line.endswith("\r\n"):
            crlf = True
        line = line.rstrip("\r\n")
        if scan is None:
            scan = _start_scan(path, line, layout)
            if scan.has_header:
                scan.header_bytes = len(raw)
                continue
        reason, detail = check_row(line.split(","), scan.layout)
        if reason is not None:
            if reason in malformed:
                raise MalformedRowError(path, line_no, reason, detail)
            dropped[reason] += 1
    if scan is None:
        raise DataError(f"{path}: file is empty")
    scan.rows = line_no - (1 if scan.has_header else 0)
    scan.dropped = dropped
    scan.size, scan.final_newline, scan.crlf = size, raw.endswith(b"\n"), crlf
    return scan


def _start_scan(path: str, first_line: str, layout: Layout | None) -> FileScan:
    """Layout and header from the first line (checked against ``layout`` when given)."""
    try:
        detected, has_header = schema.detect_layout(first_line, source=path)
    except schema.LayoutError as exc:
        reason = schema.REASON_BAD_HEADER if schema.is_header(first_line.split(",")) else schema.REASON_COLUMNS
        raise MalformedRowError(path, 1, reason, str(exc).removeprefix(f"{path}: line 1: ")) from None
    if layout is not None and has_header and detected is not layout:
        raise MalformedRowError(
            path, 1, schema.REASON_BAD_HEADER, f"header is the {detected.name} layout, expected {layout.name}"
        )
    return FileScan(path=path, layout=layout or detected, has_header=has_header)


def scan_files(paths: Sequence[str], layout: Layout | str | None = None) -> ScanResult:
    """Scan all files; they must share one layout (given, or detected from the first file)."""
    if isinstance(layout, str):
        layout = None if layout == "auto" else schema.get_layout(layout)
    scans: list[FileScan] = []
    requested = layout
    for path in paths:
        scan = scan_file(path, requested)
        if layout is None:
            layout = scan.layout
        elif scan.layout is not layout:
            raise DataError(f"{path}: {scan.layout.name} layout, but earlier files are {layout.name}")
        scans.append(scan)
        log.info(
            "%s: %s layout%s, %d rows, %d implausible %s",
            path,
            scan.layout.name,
            " with header" if scan.has_header else "",
            scan.rows,
            sum(scan.dropped.values()),
            dict(scan.dropped),
        )
    if not scans:
        raise DataError("no input files")
    return ScanResult(layout=scans[0].layout, files=scans)


def _record_defaults(layout: Layout) -> tuple[list, list[int]]:
    """decode_csv defaults and selected column indices (the key column is not parsed)."""
    defaults, cols = [], []
    for i, name in enumerate(layout.columns):
        if name == schema.KEY:
            continue
        cols.append(i)
        defaults.append(tf.constant([], tf.string) if name == layout.pickup_datetime else tf.constant([], tf.float64))
    return defaults, cols


def decode_lines(lines: tf.Tensor, layout: Layout) -> dict[str, tf.Tensor]:
    """A batch of CSV lines → {column: tensor} (float64 numbers, string datetime)."""
    defaults, cols = _record_defaults(layout)
    values = tf.io.decode_csv(lines, record_defaults=defaults, select_cols=cols)
    names = [layout.columns[i] for i in cols]
    return dict(zip(names, values))


def plausible_mask(columns: dict[str, tf.Tensor], layout: Layout) -> tf.Tensor:
    """The plausibility rules (``schema.RULES``) as a boolean mask over a batch."""
    return schema.plausible(columns, layout)


def to_features(columns: dict[str, tf.Tensor], layout: Layout) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """Parsed columns → (raw serving features as float32/string, float32 label)."""
    features = {
        name: columns[name] if name == layout.pickup_datetime else tf.cast(columns[name], tf.float32)
        for name in layout.serving_fields
    }
    return features, tf.cast(columns[schema.LABEL], tf.float32)


SECONDS_PER_DAY = 86_400


def pickup_seconds(text: tf.Tensor) -> tf.Tensor:
    """'2011-01-28 20:42:59 UTC' → int64 seconds since 1970-01-01 00:00:00 UTC.

    The date is read as the feature layer reads it (``features.parse_pickup_datetime``), so the
    text ``pickup_text`` writes back gives the model the same features.
    """

    def part(start):
        return tf.strings.to_number(tf.strings.substr(text, start, 2), tf.int64)

    days = parse_pickup_datetime(text)["days"]
    return days * SECONDS_PER_DAY + part(11) * 3600 + part(14) * 60 + part(17)


def pickup_text(seconds: tf.Tensor) -> tf.Tensor:
    """int64 seconds since 1970 → 'YYYY-MM-DD HH:MM:SS UTC' (the inverse of ``pickup_seconds``)."""
    days = seconds // SECONDS_PER_DAY
    time_of_day = seconds - days * SECONDS_PER_DAY
    # Civil date from days (proleptic Gregorian): the inverse of the feature layer's day count.
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = tf.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + tf.cast(month <= 2, tf.int64)

    def digits(value, width=2):
        return tf.strings.as_string(value, width=width, fill="0")

    return tf.strings.join(
        [
            digits(year, 4),
            "-",
            digits(month),
            "-",
            digits(day),
            " ",
            digits(time_of_day // 3600),
            ":",
            digits(time_of_day // 60 % 60),
            ":",
            digits(time_of_day % 60),
            " UTC",
        ]
    )


def _line_blocks(scan: ScanResult, *, shuffle: bool, seed: int | None, repeat: bool) -> tf.data.Dataset:
    """The files' data lines (header skipped, line ends removed) as 1-D string tensors.

    Each file is read front to back, once per pass: a first block of 1..BLOCK_BYTES bytes so
    that the rest of the file is a whole number of ``BLOCK_BYTES`` records (a
    ``FixedLengthRecordDataset`` must cover its byte range exactly), then those records, then
    a "\\n" when the file's last line lacks one. ``Dataset.scan`` joins each block to the
    partial line left over from the one before and keeps the new partial line for the next.
    Files go one after another in the given order; or, when shuffling, in a new order each
    pass, two at a time.
    """
    block = BLOCK_BYTES
    files = [f for f in scan.files if f.size > f.header_bytes]  # a header-only file has no lines
    crlf = any(f.crlf for f in files)
    ds = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant([f.path for f in files], tf.string),
            tf.constant([f.header_bytes for f in files], tf.int64),
            tf.constant([(f.size - f.header_bytes - 1) % block + 1 for f in files], tf.int64),
            tf.constant([f.size for f in files], tf.int64),
            tf.constant(["" if f.final_newline else "\n" for f in files], tf.string),
        )
    )
    if shuffle and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def stitch(partial, text):
        text = tf.strings.join([partial, text])
        # Everything before the last "\n" is whole lines; what follows it is carried over.
        whole = tf.strings.regex_replace(text, "\n[^\n]*\\z", "", replace_global=False)
        found = tf.strings.length(whole) < tf.strings.length(text)
        return tf.cond(
            found,
            lambda: (tf.strings.substr(text, tf.strings.length(whole) + 1, -1), tf.strings.split(whole, "\n")),
            lambda: (text, tf.constant([], tf.string)),
        )

    def read(path, start, first, size, suffix):
        head = tf.data.FixedLengthRecordDataset(
            path, record_bytes=first, header_bytes=start, footer_bytes=size - start - first
        )
        rest = tf.data.FixedLengthRecordDataset(path, record_bytes=block, header_bytes=start + first, buffer_size=block)
        lines = head.concatenate(rest).concatenate(tf.data.Dataset.from_tensors(suffix)).scan(tf.constant(""), stitch)
        if crlf:
            lines = lines.map(lambda x: tf.strings.regex_replace(x, "\r$", ""))
        return lines

    if shuffle and len(files) > 1:
        return ds.interleave(read, cycle_length=2, num_parallel_calls=AUTOTUNE, deterministic=False)
    return ds.interleave(read, cycle_length=1)


PLAUSIBLE = "_plausible"  # the plausible-row mask among packed or read columns


def pack_rows(scan: ScanResult, *, keep_implausible: bool = False) -> dict[str, tf.Tensor]:
    """The scanned files' rows packed in memory: one tensor per field, label first.

    Numbers are float32 and the pickup time int64 seconds since 1970 (``pickup_seconds``): 24
    bytes a lab row, 32 a dated one. Implausible rows are left out, or kept with a bool
    ``PLAUSIBLE`` column (one byte a row more). The files are parsed once, block by block, into
    arrays sized from the scan's row counts, so the parse never holds more than its blocks in flight.
    """
    layout = scan.layout
    names = (schema.LABEL, *layout.serving_fields)
    rows = scan.rows if keep_implausible else scan.plausible

    def pack(lines):
        columns = decode_lines(lines, layout)
        mask = plausible_mask(columns, layout)
        packed = {
            name: pickup_seconds(columns[name])
            if name == layout.pickup_datetime
            else tf.cast(columns[name], tf.float32)
            for name in names
        }
        if keep_implausible:
            packed[PLAUSIBLE] = mask
        else:
            packed = {name: tf.boolean_mask(column, mask) for name, column in packed.items()}
        return packed

    blocks = _line_blocks(scan, shuffle=False, seed=None, repeat=False).map(pack, num_parallel_calls=AUTOTUNE)
    out: dict[str, np.ndarray] = {
        name: np.empty(rows, spec.dtype.as_numpy_dtype) for name, spec in blocks.element_spec.items()
    }
    at = 0
    for block in blocks:
        n = int(block[schema.LABEL].shape[0])
        if at + n > rows:
            break
        for name, column in block.items():
            out[name][at : at + n] = column.numpy()
        at += n
    else:
        if at == rows:
            # Into TensorFlow one column at a time: at most one column is held twice.
            return {name: tf.convert_to_tensor(out.pop(name)) for name in list(out)}
    paths = ", ".join(f.path for f in scan.files)
    raise DataError(f"{paths}: the rows differ from the {rows} the scan counted: did the files change since?")


def _packed_dataset(
    columns: dict[str, tf.Tensor], layout: Layout, batch_size: int, *, training: bool, seed: int | None
) -> tf.data.Dataset:
    """Batches of packed rows (``pack_rows``) as ``(features, label, mask)``: in row order, one
    pass; or, training, every row once per pass in a new random order each pass, forever."""
    rows = int(columns[schema.LABEL].shape[0])
    index_type = tf.int32 if rows < 2**31 else tf.int64
    base_seed = random.randrange(2**31) if seed is None else seed

    def take(cols, index):
        label = tf.gather(cols[schema.LABEL], index)
        features = {}
        for name in layout.serving_fields:
            value = tf.gather(cols[name], index)
            features[name] = pickup_text(value) if name == layout.pickup_datetime else value
        mask = tf.gather(cols[PLAUSIBLE], index) if PLAUSIBLE in cols else tf.ones_like(label, tf.bool)
        return features, label, mask

    def one_pass(cols, order):
        starts = tf.data.Dataset.range(0, rows, batch_size)
        return starts.map(lambda start: take(cols, order[start : start + batch_size]))

    # The columns are one dataset element, so they are handed to each pass, never copied.
    ds = tf.data.Dataset.from_tensors(columns)
    if not training:
        return ds.flat_map(lambda cols: one_pass(cols, tf.range(rows, dtype=index_type)))

    def shuffled_pass(number, cols):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(rows, dtype=index_type), seed=tf.stack([tf.constant(base_seed, tf.int64), number])
        )
        return one_pass(cols, order)

    # A pass ends in a short batch: rebatch carries its rows into the next pass's first batch.
    passes = ds.repeat() if rows else ds  # no rows: no batches, rather than empty passes forever
    return passes.enumerate().flat_map(shuffled_pass).rebatch(batch_size)


def make_dataset(
    scan: ScanResult,
    batch_size: int,
    *,
    training: bool,
    cache: bool = True,
    shuffle_buffer: int = 50_000,
    seed: int | None = None,
    drop_implausible: bool | None = None,
    with_mask: bool = False,
) -> tf.data.Dataset:
    """The input function: (features, label) batches from scanned CSV files.

    training: shuffle and repeat forever; implausible rows dropped (by default).
    Otherwise one pass in file order; all parseable rows kept (by default), and with
    ``with_mask`` each element carries a third item, the plausible-row mask.
    cache: parse once and keep the rows in memory, packed (``pack_rows``); each training pass
    is a new random order of all of them. Without cache (data larger than memory) every pass
    streams from the files: file order is shuffled, files are read in parallel, and parsed
    batches are shuffled (``shuffle_buffer`` rows at a time).
    """
    layout = scan.layout
    if drop_implausible is None:
        drop_implausible = training

    options = tf.data.Options()
    # Each worker of a multi-worker run reads every file and keeps its share of the batches,
    # which works however few files there are.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = not training
    if training:
        # The input pipeline shares the machine with the training step. With every core its
        # bursts of parsing pre-empt the step's threads; half the cores is plenty (one core
        # decodes about 4M rows/s, ten times what a 2-core training step consumes).
        options.threading.private_threadpool_size = max(1, config.usable_cores() // 2)

    if cache:
        columns = pack_rows(scan, keep_implausible=not drop_implausible)
        ds = _packed_dataset(columns, layout, batch_size, training=training, seed=seed)
        if not with_mask:
            ds = ds.map(lambda features, label, mask: (features, label))
    else:

        def parse(index, lines):
            columns = decode_lines(lines, layout)
            mask = plausible_mask(columns, layout)
            features, label = to_features(columns, layout)
            if drop_implausible:
                features = {k: tf.boolean_mask(v, mask) for k, v in features.items()}
                label = tf.boolean_mask(label, mask)
                mask = tf.boolean_mask(mask, mask)
            if training:
                # A block's rows are consecutive lines of one file: mix them before they are batched.
                order = tf.random.experimental.stateless_shuffle(
                    tf.range(tf.shape(label)[0]), seed=tf.stack([tf.cast(seed or 0, tf.int64), index])
                )
                features = {k: tf.gather(v, order) for k, v in features.items()}
                label, mask = tf.gather(label, order), tf.gather(mask, order)
            return (features, label, mask) if with_mask else (features, label)

        blocks = _line_blocks(scan, shuffle=training, seed=seed, repeat=training).enumerate()
        ds = blocks.map(parse, num_parallel_calls=AUTOTUNE, deterministic=not training).rebatch(batch_size)
        if training:
            ds = ds.shuffle(max(1, shuffle_buffer // batch_size), seed=seed, reshuffle_each_iteration=True)
    batches = math.ceil((scan.plausible if drop_implausible else scan.rows) / batch_size)
    if not training:
        # The scan knows how many batches one pass yields; Keras uses it to size evaluation.
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(AUTOTUNE).with_options(options)


def read_columns(scan: ScanResult) -> dict[str, tf.Tensor]:
    """All parseable rows of the scanned files as {column: tensor} plus "_plausible"."""
    parts: list[dict[str, tf.Tensor]] = []
    for lines in _line_blocks(scan, shuffle=False, seed=None, repeat=False):
        columns = decode_lines(lines, scan.layout)
        columns[PLAUSIBLE] = plausible_mask(columns, scan.layout)
        parts.append(columns)
    return {k: tf.concat([c[k] for c in parts], axis=0) for k in parts[0]}
