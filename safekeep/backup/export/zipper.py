"""An export ZIP built as a stream: each member is read from the blob store, hashed as it
passes, and written through a streaming upload, so the memory the bytes take stays constant
whatever their size. The manifest (JSON, last member) lists every file with its size and
SHA-256, so its entries (and the names already used) are held until the end: they grow with
the number of files, not their bytes. Every path component is a portable name
(``safekeep.disposition.portable_name``), and names that meet on Windows (case) get a suffix."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stream_zip import ZIP_64, async_stream_zip

from safekeep.disposition import portable_name
from safekeep.storage.blobstore import BlobStore

MAX_COMPONENT_CHARS = 150
MANIFEST_NAME = "manifest.json"


def safe_name(name: str, fallback: str = "untitled") -> str:
    """A path component that unpacks on Windows, macOS and Linux alike."""
    return portable_name(name, fallback=fallback, max_chars=MAX_COMPONENT_CHARS)


@dataclass
class ZipMember:
    path: str
    stream: AsyncIterator[bytes]
    modified_at: datetime | None
    meta: dict[str, Any]


@dataclass
class ManifestEntry:
    path: str
    size: int
    sha256: str
    meta: dict[str, Any]


@dataclass
class ZipResult:
    size: int
    sha256: str
    entries: list[ManifestEntry] = field(default_factory=list)


class _Hashing:
    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            self.digest.update(chunk)
            self.size += len(chunk)
            yield chunk


async def write_zip(
    store: BlobStore,
    key: str,
    members: AsyncIterable[ZipMember],
    *,
    summary: dict[str, Any],
) -> ZipResult:
    result = ZipResult(size=0, sha256="")
    used: set[str] = set()

    def unique(path: str) -> str:
        candidate, n = path, 1
        while candidate.lower() in used:
            stem, dot, ext = path.rpartition(".")
            candidate = f"{stem} ({n}).{ext}" if dot and "/" not in ext else f"{path} ({n})"
            n += 1
        used.add(candidate.lower())
        return candidate

    async def files() -> AsyncIterator[tuple[str, datetime, int, Any, AsyncIterable[bytes]]]:
        async for member in members:
            path = unique(member.path)
            hashing = _Hashing(member.stream)
            yield (path, member.modified_at or datetime.now(UTC), 0o644, ZIP_64, hashing)
            result.entries.append(
                ManifestEntry(path, hashing.size, hashing.digest.hexdigest(), member.meta)
            )
        manifest = json.dumps(
            {
                **summary,
                "files": [
                    {"path": e.path, "size": e.size, "sha256": e.sha256, **e.meta}
                    for e in result.entries
                ],
            },
            indent=1,
            default=str,
        ).encode()

        async def once() -> AsyncIterator[bytes]:
            yield manifest

        yield (MANIFEST_NAME, datetime.now(UTC), 0o644, ZIP_64, once())

    digest = hashlib.sha256()
    async with store.writer(key, content_type="application/zip") as writer:
        async for chunk in async_stream_zip(files()):
            digest.update(chunk)
            result.size += len(chunk)
            await writer.write(chunk)
    result.sha256 = digest.hexdigest()
    return result
