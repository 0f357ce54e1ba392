"""One storage API for local paths and ``gs://`` URIs: names, CRC32C-checked transfers, listing."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import google_crc32c

from trainer import gcs

# Callers reach the client, its message helpers and every StorageError as storage.<name>.
from trainer.gcs import PROGRESS_MIN_BYTES, _client, client, first_line, short_message  # noqa: F401
from trainer.storage_types import (
    BucketNameError,
    BucketNotFound,
    ChecksumMismatch,
    ObjectConflict,
    ObjectNotFound,
    PreconditionFailed,  # noqa: F401
    StorageError,
    StoragePermissionDenied,  # noqa: F401
    StoreUnreachable,  # noqa: F401
    UploadResult,
)

_CHUNK = 1 << 20


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
def expand_files(spec, *, isdir=os.path.isdir, glob=None, exists=os.path.isfile) -> list[str]:
    """Comma-separated files, globs or shard directories (or a list of them) → de-duplicated file
    paths, in order; a directory means its ``.csv`` shards (train-00000-of-00004.csv, …).

    The one grammar of a split's files: local paths by default, any file system through ``isdir``,
    ``glob`` and ``exists`` (the trainer passes TensorFlow's, which also reads gs://). Raises
    FileNotFoundError naming the part that matched nothing.
    """
    if glob is None:
        from glob import glob
    parts = list(spec) if isinstance(spec, list | tuple) else str(spec).split(",")
    paths: list[str] = []
    for part in (str(p).strip() for p in parts):
        if not part:
            continue
        if isdir(part):
            matches = sorted(glob(part.rstrip("/") + "/*.csv"))
            if not matches:
                raise FileNotFoundError(f"{part}: directory holds no .csv shard")
            paths.extend(matches)
        elif any(ch in part for ch in "*?["):
            matches = sorted(glob(part))
            if not matches:
                raise FileNotFoundError(f"{part}: no file matches this pattern")
            paths.extend(matches)
        else:
            if not exists(part):
                raise FileNotFoundError(f"{part}: no such file")
            paths.append(part)
    if not paths:
        raise FileNotFoundError(f"no input files in {spec!r}")
    return list(dict.fromkeys(paths))


def crc32c_of_bytes(data: bytes) -> str:
    """CRC32C as GCS reports it: base64 of the big-endian 4 bytes."""
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


def crc32c_of_file(path: str | os.PathLike) -> str:
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode("ascii")


# -- objects -------------------------------------------------------------------------------------
def check_bucket(bucket: str) -> None:
    """Raise BucketNotFound (or another StorageError) unless the bucket exists and is reachable."""
    check_bucket_name(bucket)
    if gcs.bucket_missing(bucket):
        raise BucketNotFound(f"bucket gs://{bucket} does not exist (create it first)")


def _object(uri: str) -> tuple[str, str]:
    """(bucket, name) of a gs:// URI that names an object, not just a bucket."""
    bucket, name = split_gcs_uri(uri)
    if not name:
        raise StorageError(f"{uri} names a bucket, not an object")
    return bucket, name


def _get_blob(uri: str):
    """The object's metadata, or None when it does not exist (the bucket must exist)."""
    return gcs.get_blob(*_object(uri), uri)


# -- transfers -----------------------------------------------------------------------------------
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

    An existing destination with the same CRC32C is skipped when ``skip_if_same`` (a re-run
    uploads nothing); one with different bytes raises ObjectConflict unless ``overwrite``.
    """
    local = Path(local)
    if not local.is_file():
        raise StorageError(f"local file not found: {local}")
    size = local.stat().st_size
    crc = crc32c_of_file(local)
    uri = str(uri)
    if not is_gcs(uri):
        return _copy_local(local, Path(uri), size, crc, skip_if_same, overwrite)

    bucket, name = _object(uri)
    return gcs.upload_file(
        local,
        bucket,
        name,
        uri,
        size,
        crc,
        skip_if_same=skip_if_same,
        overwrite=overwrite,
        progress=progress,
        content_type=content_type,
    )


def _copy_local(src, dst, size, crc, skip_if_same, overwrite) -> UploadResult:
    start = time.perf_counter()
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

    The bytes go to ``<local>.part``, renamed only once their CRC32C matches the stored one and
    ``expected_crc32c`` (e.g. from a manifest, to catch an object altered after it was written).
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
        try:
            gcs.download(blob, uri, part, progress=progress)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
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
    return gcs.list_uris(bucket, prefix, prefix_uri)


def delete(uri: str | os.PathLike) -> None:
    """Remove one object or local file (missing is an error)."""
    uri = str(uri)
    if not is_gcs(uri):
        path = Path(uri)
        if not path.is_file():
            raise ObjectNotFound(f"not found: {uri}")
        path.unlink()
        return
    gcs.delete(*_object(uri), uri)


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
    return gcs.read_bytes(blob, uri)


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
