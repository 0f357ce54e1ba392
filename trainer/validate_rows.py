"""Row checks: every line of a split CSV goes to the clean file or the quarantine, and the counts must add up."""

from __future__ import annotations

import base64
import json
import os
import re
from collections import Counter
from pathlib import Path

import google_crc32c

from trainer import schema
from trainer.validate_result import SplitReport

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class InvariantError(RuntimeError):
    """Lines went missing between input and outputs: a bug, never a data problem."""


def classify_line(raw: bytes, layout: schema.Layout) -> tuple[str | None, str]:
    """(reason, detail) for one line (newline included or not); reason "header" for a header."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return schema.REASON_BINARY, f"not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})"
    text = text.rstrip("\r\n")
    control = _CONTROL.search(text)
    if control:
        return schema.REASON_BINARY, f"control character {control.group()!r} at column {control.start() + 1}"
    fields = text.split(",")
    if schema.is_header(fields):
        names = tuple(f.strip() for f in fields)
        if names == layout.columns:
            return "header", ""
        return schema.REASON_BAD_HEADER, f"header {','.join(names)!r} is not the {layout.name} layout's"
    return schema.check_row(fields, layout)


def _quarantine_entry(split: str, source: str, number: int, raw: bytes, reason: str, detail: str) -> dict:
    line = raw[:-1] if raw.endswith(b"\n") else raw
    entry = {"split": split, "file": source, "line": number, "reason": reason, "detail": detail}
    try:
        entry["text"] = line.decode("utf-8")
    except UnicodeDecodeError:
        entry["text"] = None
        entry["raw_base64"] = base64.b64encode(line).decode("ascii")
    return entry


def check_file(
    path: str | os.PathLike,
    clean_path: str | os.PathLike,
    quarantine_handle,
    layout: schema.Layout,
    split: str,
) -> SplitReport:
    """Route every line of ``path`` to ``clean_path`` or the quarantine; return the counts."""
    path, clean_path = Path(path), Path(clean_path)
    reasons: Counter[str] = Counter()
    lines = clean = header = blank = 0
    last = b""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as source, open(clean_path, "wb") as out:
        for number, raw in enumerate(source, 1):
            lines, last = number, raw
            if not raw.strip():
                blank += 1
                continue
            reason, detail = classify_line(raw, layout)
            if reason == "header":
                header += 1
            elif reason is None:
                line = raw if raw.endswith(b"\n") else raw + b"\n"
                out.write(line)
                checksum.update(line)
                clean += 1
            else:
                if not raw.endswith(b"\n"):
                    detail += " (last line has no newline: truncated?)"
                reasons[reason] += 1
                entry = _quarantine_entry(split, str(path), number, raw, reason, detail)
                quarantine_handle.write(json.dumps(entry) + "\n")
    quarantined = sum(reasons.values())
    rows = lines - header - blank
    if clean + quarantined != rows:
        raise InvariantError(
            f"{path}: {lines} lines but {clean} clean + {quarantined} quarantined + {header} header + {blank} blank"
        )
    with open(clean_path, "rb") as written:
        written_lines = sum(1 for _ in written)
    if written_lines != clean:
        raise InvariantError(f"{clean_path}: wrote {written_lines} lines, expected {clean}")
    return SplitReport(
        name=split,
        source=str(path),
        clean_path=str(clean_path),
        lines=lines,
        rows=rows,
        clean=clean,
        quarantined=quarantined,
        header_lines=header,
        blank_lines=blank,
        reasons=dict(sorted(reasons.items())),
        bad_fraction=(quarantined / rows) if rows else 0.0,
        final_newline=(not last) or last.endswith(b"\n"),
        clean_crc32c=base64.b64encode(checksum.digest()).decode("ascii"),
    )
