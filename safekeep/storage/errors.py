"""Storage errors, one small hierarchy so that callers map them without knowing the backend.

The API maps ``BlobNotFound`` to 404-like answers, ``BlobStoreUnavailable`` to 503 /readyz
failures and retries, and treats ``IntegrityError``/``KeyUnwrapError`` as alarms: they mean
stored bytes or keys were altered, never a transient condition.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error raised by ``safekeep.storage``."""


class BlobNotFound(StorageError):
    """The object does not exist (or is hidden behind a delete marker)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"blob not found: {key}")
        self.key = key


class BlobLocked(StorageError):
    """Deletion refused because the object is under Object Lock retention."""

    def __init__(self, key: str) -> None:
        super().__init__(f"blob is under retention and cannot be deleted: {key}")
        self.key = key


class IntegrityError(StorageError):
    """Stored bytes fail authentication: tampered, truncated, swapped or read with a wrong key."""


class KeyUnwrapError(StorageError):
    """A wrapped data key could not be opened: wrong master key, wrong tenant or tampering."""


class BlobStoreUnavailable(StorageError):
    """The backend cannot be reached or refuses service; retrying later may succeed."""


# The first interface sketch called the ping failure ``BlobStoreError``; keep that spelling
# usable as the catch-all so code written against the sketch still catches everything.
BlobStoreError = StorageError
