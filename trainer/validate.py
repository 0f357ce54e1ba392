"""Local validation before paying for the cloud: row checks, a smoke run, a Markdown report.

1. Row checks (``trainer.validate_rows``). Every line of the train and valid CSVs is read as bytes
   and ends up in exactly one place: the clean file (byte-identical line), the quarantine file (the
   original line with the reason, a detail and its line number), or the header/blank counts. That
   sum is checked in code for every file. Reasons come from ``trainer.schema`` (``check_row``) plus
   two for lines that are not text rows at all (binary data, a header of the wrong layout). The
   step fails with a ``ValidationError`` — counts per reason and where the quarantine file is —
   when a split is empty or its bad share exceeds ``max_bad_fraction``.
2. Smoke run (``trainer.validate_smoke``). ``smoke_steps`` training steps on a sample of the clean
   rows through ``trainer.task.main``; the export must exist, reload with
   ``trainer.predictor.Predictor`` and give a finite fare for the layout's test instance.
3. A Markdown report (``report.md``, ``trainer.validate_report``) and the result as JSON
   (``validation.json``, ``trainer.validate_result``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from trainer import schema, storage
from trainer.ingest_split import IngestError, detect_file_layout
from trainer.validate_report import render_report
from trainer.validate_result import SPLITS, SplitReport, ValidationError, ValidationResult
from trainer.validate_rows import InvariantError, check_file
from trainer.validate_smoke import DEFAULT_SMOKE_ROWS, smoke_run

logger = logging.getLogger(__name__)

QUARANTINE_NAME = "quarantine.jsonl"
REPORT_NAME = "report.md"
RESULT_NAME = "validation.json"


def _resolve_layout(train_path: Path, valid_path: Path, layout: str | None) -> schema.Layout:
    if layout and layout != "auto":
        return schema.get_layout(layout)
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
