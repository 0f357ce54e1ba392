"""One storage layer for local paths and ``gs://`` URIs.

Bytes move with google-cloud-storage (TensorFlow's own gs:// filesystem ignores the emulator), and
every transfer is checked with CRC32C, the checksum GCS keeps for every object:

* ``upload_file`` computes the local CRC32C first; an object that already holds the same bytes is
  skipped (a re-run uploads nothing); an object holding *different* bytes is never overwritten
  unless ``overwrite=True``; after an upload the object's CRC32C must equal the local one.
* ``download_file`` writes to a temporary name, compares CRC32C (and an expected value when the
  caller knows one, e.g. from a dataset manifest), then renames.

When ``STORAGE_EMULATOR_HOST`` is set the client talks to that emulator with anonymous credentials;
otherwise it uses Application Default Credentials. Failures become one-line ``StorageError``s:
bad bucket name, missing bucket, unreachable store (naming the host), permission denied.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

logger = logging.getLogger(__name__)

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
RETRY_ENV = "TAXIFARE_GCS_RETRY_S"
EMULATOR_PROJECT = "local-project"
_CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 8 << 20  # smaller files finish before a progress bar is worth drawing


# -- errors --------------------------------------------------------------------------------------
class StorageError(RuntimeError):
    """A storage operation failed; the message is one line naming the URI or host."""


class BucketNameError(StorageError, ValueError):
    """A bucket name that breaks the GCS naming rules."""


class BucketNotFound(StorageError):
    pass


class ObjectNotFound(StorageError, FileNotFoundError):
    pass


class StoreUnreachable(StorageError, ConnectionError):
    pass


class StoragePermissionDenied(StorageError, PermissionError):
    pass


class ObjectConflict(StorageError):
    """The destination already holds different bytes and overwriting was not asked for."""


class PreconditionFailed(StorageError):
    """The object changed between our check and our write (HTTP 412)."""


class ChecksumMismatch(StorageError):
    """Bytes read or written do not match the CRC32C they should have."""


# -- URIs ----------------------------------------------------------------------------------------
_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")
_GOOGLE_LOOKALIKE = re.compile(r"g[o0]{2}gle")


def is_gcs(uri: str | os.PathLike) -> bool:
    return isinstance(uri, str) and uri.startswith("gs://")


def check_bucket_name(name: str) -> str:
    """Return ``name`` if it is a valid GCS bucket name, else raise BucketNameError saying why.

    The rules of https://cloud.google.com/storage/docs/buckets#naming; the one check of a bucket
    name in the project (the config, the CLI, ingest and the local run all call it).
    """

    def bad(why: str) -> BucketNameError:
        return BucketNameError(f"bucket {name!r}: {why}")

    if name.startswith("gs://"):
        raise bad(f"give the bucket name without gs://, e.g. {name[5:].split('/')[0]!r}")
    if not name:
        raise bad("empty")
    if "." in name:
        if len(name) > 222:
            raise bad(f"{len(name)} characters; at most 222 with dots")
        if any(len(part) > 63 or not part for part in name.split(".")):
            raise bad("each dot-separated part must be 1-63 characters")
    elif len(name) > 63:
        raise bad(f"longer than 63 characters ({len(name)}): 3-63, or up to 222 when the name has dots")
    if len(name) < 3:
        raise bad(f"must be 3-63 characters (222 with dots), got {len(name)}")
    if not _BUCKET_CHARS.match(name):
        raise bad("only lowercase letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
    if ".." in name or ".-" in name or "-." in name:
        raise bad("no '..', '.-' or '-.' sequences")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise bad("cannot be an IP address")
    if name.startswith("goog") or _GOOGLE_LOOKALIKE.search(name):
        raise bad("cannot start with 'goog' or contain 'google' or a look-alike")
    return name


def fuse_path(uri: str) -> str:
    """``gs://bucket/path`` → ``/gcs/bucket/path``: where Cloud Storage FUSE mounts the bucket in
    Vertex AI jobs and pipeline tasks; anything else is returned unchanged."""
    return "/gcs/" + uri[len("gs://") :] if is_gcs(uri) else uri


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/name`` → ``("bucket", "some/name")`` (name may be empty)."""
    if not is_gcs(uri):
        raise StorageError(f"not a gs:// URI: {uri!r}")
    rest = uri[len("gs://") :]
    bucket, _, name = rest.partition("/")
    check_bucket_name(bucket)
    return bucket, name


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a local path or a gs:// URI."""
    base = str(base)
    if is_gcs(base):
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts if p])
    return str(Path(base, *parts))


