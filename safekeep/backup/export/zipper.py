"""An export ZIP built as a stream: each member is read from the blob store, hashed as it
passes, and written through a streaming upload, so the memory the bytes take stays constant
whatever their size. The manifest (JSON, last member) lists every file with its size and
SHA-256, so its entries (and the names already used) are held until the end: they grow with
the number of files, not their bytes. Every path component is a portable name
(``safekeep.disposition.portable_name``), and names that meet on Windows (case) get a suffix.

Whole paths are bounded too (``fit_path``). OneDrive and SharePoint keep paths of up to 400
characters and a mailbox's folders nest as deep as their owner likes, but Windows' own
extractor creates nothing past MAX_PATH (260 characters, the destination folder included:
about 80 for a user's Downloads folder and the export's own), and "Extract All" stops at the
first such file. A path longer than ``MAX_PATH_CHARS`` is shortened where it is longest, each
shortened part marked with six hex digits of a hash of what it stood for, so that distinct
names stay distinct and every file of a folder stays in one folder; the manifest names such a
file's ``full_path`` as well."""

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
MAX_PATH_CHARS = 180  # a member's whole path (see above)
NAME_CHARS = 64  # what a folder path leaves its file name at least, once it has to shrink
SHORT_CHARS = 8  # what a shortened folder keeps of its name, before its mark
MANIFEST_NAME = "manifest.json"


def safe_name(name: str, fallback: str = "untitled") -> str:
    """A path component that unpacks on Windows, macOS and Linux alike."""
    return portable_name(name, fallback=fallback, max_chars=MAX_COMPONENT_CHARS)


def fit_path(path: str, limit: int = MAX_PATH_CHARS) -> str:
    """``path`` (portable components joined by "/") within ``limit`` characters. Folders
    that leave a name fewer than ``NAME_CHARS`` are shortened, whatever the name, so that a
    folder's files stay in one folder: longest first, each to its first few characters and
    a mark; if that is not enough, those between the second and the last are folded into
    one mark. Then a name longer than the room left keeps the start of its stem, a mark and
    its extension. A path whose folders leave room and which fits is unchanged."""
    *folders, name = path.split("/")
    if len(path) - len(name) - 1 > limit - NAME_CHARS - 1:  # whatever the name: the same
        folders = _fit_folders(folders, limit - NAME_CHARS - 1)  # folder for all its files
    elif len(path) <= limit:
        return path
    room = limit - len("/".join(folders)) - 1 if folders else limit
    if len(name) > room:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or len(ext) > 16:
            stem, ext = name, ""
        else:
            ext = "." + ext
        mark = _mark(name)
        name = stem[: room - len(mark) - len(ext)].rstrip(" .") + mark + ext
    return "/".join([*folders, name])


def _mark(text: str) -> str:
    return "~" + hashlib.sha256(text.encode()).hexdigest()[:6]


def _fit_folders(folders: list[str], limit: int) -> list[str]:
    out = list(folders)
    for i in sorted(range(len(out)), key=lambda i: (-len(out[i]), i)):
        if len("/".join(out)) <= limit:
            return out
        if len(out[i]) > SHORT_CHARS + 7:
            out[i] = out[i][:SHORT_CHARS].rstrip(" .") + _mark(folders[i])
    if len("/".join(out)) <= limit:
        return out
    return [*out[:2], _mark("/".join(folders[2:-1])), out[-1]]


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

    def unique(path: str, fitted: str) -> str:
        """``fitted`` (``path`` as ``fit_path`` made it), or a numbered variant of ``path``
        fitted in turn, whichever no earlier member took (case ignored)."""
        candidate, n = fitted, 1
        while candidate.lower() in used:
            stem, dot, ext = path.rpartition(".")
            numbered = f"{stem} ({n}).{ext}" if dot and "/" not in ext else f"{path} ({n})"
            candidate = fit_path(numbered)
            n += 1
        used.add(candidate.lower())
        return candidate

    async def files() -> AsyncIterator[tuple[str, datetime, int, Any, AsyncIterable[bytes]]]:
        async for member in members:
            fitted = fit_path(member.path)
            path = unique(member.path, fitted)
            hashing = _Hashing(member.stream)
            yield (path, member.modified_at or datetime.now(UTC), 0o644, ZIP_64, hashing)
            meta = (
                member.meta if fitted == member.path else {**member.meta, "full_path": member.path}
            )
            result.entries.append(
                ManifestEntry(path, hashing.size, hashing.digest.hexdigest(), meta)
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
