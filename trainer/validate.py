"""Local validation before paying for the cloud: row checks, a smoke run, a Markdown report.

1. Row checks. Every line of the train and valid CSVs is read as bytes and ends up in exactly one
   place: the clean file (byte-identical line), the quarantine file (the original line with the
   reason, a detail and its line number), or the header/blank counts. That sum is checked in code
   for every file. Reasons come from ``trainer.schema`` (``check_row``) plus two for lines that are
   not text rows at all (binary data, a header of the wrong layout). The step fails with a
   ``ValidationError`` — counts per reason and where the quarantine file is — when a split is
   empty or its bad share exceeds ``max_bad_fraction``.
2. Smoke run. ``smoke_steps`` training steps on a sample of the clean rows through
   ``trainer.task.main``; the export must exist, reload with ``trainer.predictor.Predictor`` and
   give a finite fare for the layout's test instance.
3. A Markdown report (``report.md``) and the result as JSON (``validation.json``).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import time
from collections import Counter
from pathlib import Path

import google_crc32c
from pydantic import BaseModel

from trainer import schema, storage

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid")
QUARANTINE_NAME = "quarantine.jsonl"
REPORT_NAME = "report.md"
RESULT_NAME = "validation.json"
DEFAULT_SMOKE_ROWS = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EXAMPLES = 5


class ValidationError(RuntimeError):
    """The data failed validation; ``.result`` holds the full ValidationResult when one exists."""

    def __init__(self, message: str, result: ValidationResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class InvariantError(RuntimeError):
    """Lines went missing between input and outputs: a bug, never a data problem."""


class SplitReport(BaseModel):
    name: str
    source: str
    clean_path: str
    lines: int  # physical lines read
    rows: int  # lines that are neither header nor blank
    clean: int
    quarantined: int
    header_lines: int
    blank_lines: int
    reasons: dict[str, int]
    bad_fraction: float
    final_newline: bool  # False when the last line has no newline (maybe truncated)
    clean_crc32c: str


class SmokeResult(BaseModel):
    steps: int
    train_rows: int
    valid_rows: int
    export_dir: str
    instance: dict
    prediction: float
    seconds: float


class ValidationResult(BaseModel):
    layout: str
    train: SplitReport
    valid: SplitReport
    max_bad_fraction: float
    passed: bool
    failures: list[str]
    quarantine: str  # local path of the quarantine JSONL
    quarantine_uri: str | None = None
    report_path: str
    report_markdown: str
    smoke: SmokeResult | None = None

    @property
    def splits(self) -> dict[str, SplitReport]:
        return {"train": self.train, "valid": self.valid}

    @property
    def clean_train(self) -> Path:
        return Path(self.train.clean_path)

    @property
    def clean_valid(self) -> Path:
        return Path(self.valid.clean_path)

    @property
    def clean_train_rows(self) -> int:
        return self.train.clean

    @property
    def clean_valid_rows(self) -> int:
        return self.valid.clean

    @property
    def total_rows(self) -> int:
        return self.train.rows + self.valid.rows

    @property
    def clean_rows(self) -> int:
        return self.train.clean + self.valid.clean

    @property
    def bad_rows(self) -> int:
        return self.train.quarantined + self.valid.quarantined

    @property
    def bad_by_reason(self) -> dict[str, int]:
        total = Counter(self.train.reasons) + Counter(self.valid.reasons)
        return dict(sorted(total.items()))

    def metadata(self) -> dict:
        return {
            "layout": self.layout,
            "rows": self.total_rows,
            "clean_rows": self.clean_rows,
            "bad_rows": self.bad_rows,
            "bad_by_reason": self.bad_by_reason,
            "passed": self.passed,
            "smoke_prediction": self.smoke.prediction if self.smoke else None,
        }


# -- row checks ----------------------------------------------------------------------------------
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


def _resolve_layout(train_path: Path, valid_path: Path, layout: str | None) -> schema.Layout:
    if layout and layout != "auto":
        return schema.get_layout(layout)
    from trainer.ingest import IngestError, detect_file_layout

    found = {}
    for path in (train_path, valid_path):
        try:
            detected = detect_file_layout(path)
        except IngestError as exc:
            raise ValidationError(str(exc)) from None
        if detected is not None:
            found[path] = detected
    if not found:
        raise ValidationError(f"{train_path} and {valid_path} hold no data rows (empty files)")
    if len({lay.name for lay in found.values()}) > 1:
        described = ", ".join(f"{p} is {lay.name}" for p, lay in found.items())
        raise ValidationError(f"train and valid files have different layouts: {described}")
    return next(iter(found.values()))


def _failures(reports: dict[str, SplitReport], max_bad_fraction: float) -> list[str]:
    problems = []
    for name, rep in reports.items():
        if rep.rows == 0:
            problems.append(f"{name}: {rep.source} has no data rows ({rep.lines} lines)")
        elif rep.bad_fraction > max_bad_fraction:
            reasons = ", ".join(f"{r}={n}" for r, n in rep.reasons.items())
            problems.append(
                f"{name}: {rep.quarantined} of {rep.rows} rows bad ({rep.bad_fraction:.1%} > "
                f"max_bad_fraction {max_bad_fraction:.1%}: {reasons})"
            )
    return problems


# -- smoke run -----------------------------------------------------------------------------------
def _head(src: Path, dst: Path, rows: int) -> int:
    count = 0
    with open(src, "rb") as source, open(dst, "wb") as out:
        for line in source:
            if count >= rows:
                break
            out.write(line)
            count += 1
    return count


def smoke_run(
    clean_train: Path,
    clean_valid: Path,
    work_dir: Path,
    layout: schema.Layout,
    *,
    steps: int = 10,
    rows: int = DEFAULT_SMOKE_ROWS,
    batch_size: int = 64,
) -> SmokeResult:
    """Train ``steps`` steps on a sample, reload the export, predict the layout's test instance."""
    from trainer import predictor, task

    started = time.perf_counter()
    work_dir.mkdir(parents=True, exist_ok=True)
    train_rows = _head(clean_train, work_dir / "train.csv", rows)
    valid_rows = _head(clean_valid, work_dir / "valid.csv", rows)
    output_dir = work_dir / "model"
    argv = [
        "--train_data_paths",
        str(work_dir / "train.csv"),
        "--eval_data_paths",
        str(work_dir / "valid.csv"),
        "--output_dir",
        str(output_dir),
        "--train_steps",
        str(steps),
        "--train_batch_size",
        str(batch_size),
        "--layout",
        layout.name,
        "--eval_steps",
        "1",
    ]
    code = task.main(argv)
    if code != 0:
        raise ValidationError(f"smoke run: the trainer exited with code {code} ({' '.join(argv)})")
    exporter = output_dir / "export" / "exporter"
    try:
        model_dir = predictor.find_saved_model(exporter)
        loaded = predictor.Predictor.load(model_dir)
    except (predictor.ModelNotFoundError, predictor.ModelLoadError) as exc:
        raise ValidationError(f"smoke run: no usable export under {exporter}: {exc}") from None
    instance = dict(schema.TEST_INSTANCES[layout.name])
    try:
        (fare,) = loaded.predict([instance])
    except predictor.InstanceError as exc:
        raise ValidationError(f"smoke run: the exported model rejects the test instance: {exc}") from None
    if not math.isfinite(fare):
        raise ValidationError(f"smoke run: the exported model predicts {fare} for {instance}")
    return SmokeResult(
        steps=steps,
        train_rows=train_rows,
        valid_rows=valid_rows,
        export_dir=str(model_dir),
        instance=instance,
        prediction=float(fare),
        seconds=round(time.perf_counter() - started, 3),
    )


