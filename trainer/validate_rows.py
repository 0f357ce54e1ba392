"""Row checks: every line of a split CSV goes to the clean file or the quarantine, and the counts must add up.

A split is one CSV file or several shards (a directory of ``.csv`` files, a glob, a comma list or
a list of paths). The verdict of each line comes from ``trainer.rowcheck`` (blocks of lines checked
on every usable core; ``classify_line`` for any line the vectorised checks are not certain about).
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import google_crc32c

from trainer import rowcheck, schema, storage
from trainer.rowcheck import CONTROL as _CONTROL  # noqa: F401  (the pattern other checks mirror)
from trainer.rowcheck import classify_line  # noqa: F401  (the one verdict of a line)
from trainer.validate_result import ShardReport, SplitReport

SplitSpec = str | os.PathLike | Sequence[str | os.PathLike]


class InvariantError(RuntimeError):
    """Lines went missing between input and outputs: a bug, never a data problem."""


def split_files(spec: SplitSpec) -> tuple[list[Path], bool]:
    """(input files, sharded) for one split: a CSV file (not sharded), or shards — a directory of
    ``.csv`` files, a glob, a comma-separated list, or a list of any of these.

    The files are ``storage.expand_files``'s (the grammar the trainer reads too), on the local file
    system. Raises FileNotFoundError naming the part that matched nothing.
    """
    files = [Path(p) for p in storage.expand_files(spec)]
    text = None if isinstance(spec, list | tuple) else [p.strip() for p in str(spec).split(",") if p.strip()]
    single = text is not None and len(text) == 1 and Path(text[0]).is_file()
    if not single:
        named: dict[str, Path] = {}
        for path in files:
            if path.name in named:
                raise ValueError(f"shards {named[path.name]} and {path} have the same name: clean shards keep names")
            named[path.name] = path
    return files, not single


def clean_paths(files: list[Path], sharded: bool, clean_path: str | os.PathLike) -> list[Path]:
    """Where each input file's clean lines go: ``clean_path`` itself, or a shard of the same name in it."""
    return [Path(clean_path) / path.name for path in files] if sharded else [Path(clean_path)]


def _describe(spec: SplitSpec) -> str:
    return ",".join(str(p) for p in spec) if isinstance(spec, list | tuple) else str(spec)


def _check_one(
    path: Path,
    clean_path: Path,
    quarantine_handle,
    layout: schema.Layout,
    split: str,
    checksums: list,
    **options,
) -> ShardReport:
    """Route every line of one file to ``clean_path`` or the quarantine; update ``checksums``."""
    reasons: Counter[str] = Counter()
    lines = clean = header = blank = newlines = written = 0
    last_byte = None
    head = rowcheck.entry_head(split, str(path))
    checksum = google_crc32c.Checksum()
    with open(clean_path, "wb") as out:
        for first_line, block in rowcheck.check_file_blocks(path, layout, **options):
            lines += block.lines
            clean += block.clean_lines
            header += block.header_lines
            blank += block.blank_lines
            reasons.update(block.reasons)
            last_byte = block.last_byte if block.last_byte is not None else last_byte
            newlines += block.clean_newlines
            if block.clean:
                written += out.write(block.clean)
                for sum_ in (checksum, *checksums):
                    sum_.update(block.clean)
            if block.quarantined:
                quarantine_handle.write(
                    "".join(rowcheck.entry_line(head, first_line + index, tail) for index, tail in block.quarantined)
                )
    quarantined = sum(reasons.values())
    rows = lines - header - blank
    if clean + quarantined != rows:
        raise InvariantError(
            f"{path}: {lines} lines but {clean} clean + {quarantined} quarantined + {header} header + {blank} blank"
        )
    size = clean_path.stat().st_size
    if newlines != clean or size != written:
        raise InvariantError(
            f"{clean_path}: wrote {newlines} lines in {written} bytes ({size} on disk), expected {clean} lines"
        )
    return ShardReport(
        source=str(path),
        clean_path=str(clean_path),
        lines=lines,
        rows=rows,
        clean=clean,
        quarantined=quarantined,
        header_lines=header,
        blank_lines=blank,
        reasons=dict(sorted(reasons.items())),
        final_newline=last_byte is None or last_byte == ord("\n"),
        clean_crc32c=base64.b64encode(checksum.digest()).decode("ascii"),
    )


def check_file(
    path: SplitSpec,
    clean_path: str | os.PathLike,
    quarantine_handle,
    layout: schema.Layout,
    split: str,
    *,
    block_bytes: int = rowcheck.BLOCK_BYTES,
    workers: int | None = None,
    vectorised: bool = True,
) -> SplitReport:
    """Route every line of a split to ``clean_path`` or the quarantine; return the counts.

    ``path`` is one CSV (``clean_path`` is then a file) or shards (see ``split_files``;
    ``clean_path`` is then a directory receiving clean shards of the same names). Each quarantine
    entry names the file its line came from. ``vectorised=False`` judges every line with
    ``classify_line`` alone (the reference the fast checks must match).
    """
    files, sharded = split_files(path)
    targets = clean_paths(files, sharded, clean_path)
    if sharded:
        Path(clean_path).mkdir(parents=True, exist_ok=True)
    total = google_crc32c.Checksum()
    options = {"block_bytes": block_bytes, "workers": workers, "vectorised": vectorised}
    shards = [
        _check_one(source, target, quarantine_handle, layout, split, [total], **options)
        for source, target in zip(files, targets)
    ]
    reasons = sum((Counter(s.reasons) for s in shards), Counter())
    rows, quarantined = sum(s.rows for s in shards), sum(s.quarantined for s in shards)
    return SplitReport(
        name=split,
        source=_describe(path) if sharded else str(files[0]),
        clean_path=str(clean_path),
        lines=sum(s.lines for s in shards),
        rows=rows,
        clean=sum(s.clean for s in shards),
        quarantined=quarantined,
        header_lines=sum(s.header_lines for s in shards),
        blank_lines=sum(s.blank_lines for s in shards),
        reasons=dict(sorted(reasons.items())),
        bad_fraction=(quarantined / rows) if rows else 0.0,
        final_newline=all(s.final_newline for s in shards),
        clean_crc32c=base64.b64encode(total.digest()).decode("ascii"),
        shards=shards if sharded else None,
    )
