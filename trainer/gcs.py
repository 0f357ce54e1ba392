"""The gs:// side of trainer.storage: the google-cloud-storage client, its calls, its failures as StorageErrors."""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from pathlib import Path

from trainer.storage_types import (
    BucketNotFound,
    ChecksumMismatch,
    ObjectConflict,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    StoragePermissionDenied,
    StoreUnreachable,
    UploadResult,
)

logger = logging.getLogger(__name__)

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
RETRY_ENV = "TAXIFARE_GCS_RETRY_S"
EMULATOR_PROJECT = "local-project"
PROGRESS_MIN_BYTES = 8 << 20  # smaller files finish before a progress bar is worth drawing


# -- the client ----------------------------------------------------------------------------------
# google-cloud-storage moves the bytes because TensorFlow's own gs:// filesystem ignores the emulator.
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


# -- failures as one-line StorageErrors ----------------------------------------------------------
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


# -- calls on objects ----------------------------------------------------------------------------
# ``bucket`` and ``name`` come checked by trainer.storage.split_gcs_uri; ``uri`` names the object
# in messages.
def bucket_missing(bucket: str) -> bool:
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


def _not_found(bucket: str, uri: str) -> StorageError:
    """A 404: tell a missing bucket apart from a missing object."""
    if bucket_missing(bucket):
        return BucketNotFound(f"bucket gs://{bucket} does not exist (while accessing {uri})")
    return ObjectNotFound(f"not found: {uri}")


def _call(bucket: str, uri: str, func, *args, **kwargs):
    """Run one client call, turning store failures into StorageErrors."""
    from google.api_core import exceptions as gexc

    try:
        return func(*args, **kwargs)
    except gexc.NotFound:
        raise _not_found(bucket, uri) from None
    except _transport_errors() as exc:
        err = translate_error(exc, uri)
        if isinstance(err, ObjectNotFound):
            raise _not_found(bucket, uri) from None
        raise err from None


def get_blob(bucket: str, name: str, uri: str):
    """The object's metadata, or None when it does not exist (the bucket must exist)."""
    blob = _call(bucket, uri, client().bucket(bucket).get_blob, name, retry=_retry())
    if blob is None and bucket_missing(bucket):
        raise BucketNotFound(f"bucket gs://{bucket} does not exist (while accessing {uri})")
    return blob


def list_uris(bucket: str, prefix: str, uri: str) -> list[str]:
    """Every object whose name starts with ``prefix`` (all when empty), as gs:// URIs, sorted."""

    def _list() -> list[str]:
        return sorted(
            f"gs://{bucket}/{blob.name}" for blob in client().list_blobs(bucket, prefix=prefix or None, retry=_retry())
        )

    return _call(bucket, uri, _list)


def delete(bucket: str, name: str, uri: str) -> None:
    _call(bucket, uri, client().bucket(bucket).blob(name).delete, retry=_retry())


def read_bytes(blob, uri: str) -> bytes:
    return _call(blob.bucket.name, uri, blob.download_as_bytes, checksum="crc32c", retry=_retry())


# -- transfers, with a progress bar for big files ------------------------------------------------
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
    local: Path,
    bucket: str,
    name: str,
    uri: str,
    size: int,
    crc: str,
    *,
    skip_if_same: bool,
    overwrite: bool,
    progress: bool,
    content_type: str,
) -> UploadResult:
    """Copy ``local`` (``size`` bytes, CRC32C ``crc``) to the object and verify the stored CRC32C.

    The object's generation makes check-then-write safe: the write replaces only the generation
    looked at (0: no object), so bytes someone else wrote in between are never overwritten.
    """
    start = time.perf_counter()
    existing = get_blob(bucket, name, uri)
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

    blob = client().bucket(bucket).blob(name)
    kwargs = dict(
        if_generation_match=generation_match,
        checksum="crc32c",
        retry=_retry(),
        content_type=content_type,
    )
    bar = _progress_bar(size, local.name, progress)
    try:
        _upload(bucket, uri, blob, local, size, bar, kwargs)
    except PreconditionFailed:
        # GCS enforces the generation precondition (the emulator does not): someone else wrote
        # the object between our check and our upload. Same bytes: fine; else never clobber.
        now = get_blob(bucket, name, uri)
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


def _upload(bucket: str, uri: str, blob, local: Path, size: int, bar, kwargs: dict) -> None:
    if size == 0:
        # The emulator drops the connection on an empty media/XML upload; the JSON multipart
        # path (which GCS also accepts for empty objects) works on both.
        _call(bucket, uri, blob.upload_from_string, b"", **kwargs)
    elif bar is not None:
        with open(local, "rb") as handle:
            _call(bucket, uri, blob.upload_from_file, _ProgressReader(handle, bar), size=size, **kwargs)
    else:
        _call(bucket, uri, blob.upload_from_filename, str(local), **kwargs)


def download(blob, uri: str, target: Path, *, progress: bool) -> None:
    """Write the object's bytes to ``target``, CRC32C-checked by the client.

    The download is pinned to the generation of ``blob`` (the metadata looked up), so the bytes
    are the ones whose CRC32C the caller compares against; a newer write fails it instead.
    """
    bar = _progress_bar(blob.size or 0, Path(blob.name).name, progress)
    try:
        with open(target, "wb") as handle:
            _call(
                blob.bucket.name,
                uri,
                blob.download_to_file,
                handle if bar is None else _ProgressWriter(handle, bar),
                checksum="crc32c",
                retry=_retry(),
                if_generation_match=blob.generation,
            )
    finally:
        if bar is not None:
            bar.close()
