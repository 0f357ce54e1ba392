"""Data verbs: ``taxifare ingest``, ``taxifare validate`` and ``taxifare gcs-emulator``."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import typer

from trainer import schema, storage
from trainer.config import load_settings

# Errors a user can cause (bad source, bucket, data): one line on stderr, exit code 2.
_USER_ERRORS: tuple[type[BaseException], ...] = (storage.StorageError, schema.LayoutError, ValueError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from trainer import ingest, validate

    return _USER_ERRORS + (ingest.SourceError, ingest.IngestError, validate.ValidationError)


def _fail(exc: BaseException) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


def ingest_command(
    source: str = typer.Argument(
        "synthetic://?rows=10000&layout=lab&seed=0",
        help="Local file/glob/directory, https:// URL, gs:// URI, bq://project.dataset.table, "
        "bq://?query=SELECT…, or synthetic://?rows=N&layout=lab|dated&seed=S.",
    ),
    bucket: str = typer.Option(None, help="Destination bucket (default: the configured bucket)."),
    prefix: str = typer.Option(None, help="Object prefix (default: the configured prefix)."),
    valid_source: str = typer.Option(None, help="A separate source for the validation rows."),
    valid_fraction: float = typer.Option(schema.VALID_FRACTION, help="Share of rows hashed into valid (one source)."),
    local_root: Path = typer.Option(None, help="Write to this local directory instead of a bucket."),
    overwrite: bool = typer.Option(False, help="Replace objects that hold different bytes."),
    progress: bool = typer.Option(True, help="Progress bars for large files."),
    project: str = typer.Option(None, help="Project for BigQuery jobs (default: configured)."),
    bigquery_endpoint: str = typer.Option(None, help="BigQuery API endpoint (tests, proxies)."),
    keep_local: Path = typer.Option(None, help="Also keep train.csv/valid.csv (or their shards) in this directory."),
    shard_bytes: int = typer.Option(
        None,
        help="Most bytes of one file; a larger split becomes shards train/train-00000-of-0000N.csv … "
        "(default: trainer.ingest_split.SHARD_BYTES, 256 MiB).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
) -> None:
    """Split SOURCE into train/valid CSVs and upload them to gs://BUCKET/PREFIX/data/<id>/ (CRC32C-checked)."""
    from trainer import ingest

    sharding = {} if shard_bytes is None else {"shard_bytes": shard_bytes}

    try:
        settings = load_settings()
        result = ingest.ingest(
            source,
            bucket=None if local_root else (bucket or settings.bucket),
            prefix=settings.prefix if prefix is None else prefix,
            valid_source=valid_source,
            valid_fraction=valid_fraction,
            local_root=local_root,
            overwrite=overwrite,
            progress=progress,
            project=project or (settings.project if source.startswith("bq://") else None),
            bigquery_endpoint=bigquery_endpoint,
            keep_local=keep_local,
            **sharding,
        )
    except _user_errors() as exc:
        _fail(exc)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(f"dataset {result.dataset_id} ({result.layout}) at {result.dataset_uri}")
    for split in result.splits.values():
        state = "uploaded" if split.uploaded else "already there"
        shards = f" in {len(split.shards)} shards" if len(split.shards) > 1 else ""
        typer.echo(f"  {split.name}: {split.rows} rows, {split.bytes} bytes{shards}, crc32c {split.crc32c} — {state}")
    typer.echo(f"  uploaded {len(result.uploaded)}, skipped {len(result.skipped)} in {result.seconds:.2f} s")


