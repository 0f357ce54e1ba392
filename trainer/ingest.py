"""Ingest taxi CSVs into the bucket: one source in, a train/valid pair of objects out.

Sources (``parse_source`` checks them strictly and says which part is wrong):

* a local file, a glob (``data/*.csv``) or a directory — a directory holding one ``*train*`` and
  one ``*valid*`` CSV (the course's folders) gives the two splits as they are;
* ``https://host/file.csv`` (streamed; ``http://`` only to a loopback host);
* ``gs://bucket/name.csv``, ``gs://bucket/prefix/`` or ``gs://bucket/prefix/*.csv``;
* ``bq://project.dataset.table`` or ``bq://?query=SELECT …`` — BigQuery writes CSV shards into
  the bucket (an extract job, after the query for the second form), which are then read back;
* ``synthetic://?rows=N&layout=lab|dated&seed=S`` — the embedded default (``trainer.synth``).

One source is split into train/valid by a stable hash of each row's ``key`` column (of the whole
line when a row has no usable key), so the same row always lands in the same split; or
``valid_source`` gives the validation rows. Every line of the input ends up in exactly one split,
except header lines and blank lines, which are counted and dropped: ingest moves bytes and never
judges rows — the validate step does that, and quarantines what is bad.

The objects are ``<root>/data/<dataset-id>/{train,valid}.csv`` plus ``dataset.json`` (rows, bytes,
CRC32C per split, layout, how it was split), written last. The dataset id is derived from the
content, so ingesting the same data again names the same objects, finds them with the same CRC32C
and uploads nothing; different data gets a new id and never replaces what is there.
"""

from __future__ import annotations

import base64
import fnmatch
import glob
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import google_crc32c
from pydantic import BaseModel

from trainer import schema, storage

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid")
MANIFEST_NAME = "dataset.json"
DEFAULT_SYNTHETIC_ROWS = 10_000
MAX_SYNTHETIC_ROWS = 50_000_000
_HASH_BUCKETS = 1_000_000
_LAYOUT_SCAN_LINES = 1000
BIGQUERY_ENDPOINT_ENV = "TAXIFARE_BIGQUERY_ENDPOINT"


class SourceError(ValueError):
    """A source that is malformed, unsupported or cannot be read."""


class IngestError(RuntimeError):
    """The source was read but cannot become a dataset (e.g. no rows, mixed layouts)."""


# -- parsing sources ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    kind: str  # file | https | gcs | bigquery | synthetic
    text: str
    params: dict = field(default_factory=dict)


_SYNTHETIC_PARAMS = ("rows", "layout", "seed")
_BQ_PARAMS = ("project", "location", "query")
_BQ_PROJECT = r"(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
_BQ_TABLE = re.compile(
    rf"^(?P<table_project>{_BQ_PROJECT})\.(?P<dataset>[A-Za-z0-9_]{{1,1024}})\.(?P<table>[A-Za-z0-9_$-]{{1,1024}})$"
)
_GLOB_CHARS = re.compile(r"[*?\[]")


