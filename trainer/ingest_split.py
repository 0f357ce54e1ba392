"""The ingest split: the layout of the fetched CSVs, the stable key-hash split, and checksummed,
sharded train/valid writers.

The split rule (``row_key`` and ``in_valid``): a row whose width is the layout's goes by its key
column (stripped; the whole line when the key is empty), any other line by the whole line without
its line end; it is in valid when ``crc32(key) % _HASH_BUCKETS`` falls in the first
``valid_fraction`` of the buckets. Blank lines and header lines of the layout are counted and
dropped; every other line is copied byte for byte (a missing final newline is added).

The files are read in blocks of whole lines and each block is split with numpy (``_split_block``):
line ends, the key of every row and its CRC-32 at once (``_crc32_rows``, a table-driven CRC over
a 2-D array of right-aligned keys), the rows of each split gathered with one boolean index.
Lines the block path cannot treat as a plain row (a wrong width, an empty or padded key, a key
longer than ``_KEY_BOUND``, a line that may be blank or a header) go through ``row_key`` and the
same ``in_valid``, one by one. Blocks are split on ``usable_cores()`` threads and written in
order, so the output does not depend on the block size or the thread count.

Each split is written as shards of at most ``SHARD_BYTES`` (rows are never cut; a single longer
row makes a shard of its own). One shard keeps the name ``train.csv``; more are
``train/train-00000-of-00004.csv`` …
"""

from __future__ import annotations

import base64
import os
import queue
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from trainer import schema
from trainer.config import usable_cores

SPLITS = ("train", "valid")
SHARD_BYTES = 256 << 20  # default bound on one shard of a split
BLOCK_BYTES = 1 << 20  # bytes read and split at once (whole lines); bounds the memory in use
_HASH_BUCKETS = 1_000_000
_LAYOUT_SCAN_LINES = 1000
_KEY_BOUND = 64  # longer keys are hashed with zlib.crc32 one by one

_NEWLINE, _COMMA, _CR = ord("\n"), ord(","), ord("\r")
_WHITESPACE = np.zeros(256, dtype=bool)  # what bytes.isspace() and bytes.strip() treat as whitespace
_WHITESPACE[list(b" \t\n\r\x0b\x0c")] = True


class IngestError(RuntimeError):
    """The source was read but cannot become a dataset (e.g. no rows, mixed layouts)."""


# -- layout ---------------------------------------------------------------------------------------
def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return None


def detect_file_layout(path: Path) -> schema.Layout | None:
    """The layout of the first line of ``path`` that ``schema.detect_layout`` recognises.

    Leading lines that are blank, binary or of a wrong width are passed over (the validator
    quarantines them later). None for a file without any data line.
    """
    first_error: Exception | None = None
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if number > _LAYOUT_SCAN_LINES:
                break
            text = _decode(raw)
            if text is None or not text.strip():
                continue
            try:
                layout, _ = schema.detect_layout(text, f"{path}")
                return layout
            except schema.LayoutError as exc:
                first_error = first_error or exc
    if first_error is not None:
        raise IngestError(f"no line among the first {_LAYOUT_SCAN_LINES} of the file matches a layout ({first_error})")
    return None


def common_layout(files: list[Path], source: str) -> schema.Layout:
    """The one layout of all ``files`` (files without a data line do not count); IngestError otherwise."""
    layouts = {}
    for path in files:
        layout = detect_file_layout(path)
        if layout is not None:
            layouts[path] = layout
    if not layouts:
        raise IngestError(f"source {source}: no data rows (empty input)")
    names = {lay.name for lay in layouts.values()}
    if len(names) > 1:
        described = ", ".join(f"{p.name}={lay.name}" for p, lay in layouts.items())
        raise IngestError(f"source {source}: files of different layouts ({described})")
    return next(iter(layouts.values()))


def _is_layout_header(raw: bytes, layout: schema.Layout) -> bool:
    text = _decode(raw)
    return text is not None and tuple(f.strip() for f in text.split(",")) == layout.columns


def dropped_line(raw: bytes, layout: schema.Layout) -> str | None:
    """ "blank" or "header" for a line ingest drops, None for a line it keeps.

    Only a header of this layout is dropped; any other line is data for the validator to judge.
    """
    if raw.isspace():
        return "blank"
    if raw.lstrip().startswith(layout.columns[0].encode()) and _is_layout_header(raw, layout):
        return "header"
    return None