def validate_command(
    train: str = typer.Argument(
        None, help="Train CSV or folder of shards (local path or gs://), or a bq://project.dataset.table."
    ),
    valid: str = typer.Argument(
        None, help="Valid CSV or folder of shards, or a bq:// table; for a bq:// TRAIN it may be left out."
    ),
    dataset: str = typer.Option(
        None, help="An ingested dataset (…/data/<id>) instead of TRAIN VALID; checked against its manifest."
    ),
    out: Path = typer.Option(Path("build/validate"), help="Where clean files, quarantine and report go."),
    max_bad_fraction: float = typer.Option(0.05, help="Fail when a split's bad share is above this."),
    smoke_steps: int = typer.Option(10, help="Training steps of the smoke run (0 skips it)."),
    layout: str = typer.Option("auto", help="auto, lab or dated."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    export: str = typer.Option(
        None, help="bq:// sources: the gs:// prefix the clean rows are exported to (<prefix>/<split>/…)."
    ),
    valid_fraction: float = typer.Option(
        schema.VALID_FRACTION, help="bq:// TRAIN without VALID: share of rows split into valid by key."
    ),
) -> None:
    """Check every row (quarantining bad ones), smoke-train, and write a Markdown report.

    A bq:// table is checked in BigQuery (one query job: quarantine table, clean rows exported to
    --export, counts per reason); no row is downloaded."""
    from trainer import ingest, validate

    if train and train.startswith("bq://"):
        _validate_in_bigquery(train, valid, export, valid_fraction, max_bad_fraction, layout, as_json)
        return
    try:
        inputs = out / "input"
        if dataset:
            if train or valid:
                raise ValueError("give either --dataset or TRAIN VALID, not both")
            train_path, valid_path, _ = ingest.download_dataset(dataset, inputs)
        else:
            if not (train and valid):
                raise ValueError("give TRAIN and VALID files (or --dataset)")
            train_path = _local_copy(train, inputs / "train.csv")
            valid_path = _local_copy(valid, inputs / "valid.csv")
        result = validate.validate(
            train_path,
            valid_path,
            out,
            max_bad_fraction=max_bad_fraction,
            smoke_steps=smoke_steps,
            layout=layout,
        )
    except _user_errors() as exc:
        _fail(exc)
    if _echo_splits(result, as_json, lambda rep: ""):
        return
    if result.smoke is not None:
        typer.echo(f"smoke run: {result.smoke.steps} steps, test fare {result.smoke.prediction:.2f}")
    typer.echo(f"report: {result.report_path}; quarantine: {result.quarantine}")


def _validate_in_bigquery(train, valid, export, valid_fraction, max_bad_fraction, layout, as_json) -> None:
    from trainer.validate_bigquery import validate_bigquery

    try:
        if not export:
            raise ValueError("a bq:// source needs --export gs://BUCKET/PREFIX for the clean rows")
        result = validate_bigquery(
            train,
            valid,
            export,
            valid_fraction=None if valid else valid_fraction,
            max_bad_fraction=max_bad_fraction,
            layout=layout,
        )
    except _user_errors() as exc:
        _fail(exc)

    def where(rep) -> str:
        shards = len(result.export_shards[rep.name])
        return f" → {result.export_uris[rep.name]} ({shards} shard{'' if shards == 1 else 's'})"

    if _echo_splits(result, as_json, where):
        return
    typer.echo(f"quarantine: {result.quarantine}; BigQuery job {result.job_id}")


def _echo_splits(result, as_json: bool, where) -> bool:
    """The result as JSON (True: nothing more to print), or one line per split."""
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return True
    for rep in result.splits.values():
        reasons = ", ".join(f"{r}={n}" for r, n in rep.reasons.items()) or "none"
        typer.echo(
            f"{rep.name}: {rep.rows} rows, {rep.clean} clean{where(rep)}, {rep.quarantined} quarantined ({reasons})"
        )
    return False


def _local_copy(uri: str, target: Path) -> Path:
    """A local file or folder of shards as it is; an object in the bucket downloaded."""
    if storage.is_gcs(uri):
        return storage.download_file(uri, target)
    path = Path(uri)
    if not (path.is_file() or path.is_dir()):
        raise storage.ObjectNotFound(f"not found: {uri}")
    return path


def gcs_emulator_command(
    data_dir: Path = typer.Option(None, help="Keep objects here across restarts (default: a temporary directory)."),
    port: int = typer.Option(None, help="Port on 127.0.0.1 (default: a free one)."),
    bucket: list[str] = typer.Option(None, help="Buckets to create (repeatable)."),
) -> None:
    """Run a local GCS emulator until Ctrl-C and print the STORAGE_EMULATOR_HOST line to use."""
    from pipelines.local.emulator import EmulatorError, GcsEmulator

    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="taxifare-gcs-"))
    emulator = GcsEmulator(data_dir=data_dir, port=port)
    try:
        emulator.start()
    except EmulatorError as exc:
        _fail(exc)
    try:
        names = bucket or [load_settings().bucket]
        for name in names:
            emulator.create_bucket(storage.check_bucket_name(name))
        typer.echo(f"export STORAGE_EMULATOR_HOST={emulator.url}")
        typer.echo(f"buckets: {', '.join(names)}; data in {data_dir}; Ctrl-C stops it")
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        signal.sigwait(stop_signals)
    except storage.BucketNameError as exc:
        _fail(exc)
    finally:
        emulator.stop()


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
    app.command("validate")(validate_command)
    app.command("gcs-emulator")(gcs_emulator_command)