# -- checksums -----------------------------------------------------------------------------------
def crc32c_of_bytes(data: bytes) -> str:
    """CRC32C as GCS reports it: base64 of the big-endian 4 bytes."""
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


def crc32c_of_file(path: str | os.PathLike) -> str:
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode("ascii")


# -- client and error translation ----------------------------------------------------------------
def emulator_host() -> str | None:
    return os.environ.get(EMULATOR_ENV) or None


def client(project: str | None = None):
    """A google-cloud-storage client: the emulator when STORAGE_EMULATOR_HOST is set, else ADC."""
    return _client(emulator_host(), project)


@functools.lru_cache(maxsize=8)
def _client(emulator: str | None, project: str | None):
    from google.cloud import storage as gcs

    if emulator:
        from google.auth.credentials import AnonymousCredentials

        endpoint = emulator if "://" in emulator else f"http://{emulator}"
        return gcs.Client(
            project=project or EMULATOR_PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return gcs.Client(project=project) if project else gcs.Client()
    except DefaultCredentialsError as exc:
        raise StorageError(
            "no Google credentials found: run `gcloud auth application-default login`, or set "
            f"{EMULATOR_ENV} to use a local emulator ({first_line(exc)})"
        ) from None


def _retry():
    """Retries for transient failures, bounded so that a dead store fails in seconds, not minutes."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    default = 3.0 if emulator_host() else 60.0
    return DEFAULT_RETRY.with_timeout(float(os.environ.get(RETRY_ENV, default)))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _store_host() -> str:
    host = emulator_host()
    if host:
        return host
    return "storage.googleapis.com"


def _root_cause(exc: BaseException) -> BaseException:
    from google.api_core.exceptions import RetryError

    seen = exc
    while isinstance(seen, RetryError) and seen.cause is not None:
        seen = seen.cause
    return seen


def _is_connection_error(exc: BaseException) -> bool:
    import requests

    probe: BaseException | None = exc
    while probe is not None:
        if isinstance(probe, (requests.exceptions.ConnectionError, ConnectionError)):
            return True
        probe = probe.__cause__ or probe.__context__
    return False


def translate_error(exc: BaseException, uri: str) -> StorageError:
    """Map a google-cloud-storage / transport exception to a one-line StorageError."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, StorageError):
        return exc
    cause = _root_cause(exc)
    if _is_connection_error(cause):
        reason = "connection refused" if "refused" in str(cause).lower() else first_line(cause)
        return StoreUnreachable(f"cannot reach the storage service at {_store_host()} ({reason}) while accessing {uri}")
    if isinstance(cause, gexc.RetryError):
        return StoreUnreachable(f"storage at {_store_host()} kept failing for {uri}: {first_line(cause)}")
    if isinstance(cause, (gexc.Forbidden, gexc.Unauthorized)):
        return StoragePermissionDenied(f"permission denied on {uri} ({cause.code}): {short_message(cause)}")
    if isinstance(cause, gexc.NotFound):
        return ObjectNotFound(f"not found: {uri}")
    if isinstance(cause, gexc.PreconditionFailed):
        return PreconditionFailed(f"{uri} changed while it was being written (412)")
    if isinstance(cause, gexc.GoogleAPICallError):
        return StorageError(f"storage error on {uri} ({cause.code}): {short_message(cause)}")
    return StorageError(f"storage error on {uri}: {type(cause).__name__}: {first_line(cause)}")


_REQUEST_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|HEAD) \S+: ")


def short_message(exc) -> str:
    """The service's own message: first line, without the client's "POST <url>: " prefix."""
    message = (getattr(exc, "message", None) or str(exc)).strip()
    if not message:
        return type(exc).__name__
    return _REQUEST_PREFIX.sub("", message.splitlines()[0])


