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
CRC32C per split, layout, how it was split), written last. The dataset id is derived from the
content, so ingesting the same data again names the same objects, finds them with the same CRC32C
and uploads nothing; different data gets a new id and never replaces what is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from trainer import storage
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
from trainer.ingest_split import SPLITS, IngestError, common_layout, write_splits

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
class SplitInfo(BaseModel):
    name: str
    uri: str
    rows: int
    bytes: int
    crc32c: str
    uploaded: bool  # False: the object was already there with the same bytes


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
    valid_fraction: float = 0.2,
    local_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
    project: str | None = None,
    bigquery_endpoint: str | None = None,
    workdir: str | os.PathLike | None = None,
    keep_local: str | os.PathLike | None = None,
) -> IngestResult:
    """Split ``source`` into train/valid and write ``<root>/data/<dataset-id>/…`` with CRC32C checks.

    ``bucket`` names the destination bucket (``local_root`` is used instead when bucket is None).
    ``keep_local``: a directory that receives the local train.csv/valid.csv as well.
    """
    started = time.perf_counter()
    if not 0.0 < valid_fraction < 1.0:
        raise IngestError(f"valid_fraction={valid_fraction}: expected a number between 0 and 1 (exclusive)")
    parsed = parse_source(source)  # malformed sources fail before anything else
    parsed_valid = parse_source(valid_source) if valid_source else None
    root = dataset_root(bucket, prefix, local_root)
    if bucket:
        storage.check_bucket(bucket)

    own_workdir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="taxifare-ingest-") if own_workdir else workdir)
    try:
        fetch = dict(bucket=bucket, root=root, project=project, bigquery_endpoint=bigquery_endpoint, progress=progress)
        fetched = fetch_source(parsed, work / "source", **fetch)
        files, presplit = fetched.files, fetched.splits
        if parsed_valid is not None:
            valid_files = fetch_source(parsed_valid, work / "valid-source", **fetch).files
            presplit = {"train": files, "valid": valid_files}

        all_files = (presplit["train"] + presplit["valid"]) if presplit else files
        layout = common_layout(all_files, source)
        out_dir = work / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        writers, counts, split_desc = write_splits(out_dir, files, presplit, layout, valid_fraction)
        if writers["train"].rows + writers["valid"].rows == 0:
            raise IngestError(f"source {source}: no data rows ({counts.headers} header and {counts.blank} blank lines)")
        for name in SPLITS:
            if writers[name].rows == 0:
                logger.warning("the %s split of %s is empty", name, source)

        files_info = {name: {"rows": w.rows, "bytes": w.bytes, "crc32c": w.crc32c} for name, w in writers.items()}
        core = {"layout": layout.name, "split": split_desc, "files": files_info}
        digest = hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()
        dataset_id = f"{layout.name}-{digest[:16]}"
        dataset_uri = storage.join(root, "data", dataset_id)
        manifest = {"dataset_id": dataset_id, **core}
        manifest_path = out_dir / MANIFEST_NAME
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

        results: dict[str, storage.UploadResult] = {}
        # The manifest goes last: its presence says both splits are complete.
        for name, path in [(n, writers[n].path) for n in SPLITS] + [("manifest", manifest_path)]:
            target = storage.join(dataset_uri, path.name)
            results[name] = storage.upload_file(path, target, overwrite=overwrite, progress=progress)

        if keep_local is not None:
            # Same no-clobber rule as the bucket: a different file already there is an error.
            for path in [writers[n].path for n in SPLITS] + [manifest_path]:
                storage.upload_file(path, Path(keep_local) / path.name, overwrite=overwrite)
    finally:
        if own_workdir:
            shutil.rmtree(work, ignore_errors=True)

    split_infos = {
        name: SplitInfo(
            name=name,
            uri=results[name].uri,
            rows=files_info[name]["rows"],
            bytes=files_info[name]["bytes"],
            crc32c=files_info[name]["crc32c"],
            uploaded=results[name].uploaded,
        )
        for name in SPLITS
    }
    result = IngestResult(
        dataset_id=dataset_id,
        layout=layout.name,
        source=source,
        valid_source=valid_source,
        split=split_desc,
        root=root,
        dataset_uri=dataset_uri,
        manifest_uri=results["manifest"].uri,
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


def read_manifest(dataset_uri: str) -> dict:
    """The ``dataset.json`` of an ingested dataset."""
    return json.loads(storage.read_text(storage.join(dataset_uri, MANIFEST_NAME)))


def download_dataset(dataset_uri: str, local_dir: str | os.PathLike) -> tuple[Path, Path, dict]:
    """Download train.csv and valid.csv of a dataset, checking each against its manifest CRC32C.

    An object altered in the bucket after ingest fails here with ChecksumMismatch.
    """
    manifest = read_manifest(dataset_uri)
    local_dir = Path(local_dir)
    paths = [
        storage.download_file(
            storage.join(dataset_uri, f"{name}.csv"),
            local_dir / f"{name}.csv",
            expected_crc32c=manifest["files"][name]["crc32c"],
        )
        for name in SPLITS
    ]
    return paths[0], paths[1], manifest