# -- the split rule -------------------------------------------------------------------------------
def _key_column_is_last(layout: schema.Layout) -> bool:
    return layout.columns[-1] == schema.KEY


def row_key(raw: bytes, layout: schema.Layout) -> bytes:
    """The key column of a row of the layout's width (stripped), else the line without its end."""
    line = raw.rstrip(b"\r\n")
    if line.count(b",") == len(layout.columns) - 1:
        key = line.split(b",")[layout.columns.index(schema.KEY)].strip()
        if key:
            return key
    return line


def valid_buckets(valid_fraction: float) -> tuple[int, int]:
    """(buckets, how many of the first go to valid): the numbers the split is made of, here and in
    the SQL that splits a BigQuery table the same way (``validate_sql.split_expr``)."""
    return _HASH_BUCKETS, round(valid_fraction * _HASH_BUCKETS)


def in_valid(crc32, valid_fraction: float):
    """The split of a key's CRC-32 (an int, or an array of them): True for valid."""
    buckets, below = valid_buckets(valid_fraction)
    return crc32 % buckets < below


def is_valid_row(key: bytes, valid_fraction: float) -> bool:
    """Stable split: a row is in valid when crc32(key) falls in the first `valid_fraction` of buckets."""
    return bool(in_valid(zlib.crc32(key), valid_fraction))


# -- CRC-32 of many short keys at once ------------------------------------------------------------
def _crc32_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc32_table()


def _crc32_padded_starts() -> np.ndarray:
    """``starts[k]``: the register value that ``k`` zero bytes turn into 0xFFFFFFFF.

    A key right-aligned behind ``k`` zero bytes, run from ``starts[k]``, gives zlib.crc32(key). A
    zero byte maps register ``s`` to ``T[s & 0xFF] ^ (s >> 8)``; the top bytes of ``T`` are all
    different, so the step is undone from the top byte of its result.
    """
    by_top_byte = np.empty(256, dtype=np.int64)
    by_top_byte[_CRC_TABLE >> 24] = np.arange(256)
    starts = [0xFFFFFFFF]
    for _ in range(_KEY_BOUND):
        after = starts[-1]
        low = int(by_top_byte[after >> 24])
        starts.append((((after ^ int(_CRC_TABLE[low])) << 8) & 0xFFFFFFFF) | low)
    return np.array(starts, dtype=np.uint32)


_CRC_PADDED_STARTS = _crc32_padded_starts()


def _crc32_rows(data: np.ndarray, key_ends: np.ndarray, key_lengths: np.ndarray) -> np.ndarray:
    """zlib.crc32 of ``data[end - length : end]`` for every row (1 <= length <= _KEY_BOUND <= end)."""
    width = int(key_lengths.max())
    # One row per key, right-aligned; the bytes in front of a key are set to zero.
    keys = sliding_window_view(data, width)[key_ends - width]
    keys[np.arange(width) < (width - key_lengths)[:, None]] = 0
    columns = np.ascontiguousarray(keys.T)
    crc = _CRC_PADDED_STARTS[width - key_lengths]
    index = np.empty_like(crc)
    for column in columns:
        np.bitwise_xor(crc, column, out=index)
        np.bitwise_and(index, 0xFF, out=index)
        np.right_shift(crc, 8, out=crc)
        np.bitwise_xor(crc, _CRC_TABLE.take(index), out=crc)
    return crc ^ np.uint32(0xFFFFFFFF)


# -- one block of lines ---------------------------------------------------------------------------
@dataclass
class Counts:
    headers: int = 0
    blank: int = 0
    lines: int = 0


@dataclass(frozen=True)
class _Plan:
    """How to route the lines of a source: to one split (``to``), or by key."""

    layout: schema.Layout
    valid_fraction: float = 0.0
    to: str | None = None


@dataclass
class _Piece:
    """The lines of one block that go to one split: their bytes and where each line ends."""

    data: bytes
    line_ends: np.ndarray  # end offset of each line in ``data``, ascending


@dataclass
class _BlockResult:
    pieces: dict[str, _Piece]
    counts: Counts