def _bucket_missing(bucket: str) -> bool:
    """True when the bucket does not exist (needs only storage.objects.list, not buckets.get)."""
    from google.api_core import exceptions as gexc

    try:
        iterator = client().list_blobs(bucket, max_results=1, retry=_retry())
        next(iter(iterator), None)
    except gexc.NotFound:
        return True
    except _transport_errors() as exc:
        raise translate_error(exc, f"gs://{bucket}") from None
    return False


def check_bucket(bucket: str) -> None:
    """Raise BucketNotFound (or another StorageError) unless the bucket exists and is reachable."""
    check_bucket_name(bucket)
    if _bucket_missing(bucket):
        raise BucketNotFound(f"bucket gs://{bucket} does not exist (create it first)")


def _not_found(exc: BaseException, uri: str) -> StorageError:
    """A 404: tell a missing bucket apart from a missing object."""
    bucket, _ = split_gcs_uri(uri)
    if _bucket_missing(bucket):
        return BucketNotFound(f"bucket gs://{bucket} does not exist (while accessing {uri})")
    return ObjectNotFound(f"not found: {uri}")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the store said no / could not be reached" (not a bug of ours)."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from google.cloud.storage import exceptions as storage_exc

    return (
        gexc.GoogleAPIError,
        requests.exceptions.RequestException,
        ConnectionError,
        TimeoutError,
        auth_exc.TransportError,
        storage_exc.InvalidResponse,
        storage_exc.DataCorruption,
    )


def _call(uri: str, func, *args, **kwargs):
    """Run one client call, turning store failures into StorageErrors."""
    from google.api_core import exceptions as gexc

    try:
        return func(*args, **kwargs)
    except gexc.NotFound as exc:
        raise _not_found(exc, uri) from None
    except _transport_errors() as exc:
        err = translate_error(exc, uri)
        if isinstance(err, ObjectNotFound):
            raise _not_found(exc, uri) from None
        raise err from None


def _blob(uri: str):
    bucket, name = split_gcs_uri(uri)
    if not name:
        raise StorageError(f"{uri} names a bucket, not an object")
    return client().bucket(bucket).blob(name)


def _get_blob(uri: str):
    """The object's metadata, or None when it does not exist (the bucket must exist)."""
    bucket, name = split_gcs_uri(uri)
    if not name:
        raise StorageError(f"{uri} names a bucket, not an object")
    blob = _call(uri, client().bucket(bucket).get_blob, name, retry=_retry())
    if blob is None and _bucket_missing(bucket):
        raise BucketNotFound(f"bucket gs://{bucket} does not exist (while accessing {uri})")
    return blob


# -- transfers -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UploadResult:
    """What happened to one file: ``action`` is uploaded, skipped (same bytes) or overwritten."""

    source: str
    uri: str
    size: int
    crc32c: str
    action: str
    seconds: float = 0.0
    generation: int | None = None

    @property
    def uploaded(self) -> bool:
        return self.action in ("uploaded", "overwritten")

    @property
    def skipped(self) -> bool:
        return self.action == "skipped"


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled or total < PROGRESS_MIN_BYTES:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False)


class _ProgressReader:
    """A file wrapper that advances a progress bar as the client reads it."""

    def __init__(self, handle, bar) -> None:
        self._handle, self._bar = handle, bar

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._bar.update(len(data))
        return data

    def __getattr__(self, name):
        return getattr(self._handle, name)


class _ProgressWriter(_ProgressReader):
    def write(self, data: bytes) -> int:
        self._bar.update(len(data))
        return self._handle.write(data)


