"""What trainer.storage reports, for local paths and gs:// alike: UploadResult and the StorageError family."""

from __future__ import annotations

from dataclasses import dataclass


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


# -- errors ----------------------------------------------------------------------------------------
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
