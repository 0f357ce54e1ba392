"""The ingest split: the layout of the fetched CSVs, the stable key-hash split, and checksummed train/valid writers."""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

from trainer import schema

SPLITS = ("train", "valid")
_HASH_BUCKETS = 1_000_000
_LAYOUT_SCAN_LINES = 1000


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


# -- the split ------------------------------------------------------------------------------------
class SplitWriter:
    """One output CSV: counts rows and bytes and checksums what it writes (buffered)."""

    _FLUSH_LINES = 8192

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = open(path, "wb")  # noqa: SIM115 — closed in close()
        self.rows = 0
        self.bytes = 0
        self.crc = google_crc32c.Checksum()
        self._pending: list[bytes] = []

    def write(self, line: bytes) -> None:
        self._pending.append(line)
        if len(self._pending) >= self._FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            block = b"".join(self._pending)
            self.handle.write(block)
            self.crc.update(block)
            self.rows += len(self._pending)
            self.bytes += len(block)
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        self.handle.close()

    @property
    def crc32c(self) -> str:
        return base64.b64encode(self.crc.digest()).decode("ascii")


def _row_key(raw: bytes, layout: schema.Layout) -> bytes:
    """The key column of a row of the layout's width (the key is its last column), else the line."""
    line = raw.rstrip(b"\r\n")
    if line.count(b",") == len(layout.columns) - 1:
        if layout.columns[-1] == schema.KEY:
            key = line[line.rfind(b",") + 1 :].strip()
        else:
            key = line.split(b",")[layout.columns.index(schema.KEY)].strip()
        if key:
            return key
    return line


def is_valid_row(key: bytes, valid_fraction: float) -> bool:
    """Stable split: a row is in valid when crc32(key) falls in the first `valid_fraction` of buckets."""
    return zlib.crc32(key) % _HASH_BUCKETS < round(valid_fraction * _HASH_BUCKETS)


@dataclass
class Counts:
    headers: int = 0
    blank: int = 0
    lines: int = 0


def write_splits(
    out_dir: Path,
    files: list[Path],
    presplit: dict[str, list[Path]] | None,
    layout: schema.Layout,
    valid_fraction: float,
) -> tuple[dict[str, SplitWriter], Counts, dict]:
    """``out_dir``/train.csv and valid.csv: ``presplit`` files as they are, else ``files`` split by key.

    Returns the closed writers, the dropped-line counts and how the split was made (for the manifest).
    """
    writers = {name: SplitWriter(out_dir / f"{name}.csv") for name in SPLITS}
    counts = Counts()
    try:
        if presplit:
            split_desc = {"method": "separate"}
            for name in SPLITS:
                _copy_lines(presplit[name], layout, lambda raw, n=name: writers[n], counts)
        else:
            split_desc = {"method": "hash", "field": schema.KEY, "valid_fraction": valid_fraction}
            _split_by_key(files, layout, valid_fraction, writers, counts)
    finally:
        for writer in writers.values():
            writer.close()
    return writers, counts, split_desc


def _copy_lines(files, layout, route, counts: Counts) -> None:
    """Stream every line of ``files`` to ``route(raw) -> writer``; drop headers and blank lines."""
    header_start = layout.columns[0].encode()
    for path in files:
        with open(path, "rb") as handle:
            for raw in handle:
                counts.lines += 1
                if raw.isspace():
                    counts.blank += 1
                    continue
                # Only a header of this layout is dropped; any other line is data for the
                # validator to judge (and quarantine).
                if raw.lstrip().startswith(header_start) and _is_layout_header(raw, layout):
                    counts.headers += 1
                    continue
                if not raw.endswith(b"\n"):
                    raw += b"\n"
                route(raw).write(raw)


def _split_by_key(files, layout, valid_fraction: float, writers: dict, counts: Counts) -> None:
    """``_copy_lines`` routed by ``is_valid_row(_row_key(line))``, inlined: this loop is the
    whole cost of a re-ingest, and function calls per line doubled it."""
    threshold = round(valid_fraction * _HASH_BUCKETS)
    commas = len(layout.columns) - 1
    key_last = layout.columns[-1] == schema.KEY
    header_start = layout.columns[0].encode()
    crc32, buckets = zlib.crc32, _HASH_BUCKETS
    train, valid = writers["train"].write, writers["valid"].write
    for path in files:
        with open(path, "rb") as handle:
            for raw in handle:
                counts.lines += 1
                if raw.isspace():
                    counts.blank += 1
                    continue
                if raw.lstrip().startswith(header_start) and _is_layout_header(raw, layout):
                    counts.headers += 1
                    continue
                if raw[-1:] != b"\n":
                    raw += b"\n"
                if key_last:
                    line = raw.rstrip(b"\r\n")
                    key = line
                    if line.count(b",") == commas:
                        key = line[line.rfind(b",") + 1 :].strip() or line
                else:
                    key = _row_key(raw, layout)
                (valid if crc32(key) % buckets < threshold else train)(raw)