def upload_file(
    local: str | os.PathLike,
    uri: str | os.PathLike,
    *,
    skip_if_same: bool = True,
    overwrite: bool = False,
    progress: bool = False,
    content_type: str = "text/csv",
) -> UploadResult:
    """Copy a local file to ``uri`` (gs:// or a local path) and verify its CRC32C.

    An existing destination with the same CRC32C is skipped when ``skip_if_same``; one with
    different bytes raises ObjectConflict unless ``overwrite``.
    """
    local = Path(local)
    if not local.is_file():
        raise StorageError(f"local file not found: {local}")
    size = local.stat().st_size
    crc = crc32c_of_file(local)
    uri = str(uri)
    start = time.perf_counter()
    if not is_gcs(uri):
        return _copy_local(local, Path(uri), size, crc, skip_if_same, overwrite, start)

    existing = _get_blob(uri)
    generation_match = 0
    action = "uploaded"
    if existing is not None:
        if existing.crc32c == crc and existing.size == size and skip_if_same:
            logger.info("skip %s (same crc32c %s)", uri, crc)
            return UploadResult(str(local), uri, size, crc, "skipped", 0.0, existing.generation)
        if existing.crc32c != crc and not overwrite:
            raise ObjectConflict(
                f"{uri} already exists with different content (crc32c {existing.crc32c}, "
                f"local {crc}); not overwriting it"
            )
        generation_match = existing.generation
        action = "overwritten" if existing.crc32c != crc else "uploaded"

    blob = _blob(uri)
    kwargs = dict(
        if_generation_match=generation_match,
        checksum="crc32c",
        retry=_retry(),
        content_type=content_type,
    )
    bar = _progress_bar(size, local.name, progress)
    try:
        _upload(uri, blob, local, size, bar, kwargs)
    except PreconditionFailed:
        # GCS enforces the generation precondition (the emulator does not): someone else wrote
        # the object between our check and our upload. Same bytes: fine; else never clobber.
        now = _get_blob(uri)
        if now is not None and now.crc32c == crc:
            return UploadResult(str(local), uri, size, crc, "skipped", 0.0, now.generation)
        raise ObjectConflict(f"{uri} was written by someone else during this upload; not overwriting it") from None
    finally:
        if bar is not None:
            bar.close()
    if blob.crc32c != crc:
        raise ChecksumMismatch(f"{uri}: stored crc32c {blob.crc32c} != local {crc} after upload")
    seconds = time.perf_counter() - start
    logger.info("%s %s (%d bytes, crc32c %s, %.2f s)", action, uri, size, crc, seconds)
    return UploadResult(str(local), uri, size, crc, action, seconds, blob.generation)


def _upload(uri: str, blob, local: Path, size: int, bar, kwargs: dict) -> None:
    if size == 0:
        # The emulator drops the connection on an empty media/XML upload; the JSON multipart
        # path (which GCS also accepts for empty objects) works on both.
        _call(uri, blob.upload_from_string, b"", **kwargs)
    elif bar is not None:
        with open(local, "rb") as handle:
            _call(uri, blob.upload_from_file, _ProgressReader(handle, bar), size=size, **kwargs)
    else:
        _call(uri, blob.upload_from_filename, str(local), **kwargs)


def _copy_local(src, dst, size, crc, skip_if_same, overwrite, start) -> UploadResult:
    if dst.exists():
        dst_crc = crc32c_of_file(dst)
        if dst_crc == crc and skip_if_same:
            return UploadResult(str(src), str(dst), size, crc, "skipped")
        if dst_crc != crc and not overwrite:
            raise ObjectConflict(
                f"{dst} already exists with different content (crc32c {dst_crc}, source {crc}); not overwriting it"
            )
        action = "overwritten"
    else:
        action = "uploaded"
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, part)
    if crc32c_of_file(part) != crc:
        part.unlink()
        raise ChecksumMismatch(f"{dst}: copy does not match {src}")
    os.replace(part, dst)
    return UploadResult(str(src), str(dst), size, crc, action, time.perf_counter() - start)


def object_crc32c(uri: str) -> str | None:
    """The CRC32C of an object or local file, None when it does not exist."""
    if not is_gcs(uri):
        path = Path(uri)
        return crc32c_of_file(path) if path.is_file() else None
    blob = _get_blob(uri)
    return None if blob is None else blob.crc32c


