"""Ingest taxi CSVs into the bucket: one source in, a train/valid pair of objects out.

Sources (``parse_source`` checks them strictly and says which part is wrong; the readers are in
``trainer.ingest_sources`` and, for BigQuery, ``trainer.ingest_bigquery``):

* a local file, a glob (``data/*.csv``) or a directory — a directory holding one ``*train*`` and
  one ``*valid*`` CSV (the course's folders) gives the two splits as they are;
* ``https://host/file.csv`` (streamed; ``http://`` only to a loopback host);
* ``gs://bucket/name.csv``, ``gs://bucket/prefix/`` or ``gs://bucket/prefix/*.csv``;
* ``bq://project.dataset.table`` or ``bq://?query=SELECT …`` — BigQuery writes CSV shards into
  the bucket (an extract job, after the query for the second form), which are then read back;
* ``synthetic://?rows=N&layout=lab|dated&seed=S`` — the embedded default (``trainer.synth``).

One source is split into train/valid by a stable hash of each row's ``key`` column (of the whole
line when a row has no usable key), so the same row always lands in the same split; or
``valid_source`` gives the validation rows (``trainer.ingest_split``). Every line of the input ends
up in exactly one split, except header lines and blank lines, which are counted and dropped: ingest
moves bytes and never judges rows — the validate step does that, and quarantines what is bad.

The objects are ``<root>/data/<dataset-id>/{train,valid}.csv`` plus ``dataset.json`` (rows, bytes,
CRC32C per split, layout, how it was split), written last. A split larger than ``shard_bytes`` is
written as shards instead, ``train/train-00000-of-00004.csv`` …, and its manifest entry lists each
shard's path, rows, bytes and CRC32C besides the split's totals (whose CRC32C is that of the shards
concatenated in order, the same as for one file). The dataset id is derived from the
content, so ingesting the same data again names the same objects, finds them with the same CRC32C
and uploads nothing; different data gets a new id and never replaces what is there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from trainer import schema, storage
from trainer.ingest_bigquery import extract_bigquery, parse_bigquery
from trainer.ingest_sources import (
    Fetched,
    Source,
    SourceError,
    download_gcs,
    download_https,
    local_files,
    parse_https,
    parse_synthetic,
    write_synthetic,
)
from trainer.ingest_split import (
    SHARD_BYTES,
    SPLITS,
    IngestError,
    SplitWriter,
    common_layout,
    write_splits,
)

logger = logging.getLogger(__name__)

MANIFEST_NAME = "dataset.json"


# -- sources: the scheme picks the parser and the reader ------------------------------------------
def parse_source(text: str) -> Source:
    """Recognise and check a source string; raise SourceError (one line) when malformed."""
    if not isinstance(text, str) or not text.strip():
        raise SourceError("source is empty: expected a path, https://, gs://, bq:// or synthetic:// URI")
    text = text.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "synthetic":
        return parse_synthetic(text)
    if scheme == "bq":
        return parse_bigquery(text)
    if scheme == "gs":
        bucket, name = storage.split_gcs_uri(text)
        return Source("gcs", text, {"bucket": bucket, "name": name})
    if scheme in ("https", "http"):
        return parse_https(text, scheme)
    if scheme:
        raise SourceError(
            f"unsupported source scheme {scheme + '://'!r} in {text!r}; expected a local path, "
            "https://, gs://, bq:// or synthetic://"
        )
    return Source("file", text, {})


def fetch_source(
    source: Source,
    workdir: str | os.PathLike,
    *,
    bucket: str | None,
    root: str,
    project: str | None = None,
    bigquery_endpoint: str | None = None,
    progress: bool = False,
) -> Fetched:
    """Bring a source's bytes to local files (and its train/valid pair, when it is one).

    ``root`` is the dataset root in ``bucket``, where BigQuery stages its extract.
    """
    workdir = Path(workdir)
    if source.kind == "file":
        return local_files(source.text)
    if source.kind == "https":
        return download_https(source.text, workdir, progress)
    if source.kind == "gcs":
        return download_gcs(source, workdir, progress)
    if source.kind == "bigquery":
        return extract_bigquery(
            source,
            bucket=bucket,
            root=root,
            workdir=workdir,
            project=project,
            endpoint=bigquery_endpoint,
            progress=progress,
        )
    return write_synthetic(source, workdir)


# -- the result -----------------------------------------------------------------------------------
class ShardInfo(BaseModel):
    path: str  # relative to the dataset: train.csv, or train/train-00000-of-00004.csv
    uri: str
    rows: int
    bytes: int
    crc32c: str
    uploaded: bool  # False: the object was already there with the same bytes


class SplitInfo(BaseModel):
    name: str
    uri: str  # the split's file, or the directory (prefix) of its shards
    rows: int
    bytes: int
    crc32c: str  # of the split's bytes: the shards concatenated in order
    uploaded: bool  # False: every object was already there with the same bytes
    shards: list[ShardInfo]


class IngestResult(BaseModel):
    dataset_id: str
    layout: str
    source: str
    valid_source: str | None = None
    split: dict
    root: str  # gs://BUCKET/PREFIX or a local directory
    dataset_uri: str
    manifest_uri: str
    train: SplitInfo
    valid: SplitInfo
    header_lines_dropped: int
    blank_lines_dropped: int
    uploaded: list[str]
    skipped: list[str]
    seconds: float

    @property
    def splits(self) -> dict[str, SplitInfo]:
        return {"train": self.train, "valid": self.valid}

    def metadata(self) -> dict:
        """Flat facts for a KFP Dataset artifact."""
        return {
            "dataset_id": self.dataset_id,
            "layout": self.layout,
            "source": self.source,
            "train_uri": self.train.uri,
            "valid_uri": self.valid.uri,
            "train_rows": self.train.rows,
            "valid_rows": self.valid.rows,
            "train_bytes": self.train.bytes,
            "valid_bytes": self.valid.bytes,
            "train_crc32c": self.train.crc32c,
            "valid_crc32c": self.valid.crc32c,
            "train_shards": len(self.train.shards),
            "valid_shards": len(self.valid.shards),
            "uploaded": len(self.uploaded),
            "skipped": len(self.skipped),
        }


def dataset_root(bucket: str | None, prefix: str, local_root: str | os.PathLike | None = None) -> str:
    prefix = (prefix or "").strip("/")
    if bucket:
        storage.check_bucket_name(bucket)
        return f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
    if local_root is None:
        raise IngestError("no destination: give a bucket (or a local root directory)")
    return storage.join(local_root, prefix) if prefix else str(local_root)


def ingest(
    source: str,
    *,
    bucket: str | None,
    prefix: str = "taxifare",
    valid_source: str | None = None,
    valid_fraction: float = schema.VALID_FRACTION,
    local_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
    project: str | None = None,
    bigquery_endpoint: str | None = None,
    workdir: str | os.PathLike | None = None,
    keep_local: str | os.PathLike | None = None,
    shard_bytes: int = SHARD_BYTES,
) -> IngestResult:
    """Split ``source`` into train/valid and write ``<root>/data/<dataset-id>/…`` with CRC32C checks.

    ``bucket`` names the destination bucket (``local_root`` is used instead when bucket is None).
    ``keep_local``: a directory that receives the local train.csv/valid.csv (or shards) as well.
    ``shard_bytes``: the most bytes of one file; a larger split is written as several shards.
    """
    started = time.perf_counter()
    if not 0.0 < valid_fraction < 1.0:
        raise IngestError(f"valid_fraction={valid_fraction}: expected a number between 0 and 1 (exclusive)")
    if not isinstance(shard_bytes, int) or shard_bytes < 1:
        raise IngestError(f"shard_bytes={shard_bytes!r}: expected a positive number of bytes")
    parsed = parse_source(source)  # malformed sources fail before anything else
    parsed_valid = parse_source(valid_source) if valid_source else None
    root = dataset_root(bucket, prefix, local_root)
    if bucket:
        storage.check_bucket(bucket)

    own_workdir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="taxifare-ingest-") if own_workdir else workdir)
    staging = None  # for a local root: the splits are written beside their destination, then moved
    try:
        fetch = dict(bucket=bucket, root=root, project=project, bigquery_endpoint=bigquery_endpoint, progress=progress)
        fetched = fetch_source(parsed, work / "source", **fetch)
        files, presplit = fetched.files, fetched.splits
        if parsed_valid is not None:
            valid_files = fetch_source(parsed_valid, work / "valid-source", **fetch).files
            presplit = {"train": files, "valid": valid_files}

        all_files = (presplit["train"] + presplit["valid"]) if presplit else files
        layout = common_layout(all_files, source)
        if storage.is_gcs(root):
            out_dir = work / "out"
            out_dir.mkdir(parents=True, exist_ok=True)
        else:
            Path(root, "data").mkdir(parents=True, exist_ok=True)
            out_dir = staging = Path(tempfile.mkdtemp(prefix=".ingest-", dir=Path(root, "data")))
        writers, counts, split_desc = write_splits(
            out_dir, files, presplit, layout, valid_fraction, shard_bytes=shard_bytes
        )
        if writers["train"].rows + writers["valid"].rows == 0:
            raise IngestError(f"source {source}: no data rows ({counts.headers} header and {counts.blank} blank lines)")
        for name in SPLITS:
            if writers[name].rows == 0:
                logger.warning("the %s split of %s is empty", name, source)

        files_info = {name: _manifest_entry(w) for name, w in writers.items()}
        core = {"layout": layout.name, "split": split_desc, "files": files_info}
        digest = hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()
        dataset_id = f"{layout.name}-{digest[:16]}"
        dataset_uri = storage.join(root, "data", dataset_id)
        manifest = {"dataset_id": dataset_id, **core}
        manifest_path = out_dir / MANIFEST_NAME
        manifest_text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        manifest_path.write_text(manifest_text)

        objects = [(s.path, s.local, s.crc32c) for n in SPLITS for s in writers[n].shards]
        objects.append((MANIFEST_NAME, manifest_path, storage.crc32c_of_bytes(manifest_text.encode())))
        results: dict[str, storage.UploadResult] = {}
        # The manifest goes last: its presence says every shard of both splits is complete.
        for relative, path, crc32c in objects:
            target = storage.join(dataset_uri, relative)
            if staging is not None:
                results[relative] = _move_into_place(path, Path(target), crc32c, overwrite=overwrite)
            else:
                results[relative] = storage.upload_file(path, target, overwrite=overwrite, progress=progress)

        if keep_local is not None:
            # Same no-clobber rule as the bucket: a different file already there is an error.
            for relative, _, _ in objects:
                stored = storage.join(dataset_uri, relative) if staging is not None else str(out_dir / relative)
                storage.upload_file(stored, Path(keep_local) / relative, overwrite=overwrite)
    finally:
        if own_workdir:
            shutil.rmtree(work, ignore_errors=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):  # a data/ folder made for a failed ingest goes too
                staging.parent.rmdir()

    split_infos = {name: _split_info(name, writers[name], dataset_uri, results) for name in SPLITS}
    result = IngestResult(
        dataset_id=dataset_id,
        layout=layout.name,
        source=source,
        valid_source=valid_source,
        split=split_desc,
        root=root,
        dataset_uri=dataset_uri,
        manifest_uri=results[MANIFEST_NAME].uri,
        train=split_infos["train"],
        valid=split_infos["valid"],
        header_lines_dropped=counts.headers,
        blank_lines_dropped=counts.blank,
        uploaded=[r.uri for r in results.values() if r.uploaded],
        skipped=[r.uri for r in results.values() if r.skipped],
        seconds=round(time.perf_counter() - started, 3),
    )
    logger.info(
        "dataset %s (%s): train %d rows, valid %d rows; uploaded %d, skipped %d",
        dataset_id,
        layout.name,
        result.train.rows,
        result.valid.rows,
        len(result.uploaded),
        len(result.skipped),
    )
    return result


def _move_into_place(staged: Path, target: Path, crc32c: str, *, overwrite: bool) -> storage.UploadResult:
    """A file staged on the local root's own disk: moved (hard link, then unlink) when ``target``
    does not exist yet, so its bytes are written once; else ``storage.upload_file``'s rules
    (same CRC32C: skipped; different: ObjectConflict unless ``overwrite``)."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(staged, target)  # never replaces a file that appeared meanwhile
        except FileExistsError:
            pass
        except OSError as exc:
            logger.debug("cannot link %s to %s (%s); copying it", staged, target, exc)
        else:
            staged.unlink()
            return storage.UploadResult(str(staged), str(target), target.stat().st_size, crc32c, "uploaded")
    return storage.upload_file(staged, target, overwrite=overwrite)