def _split_block(block: bytes, plan: _Plan) -> _BlockResult:
    """Route every line of ``block`` (whole lines, the last one ending in a newline)."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == _NEWLINE) + 1
    starts = np.concatenate(([0], ends[:-1]))
    counts = Counts(lines=len(ends))
    layout = plan.layout

    keep = np.ones(len(ends), dtype=bool)
    # Only a line that starts with whitespace or with the header's first byte can be dropped.
    first = data[starts]
    maybe_dropped = np.flatnonzero(_WHITESPACE[first] | (first == layout.columns[0].encode()[0]))
    for line in maybe_dropped.tolist():
        kind = dropped_line(block[starts[line] : ends[line]], layout)
        if kind == "blank":
            counts.blank += 1
        elif kind == "header":
            counts.headers += 1
        keep[line] = kind is None

    if plan.to is not None:
        valid = np.full(len(ends), plan.to == "valid")
    else:
        valid = _valid_lines(block, data, starts, ends, keep, plan)
    lengths = ends - starts
    pieces = {}
    for name, chosen in (("train", keep & ~valid), ("valid", keep & valid)):
        picked = data[np.repeat(chosen, lengths)]
        pieces[name] = _Piece(picked.tobytes(), np.cumsum(lengths[chosen]))
    return _BlockResult(pieces, counts)


def _valid_lines(block: bytes, data, starts, ends, keep, plan: _Plan) -> np.ndarray:
    """``in_valid(crc32(row_key(line)))`` for every line of the block."""
    layout = plan.layout
    commas = np.flatnonzero(data == _COMMA)
    commas_before_end = np.searchsorted(commas, ends)
    width_ok = np.diff(commas_before_end, prepend=0) == len(layout.columns) - 1
    # The key runs from behind the line's last comma to its end, less one "\r" of a "\r\n".
    key_starts = commas[np.maximum(commas_before_end - 1, 0)] + 1 if len(commas) else np.zeros_like(ends)
    key_ends = ends - 1
    key_ends -= (data[np.maximum(key_ends - 1, 0)] == _CR) & (key_ends > key_starts)
    key_lengths = key_ends - key_starts
    plain = keep & width_ok & (key_lengths > 0) & (key_lengths <= _KEY_BOUND) & (key_ends >= _KEY_BOUND)
    if _key_column_is_last(layout):  # as in both course layouts; else every row goes one by one
        plain &= ~_WHITESPACE[data[np.minimum(key_starts, len(data) - 1)]] & ~_WHITESPACE[data[key_ends - 1]]
    else:
        plain[:] = False

    crc = np.zeros(len(ends), dtype=np.uint32)
    rows = np.flatnonzero(plain)
    if len(rows):
        crc[rows] = _crc32_rows(data, key_ends[rows], key_lengths[rows])
    for line in np.flatnonzero(keep & ~plain).tolist():
        crc[line] = zlib.crc32(row_key(block[starts[line] : ends[line]], layout))
    return in_valid(crc, plan.valid_fraction)


# -- reading blocks -------------------------------------------------------------------------------
def _blocks(path: Path, block_bytes: int):
    """The file in blocks of whole lines; the last block gets a final newline when it has none."""
    pending: list[bytes] = []  # the start of a line longer than what was read of it so far
    with open(path, "rb") as handle:
        while chunk := handle.read(block_bytes):
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                pending.append(chunk)
                continue
            yield b"".join([*pending, chunk[:cut]]) if pending or cut < len(chunk) else chunk
            pending = [chunk[cut:]] if cut < len(chunk) else []
    if pending:
        yield b"".join(pending) + b"\n"


# -- writing shards -------------------------------------------------------------------------------
def shard_name(split: str, index: int, count: int) -> str:
    """Where shard ``index`` of ``count`` of a split goes, relative to the dataset."""
    return f"{split}.csv" if count == 1 else f"{split}/{split}-{index:05d}-of-{count:05d}.csv"


def _b64(checksum: google_crc32c.Checksum) -> str:
    return base64.b64encode(checksum.digest()).decode("ascii")


@dataclass
class Shard:
    path: str  # relative to the dataset directory: train.csv, or train/train-00000-of-00004.csv
    local: Path
    rows: int
    bytes: int
    crc32c: str


@dataclass
class SplitWriter:
    """One split written as shards of at most ``shard_bytes``; counts and checksums what it writes."""

    out_dir: Path
    name: str
    shard_bytes: int
    rows: int = 0
    bytes: int = 0
    shards: list[Shard] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.shard_bytes < 1:
            raise IngestError(f"shard_bytes={self.shard_bytes}: expected a positive number of bytes")
        self._crc = google_crc32c.Checksum()  # of all shards, in order
        self._staged: list[tuple[Path, int, int, google_crc32c.Checksum]] = []
        self._handle = None
        self._open_next()

    def _open_next(self) -> None:
        if self._handle is not None:
            self._handle.close()
        path = self.out_dir / f".{self.name}-{len(self._staged):05d}.part"
        self._handle = open(path, "wb")  # noqa: SIM115 — closed in close()
        self._staged.append((path, 0, 0, google_crc32c.Checksum()))

    def _put(self, data: bytes, rows: int) -> None:
        path, shard_rows, shard_bytes, crc = self._staged[-1]
        self._handle.write(data)
        crc.update(data)
        self._crc.update(data)
        self._staged[-1] = (path, shard_rows + rows, shard_bytes + len(data), crc)
        self.rows += rows
        self.bytes += len(data)

    def write(self, piece: _Piece) -> None:
        """Append whole lines, starting a new shard where the next line would pass the bound."""
        data, ends, done = piece.data, piece.line_ends, 0
        while done < len(ends):
            room = self.shard_bytes - self._staged[-1][2]
            base = int(ends[done - 1]) if done else 0
            fit = int(np.searchsorted(ends, base + room, side="right"))
            if fit == done:
                if self._staged[-1][2] > 0:
                    self._open_next()
                    continue
                fit = done + 1  # a row longer than a shard: a shard of its own
            self._put(data[base : int(ends[fit - 1])], fit - done)
            done = fit

    def close(self) -> None:
        """Name the shards (``shard_name``) now that their number is known."""
        self._handle.close()
        if len(self._staged) > 1 and self._staged[-1][2] == 0:
            self._staged.pop()[0].unlink()
        count = len(self._staged)
        if count > 1:
            (self.out_dir / self.name).mkdir()
        for index, (path, rows, size, crc) in enumerate(self._staged):
            relative = shard_name(self.name, index, count)
            os.replace(path, self.out_dir / relative)
            self.shards.append(Shard(relative, self.out_dir / relative, rows, size, _b64(crc)))

    @property
    def crc32c(self) -> str:
        """CRC32C of the split's bytes (the shards in order), as GCS reports it."""
        return _b64(self._crc)