def download_file(
    uri: str | os.PathLike,
    local: str | os.PathLike,
    *,
    expected_crc32c: str | None = None,
    progress: bool = False,
) -> Path:
    """Copy ``uri`` (gs:// or local) to ``local``, verifying CRC32C; returns the local path.

    ``expected_crc32c`` (e.g. from a manifest) catches an object altered after it was written.
    """
    uri, local = str(uri), Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(local.name + ".part")
    if not is_gcs(uri):
        if not Path(uri).is_file():
            raise ObjectNotFound(f"not found: {uri}")
        shutil.copyfile(uri, part)
        stored = crc32c_of_file(uri)
    else:
        blob = _get_blob(uri)
        if blob is None:
            raise ObjectNotFound(f"not found: {uri}")
        stored = blob.crc32c
        bar = _progress_bar(blob.size or 0, Path(blob.name).name, progress)
        try:
            with open(part, "wb") as handle:
                _call(
                    uri,
                    blob.download_to_file,
                    handle if bar is None else _ProgressWriter(handle, bar),
                    checksum="crc32c",
                    retry=_retry(),
                    if_generation_match=blob.generation,
                )
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            if bar is not None:
                bar.close()
    got = crc32c_of_file(part)
    for label, want in (("stored", stored), ("expected", expected_crc32c)):
        if want is not None and got != want:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{uri}: crc32c {got} does not match the {label} crc32c {want}")
    os.replace(part, local)
    return local


def exists(uri: str | os.PathLike) -> bool:
    uri = str(uri)
    if not is_gcs(uri):
        return Path(uri).exists()
    return _get_blob(uri) is not None


def list_blobs(prefix_uri: str | os.PathLike) -> list[str]:
    """Every object (or file) under a prefix, as full URIs/paths, sorted."""
    prefix_uri = str(prefix_uri)
    if not is_gcs(prefix_uri):
        root = Path(prefix_uri)
        if root.is_file():
            return [str(root)]
        return sorted(str(p) for p in root.rglob("*") if p.is_file())
    bucket, prefix = split_gcs_uri(prefix_uri)

    def _list() -> list[str]:
        return sorted(
            f"gs://{bucket}/{blob.name}" for blob in client().list_blobs(bucket, prefix=prefix or None, retry=_retry())
        )

    return _call(prefix_uri, _list)


def delete(uri: str | os.PathLike) -> None:
    """Remove one object or local file (missing is an error)."""
    uri = str(uri)
    if not is_gcs(uri):
        path = Path(uri)
        if not path.is_file():
            raise ObjectNotFound(f"not found: {uri}")
        path.unlink()
        return
    _call(uri, _blob(uri).delete, retry=_retry())


def read_bytes(uri: str | os.PathLike) -> bytes:
    uri = str(uri)
    if not is_gcs(uri):
        path = Path(uri)
        if not path.is_file():
            raise ObjectNotFound(f"not found: {uri}")
        return path.read_bytes()
    blob = _get_blob(uri)
    if blob is None:
        raise ObjectNotFound(f"not found: {uri}")
    return _call(uri, blob.download_as_bytes, checksum="crc32c", retry=_retry())


def read_text(uri: str | os.PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def _relative_files(local_dir: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(local_dir.rglob("*")):
        if path.is_file():
            yield path, path.relative_to(local_dir).as_posix()


def upload_dir(
    local_dir: str | os.PathLike,
    prefix_uri: str | os.PathLike,
    *,
    skip_if_same: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> list[UploadResult]:
    """Upload every file under ``local_dir`` to ``prefix_uri/<relative path>``."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise StorageError(f"local directory not found: {local_dir}")
    return [
        upload_file(
            path,
            join(prefix_uri, rel),
            skip_if_same=skip_if_same,
            overwrite=overwrite,
            progress=progress,
            content_type="application/octet-stream",
        )
        for path, rel in _relative_files(local_dir)
    ]


def download_dir(prefix_uri: str | os.PathLike, local_dir: str | os.PathLike, *, progress: bool = False) -> list[Path]:
    """Download every object under ``prefix_uri`` into ``local_dir`` keeping relative names."""
    prefix_uri, local_dir = str(prefix_uri), Path(local_dir)
    base = prefix_uri.rstrip("/") + "/"
    found = [u for u in list_blobs(prefix_uri) if u.startswith(base) or not is_gcs(prefix_uri)]
    if not found:
        raise ObjectNotFound(f"nothing found under {prefix_uri}")
    paths = []
    for uri in found:
        rel = uri[len(base) :] if is_gcs(prefix_uri) else Path(uri).relative_to(prefix_uri).as_posix()
        if not rel or rel.endswith("/"):
            continue  # "directory placeholder" objects
        paths.append(download_file(uri, local_dir / rel, progress=progress))
    return paths