# -- report --------------------------------------------------------------------------------------
def _examples(quarantine_path: Path, limit: int = _EXAMPLES) -> list[dict]:
    found = []
    with open(quarantine_path) as handle:
        for line in handle:
            if len(found) >= limit:
                break
            found.append(json.loads(line))
    return found


def _md_cell(text: str | None) -> str:
    if text is None:
        return "*(binary)*"
    text = text if len(text) <= 80 else text[:77] + "..."
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def render_report(
    layout: schema.Layout,
    reports: dict[str, SplitReport],
    max_bad_fraction: float,
    failures: list[str],
    quarantine_path: Path,
    smoke: SmokeResult | None,
    smoke_note: str,
    quarantine_where: str | None = None,
) -> str:
    verdict = "PASSED" if not failures else "FAILED"
    lines = [
        "# Data validation",
        "",
        f"**{verdict}** — layout `{layout.name}`, max_bad_fraction {max_bad_fraction:.1%}.",
        "",
        "| split | lines | rows | clean | quarantined | bad share | header | blank |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rep in reports.values():
        lines.append(
            f"| {rep.name} | {rep.lines} | {rep.rows} | {rep.clean} | {rep.quarantined} | "
            f"{rep.bad_fraction:.2%} | {rep.header_lines} | {rep.blank_lines} |"
        )
    reasons = sorted({r for rep in reports.values() for r in rep.reasons})
    if reasons:
        lines += ["", "## Quarantined rows by reason", "", "| reason | train | valid |", "|---|---:|---:|"]
        for reason in reasons:
            counts = " | ".join(str(reports[s].reasons.get(reason, 0)) for s in SPLITS)
            lines.append(f"| {reason} | {counts} |")
        lines += ["", f"Quarantine file: `{quarantine_where or quarantine_path}`", "", "First quarantined lines:", ""]
        lines += ["| split | line | reason | detail | text |", "|---|---:|---|---|---|"]
        for entry in _examples(quarantine_path):
            lines.append(
                f"| {entry['split']} | {entry['line']} | {entry['reason']} | "
                f"{entry['detail'].replace('|', '/')} | {_md_cell(entry.get('text'))} |"
            )
    for rep in reports.values():
        if not rep.final_newline:
            lines += ["", f"Note: the last line of {rep.name} ({rep.source}) has no newline."]
    if failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    lines += ["", "## Smoke run", ""]
    if smoke is not None:
        lines += [
            f"{smoke.steps} training steps on {smoke.train_rows} rows (eval {smoke.valid_rows}) in "
            f"{smoke.seconds:.1f} s; export `{smoke.export_dir}` reloaded; test instance → "
            f"fare {smoke.prediction:.2f}.",
        ]
    else:
        lines.append(smoke_note)
    return "\n".join(lines) + "\n"


# -- the step ------------------------------------------------------------------------------------
def validate(
    train_path: str | os.PathLike,
    valid_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_bad_fraction: float = 0.05,
    smoke_steps: int = 10,
    smoke_rows: int = DEFAULT_SMOKE_ROWS,
    layout: str | None = None,
    quarantine_uri: str | None = None,
) -> ValidationResult:
    """Check every row, smoke-train, write clean files + quarantine + report under ``out_dir``.

    Raises ValidationError (with ``.result``) when a split is empty, its bad share exceeds
    ``max_bad_fraction`` or the smoke run fails. ``smoke_steps=0`` skips the smoke run.
    ``quarantine_uri`` (gs:// or a path) also receives the quarantine file, before any failure.
    """
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction={max_bad_fraction}: expected a number from 0 to 1")
    if smoke_steps < 0:
        raise ValueError(f"smoke_steps={smoke_steps}: expected 0 (skip) or more")
    paths = {"train": Path(train_path), "valid": Path(valid_path)}
    for name, path in paths.items():
        if not path.is_file():
            raise ValidationError(f"{name} file not found: {path}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, path in paths.items():
        for produced in (out / f"{n}.csv" for n in SPLITS):
            if produced.exists() and produced.samefile(path):
                raise ValueError(f"out_dir {out} would overwrite the {name} input {path}: use another directory")
    lay = _resolve_layout(paths["train"], paths["valid"], layout)

    quarantine_path = out / QUARANTINE_NAME
    with open(quarantine_path, "w") as quarantine:
        reports = {name: check_file(path, out / f"{name}.csv", quarantine, lay, name) for name, path in paths.items()}
    with open(quarantine_path, "rb") as handle:
        if sum(1 for _ in handle) != sum(r.quarantined for r in reports.values()):
            raise InvariantError(f"{quarantine_path}: entry count differs from the quarantined rows")
    if quarantine_uri:
        storage.upload_file(quarantine_path, quarantine_uri, overwrite=True, content_type="application/jsonl")
    where = quarantine_uri or str(quarantine_path)
    failures = _failures(reports, max_bad_fraction)

    smoke, smoke_note = None, f"Skipped (smoke_steps={smoke_steps})."
    if failures:
        smoke_note = "Not run: the row checks failed."
    elif smoke_steps > 0:
        try:
            smoke = smoke_run(
                Path(reports["train"].clean_path),
                Path(reports["valid"].clean_path),
                out / "smoke",
                lay,
                steps=smoke_steps,
                rows=smoke_rows,
            )
        except ValidationError as exc:
            failures.append(str(exc))
            smoke_note = f"Failed: {exc}"

    report_path = out / REPORT_NAME
    markdown = render_report(lay, reports, max_bad_fraction, failures, quarantine_path, smoke, smoke_note, where)
    report_path.write_text(markdown)
    result = ValidationResult(
        layout=lay.name,
        train=reports["train"],
        valid=reports["valid"],
        max_bad_fraction=max_bad_fraction,
        passed=not failures,
        failures=failures,
        quarantine=str(quarantine_path),
        quarantine_uri=quarantine_uri,
        report_path=str(report_path),
        report_markdown=markdown,
        smoke=smoke,
    )
    (out / RESULT_NAME).write_text(result.model_dump_json(indent=2) + "\n")
    for rep in reports.values():
        logger.info(
            "%s: %d rows, %d clean, %d quarantined %s",
            rep.name,
            rep.rows,
            rep.clean,
            rep.quarantined,
            rep.reasons or "",
        )
    if failures:
        raise ValidationError("validation failed: " + "; ".join(failures) + f"; quarantined rows: {where}", result)
    return result
