"""Reading the course CSVs with tf.data.

Two passes over each file:

1. ``scan_files`` — a quick pass in Python that detects the layout (and a header line) with
   ``schema.detect_layout``, checks every line with ``schema.check_row``, stops on the first
   malformed line with a ``MalformedRowError`` naming file, line number and reason, and counts
   implausible rows by reason. Training never starts on a file that would fail mid-way.
2. ``make_dataset`` — the streaming pipeline: one ``TextLineDataset`` per file (header skipped,
   lines batched inside the file's dataset, files interleaved) → ``tf.io.decode_csv`` in
   parallel → implausible rows dropped (the same rules as ``schema.check_values``, evaluated
   on float64 values so both passes agree) → optional cache → shuffle/repeat → prefetch.
   Each element is ``(features, label)`` where features maps the layout's raw serving fields to
   float32 tensors (``pickup_datetime`` stays a string), exactly what the exported model takes.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from trainer import schema
from trainer.schema import Layout

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
DECODE_BATCH = 4096  # lines decoded per decode_csv call when the parsed rows are cached


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
    """Comma-separated files or globs (or a list of them) → sorted, de-duplicated file paths."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for part in (str(p).strip() for p in parts):
        if not part:
            continue
        if any(ch in part for ch in "*?["):
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


def scan_file(path: str, layout: Layout | None = None) -> FileScan:
    """Check every line of one CSV file; raise MalformedRowError on the first bad one."""
    check_row = schema.check_row
    malformed = set(schema.MALFORMED_REASONS)
    scan: FileScan | None = None
    dropped: Counter = Counter()
    line_no = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        for raw in f:
            line_no += 1
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise MalformedRowError(path, line_no, schema.REASON_BINARY, "not UTF-8 text") from None
            if scan is None:
                scan = _start_scan(path, line, layout)
                if scan.has_header:
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
            path, scan.layout.name, " with header" if scan.has_header else "", scan.rows,
            sum(scan.dropped.values()), dict(scan.dropped),
        )  # fmt: skip
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
    """The plausibility rules of ``schema.check_values`` as a boolean mask over a batch."""
    lon_lo, lon_hi = schema.NYC_LON_RANGE
    lat_lo, lat_hi = schema.NYC_LAT_RANGE
    ok = tf.ones_like(columns[schema.LABEL], dtype=tf.bool)
    for name in (layout.pickup_lon, layout.dropoff_lon):
        ok &= (columns[name] >= lon_lo) & (columns[name] <= lon_hi)
    for name in (layout.pickup_lat, layout.dropoff_lat):
        ok &= (columns[name] >= lat_lo) & (columns[name] <= lat_hi)
    fare = columns[schema.LABEL]
    ok &= (fare > schema.FARE_RANGE[0]) & (fare <= schema.FARE_RANGE[1])
    passengers = columns[layout.passengers]
    ok &= (passengers >= schema.PASSENGER_RANGE[0]) & (passengers <= schema.PASSENGER_RANGE[1])
    zero = (tf.abs(columns[layout.pickup_lon] - columns[layout.dropoff_lon]) < schema.MIN_TRIP_DEGREES) & (
        tf.abs(columns[layout.pickup_lat] - columns[layout.dropoff_lat]) < schema.MIN_TRIP_DEGREES
    )
    return ok & ~zero


def to_features(columns: dict[str, tf.Tensor], layout: Layout) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """Parsed columns → (raw serving features as float32/string, float32 label)."""
    features = {
        name: columns[name] if name == layout.pickup_datetime else tf.cast(columns[name], tf.float32)
        for name in layout.serving_fields
    }
    return features, tf.cast(columns[schema.LABEL], tf.float32)


def _line_batches(
    scan: ScanResult, batch_size: int, *, shuffle_files: bool, seed: int | None, repeat: bool
) -> tf.data.Dataset:
    """Batches of raw CSV lines (header skipped), each batch from one file.

    Batching inside each file's TextLineDataset keeps the per-line work in C++; files are read
    in parallel (interleave) when shuffling, else one after another in the given order.
    """
    paths = [f.path for f in scan.files]
    skips = [1 if f.has_header else 0 for f in scan.files]
    files = tf.data.Dataset.from_tensor_slices((paths, tf.constant(skips, tf.int64)))
    if shuffle_files and len(paths) > 1:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()

    def read(path, skip):
        return tf.data.TextLineDataset(path, buffer_size=1 << 20).skip(skip).batch(batch_size)

    if shuffle_files and len(paths) > 1:
        return files.interleave(
            read, cycle_length=min(len(paths), 4), num_parallel_calls=AUTOTUNE, deterministic=False
        )
    return files.interleave(read, cycle_length=1)


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

    def parse(lines):
        columns = decode_lines(lines, layout)
        mask = plausible_mask(columns, layout)
        features, label = to_features(columns, layout)
        if drop_implausible:
            features = {k: tf.boolean_mask(v, mask) for k, v in features.items()}
            label = tf.boolean_mask(label, mask)
            mask = tf.boolean_mask(mask, mask)
        return (features, label, mask) if with_mask else (features, label)

    options = tf.data.Options()
    # Each worker of a multi-worker run reads every file and keeps its share of the batches,
    # which works however few files there are.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = not training

    if cache:
        lines = _line_batches(scan, DECODE_BATCH, shuffle_files=False, seed=seed, repeat=False)
        ds = lines.map(parse, num_parallel_calls=AUTOTUNE).unbatch().cache()
        if training:
            ds = ds.shuffle(min(shuffle_buffer, max(scan.plausible, 1)), seed=seed, reshuffle_each_iteration=True)
            ds = ds.repeat()
        ds = ds.batch(batch_size)
        batches = math.ceil((scan.plausible if drop_implausible else scan.rows) / batch_size)
    else:
        lines = _line_batches(scan, batch_size, shuffle_files=training, seed=seed, repeat=training)
        ds = lines.map(parse, num_parallel_calls=AUTOTUNE, deterministic=not training)
        if training:
            ds = ds.shuffle(max(1, shuffle_buffer // batch_size), seed=seed, reshuffle_each_iteration=True)
        batches = sum(math.ceil(f.rows / batch_size) for f in scan.files)
    if not training:
        # The scan knows how many batches one pass yields; Keras uses it to size evaluation.
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(AUTOTUNE).with_options(options)


def read_columns(scan: ScanResult) -> dict[str, tf.Tensor]:
    """All parseable rows of the scanned files as {column: tensor} plus "_plausible"."""
    chunks: list[dict[str, tf.Tensor]] = []
    for element in _line_batches(scan, 65_536, shuffle_files=False, seed=None, repeat=False):
        columns = decode_lines(element, scan.layout)
        columns["_plausible"] = plausible_mask(columns, scan.layout)
        chunks.append(columns)
    return {k: tf.concat([c[k] for c in chunks], axis=0) for k in chunks[0]}
