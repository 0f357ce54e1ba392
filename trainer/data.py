"""Reading the course CSVs with tf.data.

Two passes over each file:

1. ``scan_files`` — a quick pass in Python that detects the layout (and a header line) with
   ``schema.detect_layout``, checks every line with ``schema.check_row``, stops on the first
   malformed line with a ``MalformedRowError`` naming file, line number and reason, and counts
   implausible rows by reason. Training never starts on a file that would fail mid-way.
2. ``make_dataset`` — the streaming pipeline. Each file is read once, front to back, in blocks
   of ``BLOCK_BYTES`` (``FixedLengthRecordDataset`` records placed with the byte sizes the scan
   measured); a ``Dataset.scan`` carries the partial last line of each block over to the next,
   so every element is the block's whole lines, split with one vectorised op rather than one
   dataset element per line → ``tf.io.decode_csv`` on those lines, in parallel → implausible
   rows dropped (the same rules as ``schema.check_values``, evaluated on float64 values so
   both passes agree) → rows cut into batches (``rebatch``) → optional cache → shuffle/repeat
   → prefetch.
   Each element is ``(features, label)`` where features maps the layout's raw serving fields to
   float32 tensors (``pickup_datetime`` stays a string), exactly what the exported model takes.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import tensorflow as tf

from trainer import config, schema
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
    """Comma-separated files, globs or shard directories (or a list of them) → de-duplicated file paths."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for part in (str(p).strip() for p in parts):
        if not part:
            continue
        if tf.io.gfile.isdir(part):
            # A sharded split: its directory holds the shards (train-00000-of-00004.csv, …).
            matches = sorted(tf.io.gfile.glob(part.rstrip("/") + "/*.csv"))
            if not matches:
                raise DataError(f"{part}: directory holds no .csv shard")
            paths.extend(matches)
        elif any(ch in part for ch in "*?["):
            matches = sorted(tf.io.gfile.glob(part))
            if not matches:
                raise DataError(f"{part}: no file matches this pattern")
            paths.extend(matches)
        else:
            if not tf.io.gfile.exists(part):
                raise DataError(f"{part}: no such file")
            paths.append(part)
    if not paths:
        raise DataError(f"no input files in {spec!r}")
    return list(dict.fromkeys(paths))


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
    """Check every line of one CSV file; raise MalformedRowError on the first bad one."""
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
    cache: parse once and keep the rows in memory (the course files are small); rows are then
    shuffled one by one. Without cache (data larger than memory) every pass streams from the
    files: file order is shuffled, files are read in parallel, and parsed batches are shuffled.
    """
    layout = scan.layout
    if drop_implausible is None:
        drop_implausible = training

    shuffle_rows = training and not cache

    def parse(index, lines):
        columns = decode_lines(lines, layout)
        mask = plausible_mask(columns, layout)
        features, label = to_features(columns, layout)
        if drop_implausible:
            features = {k: tf.boolean_mask(v, mask) for k, v in features.items()}
            label = tf.boolean_mask(label, mask)
            mask = tf.boolean_mask(mask, mask)
        if shuffle_rows:
            # A block's rows are consecutive lines of one file: mix them before they are batched.
            order = tf.random.experimental.stateless_shuffle(
                tf.range(tf.shape(label)[0]), seed=tf.stack([tf.cast(seed or 0, tf.int64), index])
            )
            features = {k: tf.gather(v, order) for k, v in features.items()}
            label, mask = tf.gather(label, order), tf.gather(mask, order)
        return (features, label, mask) if with_mask else (features, label)

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
        blocks = _line_blocks(scan, shuffle=False, seed=seed, repeat=False).enumerate()
        ds = blocks.map(parse, num_parallel_calls=AUTOTUNE).unbatch().cache()
        if training:
            ds = ds.shuffle(min(shuffle_buffer, max(scan.plausible, 1)), seed=seed, reshuffle_each_iteration=True)
            ds = ds.repeat()
        ds = ds.batch(batch_size)
    else:
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
        columns["_plausible"] = plausible_mask(columns, scan.layout)
        parts.append(columns)
    return {k: tf.concat([c[k] for c in parts], axis=0) for k in parts[0]}
