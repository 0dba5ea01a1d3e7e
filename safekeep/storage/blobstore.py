"""The raw object store: a local folder or any S3 API, behind one async interface.

Keys are full paths relative to the store's root (``tenants/<id>/chunks/ab/ab...``); the store
knows nothing of tenants. Both backends honour the same contract, checked by one test suite:
an object appears whole or not at all, listing is in byte order, a missing key raises
``BlobNotFound``, and a delete under Object Lock retention raises ``BlobLocked``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

MAX_KEY_BYTES = 1024  # S3's limit; the local store keeps it too so both accept the same keys
TEMP_PREFIX = ".tmp-"  # the local store's in-progress files; no key component may start so
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class BlobInfo:
    size: int
    retain_until: datetime | None  # Object Lock retention of the current version, UTC


@runtime_checkable
class BlobWriter(Protocol):
    bytes_written: int

    async def write(self, data: bytes | bytearray | memoryview) -> None: ...


@runtime_checkable
class BlobStore(Protocol):
    """What both backends offer; they subclass it to share the checks made before a write."""

    supports_object_lock: bool

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def put(
        self,
        key: str,
        data: bytes,
        *,
        retain_until: datetime | None = None,
        content_type: str | None = None,
    ) -> None:
        """Write ``key`` whole, replacing what is there. The retention date is checked here,
        the same for both backends, before the backend's ``_put`` writes anything."""
        await self._put(key, data, check_retention(retain_until), content_type)

    async def _put(
        self, key: str, data: bytes, retain_until: datetime | None, content_type: str | None
    ) -> None: ...
    async def put_if_absent(
        self, key: str, data: bytes, *, retain_until: datetime | None = None
    ) -> bool: ...
    async def exists(self, key: str) -> bool: ...
    async def head(self, key: str) -> BlobInfo | None: ...
    async def get(self, key: str) -> bytes: ...
    async def get_range(self, key: str, start: int, end_inclusive: int) -> bytes: ...
    async def size(self, key: str) -> int: ...
    async def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> AsyncIterator[str]: ...
    async def extend_retention(self, key: str, retain_until: datetime) -> None: ...
    def writer(
        self,
        key: str,
        *,
        content_type: str | None = None,
        retain_until: datetime | None = None,
    ) -> AbstractAsyncContextManager[BlobWriter]: ...
    async def presigned_get_url(
        self, key: str, expires_in: int, filename: str | None = None
    ) -> str | None: ...


def validate_key(key: str) -> str:
    """Refuse keys that would escape the local root or mean different things on the backends."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise ValueError(f"invalid blob key {key!r}: empty, or leading/trailing '/'")
    if len(key.encode()) > MAX_KEY_BYTES or _BAD_CHARS.search(key):
        raise ValueError(f"invalid blob key {key!r}: too long or control characters")
    for part in key.split("/"):
        if part in ("", ".", "..") or part.startswith(TEMP_PREFIX):
            raise ValueError(f"invalid blob key {key!r}: bad path component {part!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix may be empty or end anywhere, but must not escape the root."""
    if prefix.startswith("/") or _BAD_CHARS.search(prefix):
        raise ValueError(f"invalid prefix {prefix!r}")
    parts = prefix.split("/")
    for part in parts[:-1]:
        if part in ("", ".", ".."):
            raise ValueError(f"invalid prefix {prefix!r}")
    return prefix


def check_retention(retain_until: datetime | None) -> datetime | None:
    """Retention dates must be timezone-aware; they are handled in UTC everywhere."""
    if retain_until is None:
        return None
    if retain_until.tzinfo is None:
        raise ValueError("retain_until must be timezone-aware")
    return retain_until.astimezone(UTC)


def open_blobstore(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str = "us-east-1",
) -> BlobStore:
    """Build (not yet open) the store named by ``file:///abs/path`` or ``s3://bucket/prefix``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL must be file:///absolute/path, got {url!r}")
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise ValueError(f"file URL must name an absolute path, got {url!r}")
        from safekeep.storage.localstore import LocalBlobStore

        return LocalBlobStore(path)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"s3 URL must name a bucket, got {url!r}")
        from safekeep.storage.s3store import S3BlobStore

        return S3BlobStore(
            parts.netloc,
            prefix=unquote(parts.path).strip("/"),
            endpoint_url=s3_endpoint_url,
            region=s3_region,
        )
    raise ValueError(f"unsupported blob store URL {url!r}: use file:// or s3://")