def _manifest_entry(writer: SplitWriter) -> dict:
    """A split in ``dataset.json``: its totals, and its shards when there is more than one.

    A one-file split has no ``shards`` entry, so its manifest (and dataset id) is what it was
    before datasets were sharded.
    """
    entry = {"rows": writer.rows, "bytes": writer.bytes, "crc32c": writer.crc32c}
    if len(writer.shards) > 1:
        entry["shards"] = [
            {"path": s.path, "rows": s.rows, "bytes": s.bytes, "crc32c": s.crc32c} for s in writer.shards
        ]
    return entry


def _split_info(name: str, writer: SplitWriter, dataset_uri: str, results: dict) -> SplitInfo:
    shards = [
        ShardInfo(
            path=s.path,
            uri=results[s.path].uri,
            rows=s.rows,
            bytes=s.bytes,
            crc32c=s.crc32c,
            uploaded=results[s.path].uploaded,
        )
        for s in writer.shards
    ]
    return SplitInfo(
        name=name,
        uri=shards[0].uri if len(shards) == 1 else storage.join(dataset_uri, name),
        rows=writer.rows,
        bytes=writer.bytes,
        crc32c=writer.crc32c,
        uploaded=any(s.uploaded for s in shards),
        shards=shards,
    )


def read_manifest(dataset_uri: str) -> dict:
    """The ``dataset.json`` of an ingested dataset."""
    return json.loads(storage.read_text(storage.join(dataset_uri, MANIFEST_NAME)))