# -- the split of a source ------------------------------------------------------------------------
def write_splits(
    out_dir: Path,
    files: list[Path],
    presplit: dict[str, list[Path]] | None,
    layout: schema.Layout,
    valid_fraction: float,
    *,
    shard_bytes: int = SHARD_BYTES,
    block_bytes: int = BLOCK_BYTES,
    threads: int | None = None,
) -> tuple[dict[str, SplitWriter], Counts, dict]:
    """The splits of ``files`` by key (or the ``presplit`` files as they are) as shards in ``out_dir``.

    Returns the closed writers, the dropped-line counts and how the split was made (for the manifest).
    """
    writers = {name: SplitWriter(out_dir, name, shard_bytes) for name in SPLITS}
    if presplit:
        split_desc = {"method": "separate"}
        jobs = [(path, _Plan(layout, to=name)) for name in SPLITS for path in presplit[name]]
    else:
        split_desc = {"method": "hash", "field": schema.KEY, "valid_fraction": valid_fraction}
        jobs = [(path, _Plan(layout, valid_fraction)) for path in files]
    counts = Counts()
    threads = threads or usable_cores()
    # Blocks are split on the pool while the writer thread writes the finished ones in order;
    # at most ``threads + 1`` blocks wait, so memory does not grow with the input.
    finished: queue.Queue = queue.Queue(maxsize=threads + 1)
    failed: list[BaseException] = []

    def write_in_order() -> None:
        while (future := finished.get()) is not None:
            if failed:
                continue  # drain, so that the reader never blocks on a full queue
            try:
                result = future.result()
                for name, piece in result.pieces.items():
                    writers[name].write(piece)
                for name in ("headers", "blank", "lines"):
                    setattr(counts, name, getattr(counts, name) + getattr(result.counts, name))
            except Exception as exc:  # noqa: BLE001 — re-raised by the reading thread
                failed.append(exc)

    writer = threading.Thread(target=write_in_order, name="ingest-write", daemon=True)
    writer.start()
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest-split") as pool:
            try:
                blocks = ((block, plan) for path, plan in jobs for block in _blocks(path, block_bytes))
                for block, plan in blocks:
                    if failed:
                        break
                    finished.put(pool.submit(_split_block, block, plan))
            finally:
                finished.put(None)
                writer.join()
        if failed:
            raise failed[0]
    finally:
        for split_writer in writers.values():
            split_writer.close()
    return writers, counts, split_desc