def _query_params(source: str, query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    scheme = source.split("://", 1)[0]
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in allowed:
            raise SourceError(f"{scheme}:// parameter {name!r} is not known; expected {', '.join(allowed)}")
        if name in params:
            raise SourceError(f"{scheme}:// parameter {name!r} is given twice")
        params[name] = value
    if query and not params:
        raise SourceError(f"{scheme}:// query {query!r} is not name=value pairs")
    return params


def _positive_int(scheme: str, name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SourceError(f"{scheme}:// parameter {name}={text!r}: expected an integer {low}..{high}") from None
    if not low <= value <= high:
        raise SourceError(f"{scheme}:// parameter {name}={value}: expected an integer {low}..{high}")
    return value


def _parse_synthetic(text: str) -> Source:
    parts = urlsplit(text)
    if parts.netloc or parts.path or parts.fragment:
        raise SourceError(
            f"synthetic:// takes only query parameters, like synthetic://?rows=10000&layout=lab&seed=0; got {text!r}"
        )
    params = _query_params(text, parts.query, _SYNTHETIC_PARAMS)
    rows = _positive_int("synthetic", "rows", params.get("rows", str(DEFAULT_SYNTHETIC_ROWS)), 1, MAX_SYNTHETIC_ROWS)
    layout = params.get("layout", "lab")
    if layout not in schema.LAYOUTS:
        raise SourceError(f"synthetic:// parameter layout={layout!r}: expected one of {', '.join(schema.LAYOUTS)}")
    seed = _positive_int("synthetic", "seed", params.get("seed", "0"), 0, 2**32 - 1)
    return Source("synthetic", text, {"rows": rows, "layout": layout, "seed": seed})


def _parse_bigquery(text: str) -> Source:
    rest = text[len("bq://") :]
    target, _, query = rest.partition("?")
    sql = None
    # The SQL is taken verbatim (percent-decoded, '+' kept) from `query=` to the end.
    head, sep, tail = query.partition("query=")
    if sep and (not head or head.endswith("&")):
        sql = unquote(tail).strip()
        query = head.rstrip("&")
        if not sql:
            raise SourceError("bq:// parameter query is empty: expected a SQL SELECT statement")
    params = _query_params(text, query, _BQ_PARAMS[:2])
    if sql is not None:
        if target:
            raise SourceError(
                f"bq:// takes either a table (bq://project.dataset.table) or ?query=…, not both; got {target!r} and a query"
            )
        return Source("bigquery", text, {**params, "query": sql})
    if not target:
        raise SourceError("bq:// needs a table (bq://project.dataset.table) or a query (bq://?query=SELECT …)")
    match = _BQ_TABLE.match(target)
    if not match:
        raise SourceError(
            f"bq:// table {target!r}: expected project.dataset.table (project: 6-30 lowercase "
            "letters, digits or '-'; dataset: letters, digits, '_')"
        )
    return Source("bigquery", text, {**params, **match.groupdict()})


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def parse_source(text: str) -> Source:
    """Recognise and check a source string; raise SourceError (one line) when malformed."""
    if not isinstance(text, str) or not text.strip():
        raise SourceError("source is empty: expected a path, https://, gs://, bq:// or synthetic:// URI")
    text = text.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "synthetic":
        return _parse_synthetic(text)
    if scheme == "bq":
        return _parse_bigquery(text)
    if scheme == "gs":
        bucket, name = storage.split_gcs_uri(text)
        return Source("gcs", text, {"bucket": bucket, "name": name})
    if scheme in ("https", "http"):
        parts = urlsplit(text)
        if not parts.hostname:
            raise SourceError(f"{text!r}: no host in the URL")
        if scheme == "http" and not _is_loopback(parts.hostname):
            raise SourceError(f"{text!r}: plain http:// is accepted only from a loopback host; use https://")
        return Source("https", text, {})
    if scheme:
        raise SourceError(
            f"unsupported source scheme {scheme + '://'!r} in {text!r}; expected a local path, "
            "https://, gs://, bq:// or synthetic://"
        )
    return Source("file", text, {})


# -- fetching sources to local files --------------------------------------------------------------
@dataclass
class _Fetched:
    """Local files for one source; ``splits`` is set when the source already is a train/valid pair."""

    files: list[Path]
    splits: dict[str, list[Path]] | None = None


def _local_files(text: str) -> _Fetched:
    path = Path(text).expanduser()
    if _GLOB_CHARS.search(text):
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise SourceError(f"source {text!r}: the pattern matches no file")
        return _Fetched(files)
    if path.is_file():
        return _Fetched([path])
    if path.is_dir():
        csvs = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
        if not csvs:
            raise SourceError(f"source {text!r}: the directory holds no .csv file")
        train = [p for p in csvs if "train" in p.name.lower()]
        valid = [p for p in csvs if "valid" in p.name.lower() or "eval" in p.name.lower()]
        if len(train) == 1 and len(valid) == 1:
            return _Fetched(csvs, {"train": train, "valid": valid})
        return _Fetched(csvs)
    raise SourceError(f"source not found: {text}")


def _download_https(url: str, workdir: Path, progress: bool) -> _Fetched:
    import requests

    name = Path(urlsplit(url).path).name or "download.csv"
    target = workdir / "https" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with requests.get(url, stream=True, timeout=(10, 120)) as answer:
            if answer.status_code != 200:
                raise SourceError(f"source {url}: HTTP {answer.status_code} {answer.reason}")
            total = int(answer.headers.get("Content-Length") or 0)
            bar = None
            if progress and total >= storage.PROGRESS_MIN_BYTES:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False)
            with open(target, "wb") as out:
                for block in answer.iter_content(chunk_size=1 << 20):
                    out.write(block)
                    if bar is not None:
                        bar.update(len(block))
            if bar is not None:
                bar.close()
            if total and target.stat().st_size != total:
                raise SourceError(
                    f"source {url}: got {target.stat().st_size} bytes, expected {total} (connection cut?)"
                )
    except requests.exceptions.ConnectionError as exc:
        host = urlsplit(url).netloc
        raise SourceError(f"source {url}: cannot reach {host} ({storage.first_line(exc)})") from None
    except requests.exceptions.RequestException as exc:
        raise SourceError(f"source {url}: {type(exc).__name__}: {storage.first_line(exc)}") from None
    return _Fetched([target])


def _download_gcs(source: Source, workdir: Path, progress: bool) -> _Fetched:
    text = source.text
    bucket, name = source.params["bucket"], source.params["name"]
    if name and not _GLOB_CHARS.search(name) and not name.endswith("/") and storage.exists(text):
        uris = [text]
    else:
        prefix = _GLOB_CHARS.split(name, 1)[0] if _GLOB_CHARS.search(name) else name
        listed = storage.list_blobs(f"gs://{bucket}/{prefix}")
        if _GLOB_CHARS.search(name):
            uris = [u for u in listed if fnmatch.fnmatchcase(u[len(f"gs://{bucket}/") :], name)]
        else:
            uris = [u for u in listed if u.lower().endswith(".csv")]
        if not uris:
            raise SourceError(f"source {text}: no object found")
    files = []
    for index, uri in enumerate(sorted(uris)):
        files.append(storage.download_file(uri, workdir / "gcs" / f"{index:05d}-{Path(uri).name}", progress=progress))
    return _Fetched(files)


def _bigquery_client(project: str | None, endpoint: str | None):
    from google.cloud import bigquery

    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
    return bigquery.Client(project=project)


def _extract_bigquery(
    source: Source,
    *,
    bucket: str | None,
    prefix: str,
    workdir: Path,
    project: str | None,
    endpoint: str | None,
    progress: bool,
) -> _Fetched:
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    if not bucket:
        raise SourceError(f"source {source.text}: BigQuery extracts to a bucket; give --bucket")
    params = source.params
    # Jobs run (and are billed) in ?project=, else the configured project, else the table's.
    job_project = params.get("project") or project or params.get("table_project")
    location = params.get("location")
    token = hashlib.sha256(source.text.encode()).hexdigest()[:16]
    staging = storage.join(dataset_root(bucket, prefix), "staging", f"bq-{token}") + "/"
    # Shards of an earlier extract of the same source are BigQuery's output, not data: replace them.
    for stale in storage.list_blobs(staging):
        storage.delete(stale)
    from google.auth.exceptions import DefaultCredentialsError

    try:
        client = _bigquery_client(job_project, endpoint or os.environ.get(BIGQUERY_ENDPOINT_ENV))
    except DefaultCredentialsError as exc:
        raise SourceError(
            f"source {source.text}: no Google credentials for BigQuery "
            f"(run `gcloud auth application-default login`): {storage.first_line(exc)}"
        ) from None
    try:
        if "query" in params:
            query_job = client.query(params["query"], location=location, job_id_prefix="taxifare_query_")
            query_job.result(max_results=0)
            table = query_job.destination
        else:
            table = bigquery.TableReference.from_string(
                f"{params['table_project']}.{params['dataset']}.{params['table']}"
            )
        config = bigquery.ExtractJobConfig(destination_format="CSV", print_header=False)
        extract = client.extract_table(
            table,
            staging + "part-*.csv",
            job_config=config,
            location=location,
            job_id_prefix="taxifare_extract_",
        )
        extract.result()
    except gexc.GoogleAPICallError as exc:
        raise SourceError(f"source {source.text}: BigQuery {exc.code}: {storage.short_message(exc)}") from None
    uris = [u for u in storage.list_blobs(staging) if u.endswith(".csv")]
    if not uris:
        raise SourceError(f"source {source.text}: BigQuery wrote no file under {staging}")
    files = [storage.download_file(uri, workdir / "bq" / Path(uri).name, progress=progress) for uri in uris]
    return _Fetched(files)


def _synthetic(source: Source, workdir: Path) -> _Fetched:
    from trainer import synth

    p = source.params
    target = workdir / "synthetic" / f"{p['layout']}-{p['rows']}-{p['seed']}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    synth.write_csv(target, rows=p["rows"], layout=p["layout"], seed=p["seed"])
    return _Fetched([target])


def fetch_source(
    text: str,
    workdir: str | os.PathLike,
    *,
    bucket: str | None = None,
    prefix: str = "",
    project: str | None = None,
    bigquery_endpoint: str | None = None,
    progress: bool = False,
) -> tuple[Source, list[Path], dict[str, list[Path]] | None]:
    """Bring a source's bytes to local files: (source, files, pre-split files or None)."""
    source = parse_source(text)
    workdir = Path(workdir)
    if source.kind == "file":
        fetched = _local_files(source.text)
    elif source.kind == "https":
        fetched = _download_https(source.text, workdir, progress)
    elif source.kind == "gcs":
        fetched = _download_gcs(source, workdir, progress)
    elif source.kind == "bigquery":
        fetched = _extract_bigquery(
            source,
            bucket=bucket,
            prefix=prefix,
            workdir=workdir,
            project=project,
            endpoint=bigquery_endpoint,
            progress=progress,
        )
    else:
        fetched = _synthetic(source, workdir)
    return source, fetched.files, fetched.splits


# -- splitting ------------------------------------------------------------------------------------
class _SplitWriter:
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
class _Counts:
    headers: int = 0
    blank: int = 0
    lines: int = 0


def _copy_lines(files, layout, route, counts: _Counts) -> None:
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


def _split_by_key(files, layout, valid_fraction: float, writers: dict, counts: _Counts) -> None:
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


def _is_layout_header(raw: bytes, layout: schema.Layout) -> bool:
    text = _decode(raw)
    return text is not None and tuple(f.strip() for f in text.split(",")) == layout.columns


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
        storage.validate_bucket_name(bucket)
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
    parse_source(source)  # malformed sources fail before anything else
    if valid_source:
        parse_source(valid_source)
    root = dataset_root(bucket, prefix, local_root)
    if bucket:
        storage.check_bucket(bucket)

    own_workdir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="taxifare-ingest-") if own_workdir else workdir)
    try:
        fetch = dict(
            bucket=bucket, prefix=prefix, project=project, bigquery_endpoint=bigquery_endpoint, progress=progress
        )
        src, files, presplit = fetch_source(source, work / "source", **fetch)
        if valid_source:
            _, valid_files, _ = fetch_source(valid_source, work / "valid-source", **fetch)
            presplit = {"train": files, "valid": valid_files}

        all_files = (presplit["train"] + presplit["valid"]) if presplit else files
        layouts = {}
        for path in all_files:
            layout = detect_file_layout(path)
            if layout is not None:
                layouts[path] = layout
        if not layouts:
            raise IngestError(f"source {source}: no data rows (empty input)")
        names = {lay.name for lay in layouts.values()}
        if len(names) > 1:
            described = ", ".join(f"{p.name}={lay.name}" for p, lay in layouts.items())
            raise IngestError(f"source {source}: files of different layouts ({described})")
        layout = next(iter(layouts.values()))

        out_dir = work / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        writers = {name: _SplitWriter(out_dir / f"{name}.csv") for name in SPLITS}
        counts = _Counts()
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