def split_shards(manifest: dict, name: str) -> list[dict]:
    """The files of split ``name`` in a manifest, in order: {path, rows, bytes, crc32c} each."""
    try:
        entry = manifest["files"][name]
    except (KeyError, TypeError):
        raise IngestError(f"dataset {manifest.get('dataset_id')!r}: the manifest has no files.{name} entry") from None
    return entry.get("shards") or [{"path": f"{name}.csv", **entry}]


def download_dataset(dataset_uri: str, local_dir: str | os.PathLike) -> tuple[Path, Path, dict]:
    """Download the train and valid splits of a dataset, checking every file against its manifest CRC32C.

    Returns (train, valid, manifest): a split is ``local_dir/train.csv`` when it is one file, else
    the directory ``local_dir/train`` holding its shards (``trainer.data.expand_paths`` reads
    either). An object altered in the bucket after ingest fails here with ChecksumMismatch.
    """
    manifest = read_manifest(dataset_uri)
    local_dir = Path(local_dir)
    paths = []
    for name in SPLITS:
        shards = split_shards(manifest, name)
        for shard in shards:
            storage.download_file(
                storage.join(dataset_uri, shard["path"]), local_dir / shard["path"], expected_crc32c=shard["crc32c"]
            )
        paths.append(local_dir / (shards[0]["path"] if len(shards) == 1 else name))
    return paths[0], paths[1], manifest
