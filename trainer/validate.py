"""Local validation before paying for the cloud: row checks, a smoke run, a Markdown report.

1. Row checks (``trainer.validate_rows``, ``trainer.rowcheck``). Every line of the train and valid
   CSVs is read as bytes and ends up in exactly one place: the clean file (byte-identical line), the
   quarantine file (the original line with the reason, a detail, its file and line number), or the
   header/blank counts. That sum is checked in code for every file. A split given as shards (a
   directory of ``.csv`` files or a list) gets a directory of clean shards of the same names.
   Reasons come from ``trainer.schema`` (``check_row``) plus two for lines that are not text rows
   at all (binary data, a header of the wrong layout). The step fails with a ``ValidationError``
   — counts per reason and where the quarantine file is — when a split is empty or its bad share
   exceeds ``max_bad_fraction``.
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
from trainer.validate_result import SplitReport, ValidationError, ValidationResult
from trainer.validate_rows import InvariantError, SplitSpec, check_file, clean_paths, split_files
from trainer.validate_smoke import DEFAULT_SMOKE_ROWS, smoke_run

logger = logging.getLogger(__name__)

QUARANTINE_NAME = "quarantine.jsonl"
REPORT_NAME = "report.md"
RESULT_NAME = "validation.json"


def _resolve_layout(inputs: dict[str, list[Path]], layout: str | None) -> schema.Layout:
    if layout and layout != "auto":
        return schema.get_layout(layout)
    found = {}
    for path in (path for files in inputs.values() for path in files):
        try:
            detected = detect_file_layout(path)
        except IngestError as exc:
            raise ValidationError(f"{path}: {exc}") from None
        if detected is not None:
            found[path] = detected
    if not found:
        described = " and ".join(", ".join(str(p) for p in files) for files in inputs.values())
        raise ValidationError(f"{described} hold no data rows (empty files)")
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


def _first_clean_file(report: SplitReport) -> Path:
    """The clean file of a split, or of a sharded split its first shard holding rows (smoke sample)."""
    if report.shards is None:
        return Path(report.clean_path)
    return Path(next((s.clean_path for s in report.shards if s.clean), report.shards[0].clean_path))


def _clean_target(out: Path, name: str, sharded: bool) -> Path:
    return out / name if sharded else out / f"{name}.csv"


# -- the step ------------------------------------------------------------------------------------
def validate(
    train_path: SplitSpec,
    valid_path: SplitSpec,
    out_dir: str | os.PathLike,
    *,
    max_bad_fraction: float = 0.05,
    smoke_steps: int = 10,
    smoke_rows: int = DEFAULT_SMOKE_ROWS,
    layout: str | None = None,
    quarantine_uri: str | None = None,
) -> ValidationResult:
    """Check every row, smoke-train, write clean files + quarantine + report under ``out_dir``.

    Each split is a CSV file (clean rows go to ``out_dir/<split>.csv``) or shards: a directory of
    ``.csv`` files, a glob or a list (clean shards of the same names go to ``out_dir/<split>/``).

    Raises ValidationError (with ``.result``) when a split is empty, its bad share exceeds
    ``max_bad_fraction`` or the smoke run fails. ``smoke_steps=0`` skips the smoke run.
    ``quarantine_uri`` (gs:// or a path) also receives the quarantine file, before any failure.
    """
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction={max_bad_fraction}: expected a number from 0 to 1")
    if smoke_steps < 0:
        raise ValueError(f"smoke_steps={smoke_steps}: expected 0 (skip) or more")
    specs = {"train": train_path, "valid": valid_path}
    inputs: dict[str, tuple[list[Path], bool]] = {}
    for name, spec in specs.items():
        try:
            inputs[name] = split_files(spec)
        except FileNotFoundError as exc:
            raise ValidationError(f"{name} file not found: {exc}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    produced = [
        target
        for n, (files, sharded) in inputs.items()
        for target in clean_paths(files, sharded, _clean_target(out, n, sharded))
    ]
    shard_dirs = [_clean_target(out, n, True) for n, (_, sharded) in inputs.items() if sharded]
    for name, (files, _) in inputs.items():
        for path in files:
            if any(p.exists() and p.samefile(path) for p in produced) or any(
                d.is_dir() and d.samefile(path.parent) for d in shard_dirs
            ):
                raise ValueError(f"out_dir {out} would overwrite the {name} input {path}: use another directory")
    for shard_dir in shard_dirs:
        for stale in shard_dir.glob("*.csv") if shard_dir.is_dir() else ():  # clean shards of an earlier run
            stale.unlink()
    lay = _resolve_layout({name: files for name, (files, _) in inputs.items()}, layout)

    quarantine_path = out / QUARANTINE_NAME
    with open(quarantine_path, "w") as quarantine:
        reports = {
            name: check_file(specs[name], _clean_target(out, name, sharded), quarantine, lay, name)
            for name, (_, sharded) in inputs.items()
        }
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
                _first_clean_file(reports["train"]),
                _first_clean_file(reports["valid"]),
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
