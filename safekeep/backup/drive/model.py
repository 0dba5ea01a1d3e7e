"""How drive items (OneDrive, SharePoint libraries) live in the catalog, what search sees of
them, and how their original bytes are handed back.

Catalog kinds: ``drive_folder`` (a folder, or a package such as a OneNote notebook) and
``file``. A drive's root is not an item: its children hang at the top of the account
(OneDrive) or under the library's own item (SharePoint), so a browser never shows a lone
"root" folder.

``meta`` of a file (what the browse API shows; all strings unless said):
  ``id``, ``drive_id`` (Graph ids), ``path`` ("/Documents/Q3.xlsx", at capture time),
  ``mime_type``, ``file_type`` (lower-case extension), ``hashes`` (Graph's
  ``quickXorHash`` / ``sha256Hash`` / ``sha1Hash`` / ``crc32Hash`` as Graph gave them),
  ``ctag``, ``etag``, ``created_by``, ``modified_by`` (display name or e-mail),
  ``created_at``, ``modified_at`` (Graph's item times), ``fs_created_at``,
  ``fs_modified_at`` (``fileSystemInfo``, what a restore puts back), ``web_url``.
A folder has ``id``, ``drive_id``, ``path``, the people and times, ``web_url`` and, for a
package, ``package`` (its type). ``document`` is the item's Graph JSON (without the
short-lived ``@microsoft.graph.downloadUrl``, a credential); ``content`` is the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.backup.services.base import Content, read_content
from safekeep.errors import NotFound
from safekeep.graph.transport import json_bytes
from safekeep.search.extract import TEXTS, extract_text, file_type_of
from safekeep.settings import settings
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion

FOLDER = "drive_folder"
FILE = "file"
DRIVE_KINDS = frozenset({FOLDER, FILE})

# Files whose text we index: the types safekeep.search.extract reads, up to this size.
# Bigger ones are indexed by name, path and type only (their text would be cut anyway).
EXTRACT_TYPES = frozenset(
    {"txt", "text", "csv", "tsv", "md", "log", "json", "xml", "html", "htm", "xhtml"}
    | {"docx", "xlsx", "pptx", "pdf"}
)
EXTRACT_MAX_BYTES = 8 * 1024 * 1024

# Graph fields that must never be stored: short-lived pre-authenticated URLs.
_CREDENTIALS = ("@microsoft.graph.downloadUrl", "@content.downloadUrl")


def parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def who(identity: Any) -> str | None:
    """The person in a Graph ``identitySet`` (user, else application, else device)."""
    if not isinstance(identity, Mapping):
        return None
    for key in ("user", "application", "device", "group"):
        found = identity.get(key)
        if isinstance(found, Mapping):
            name = found.get("displayName") or found.get("email")
            if name:
                return str(name)
    return None


def clean_document(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in _CREDENTIALS}


def document_bytes(item: Mapping[str, Any]) -> bytes:
    return json_bytes(clean_document(item), sort_keys=True)


def is_folder(item: Mapping[str, Any]) -> bool:
    return "folder" in item or "package" in item or "root" in item


def hashes_of(item: Mapping[str, Any]) -> dict[str, str]:
    found = (item.get("file") or {}).get("hashes") or {}
    return {k: str(v) for k, v in found.items() if isinstance(v, str) and v}


def same_content(previous: ItemVersion, item: Mapping[str, Any]) -> bool:
    """The stored bytes are still the item's bytes: the same cTag (which names the
    driveItem and its content's version), or every hash both have equal and the same size."""
    meta = previous.meta or {}
    if not previous.content:
        return False
    if meta.get("ctag") and meta.get("ctag") == item.get("cTag"):
        return True
    stored = meta.get("hashes") or {}
    now = hashes_of(item)
    common = [k for k in now if k in stored]
    return (
        bool(common)
        and all(now[k].lower() == str(stored[k]).lower() for k in common)
        and int(item.get("size") or 0) == previous.size
    )


def item_meta(item: Mapping[str, Any], *, drive_id: str, path: str) -> dict[str, Any]:
    fs = item.get("fileSystemInfo") or {}
    meta: dict[str, Any] = {
        "id": item["id"],
        "drive_id": drive_id,
        "path": path,
        "created_by": who(item.get("createdBy")),
        "modified_by": who(item.get("lastModifiedBy")),
        "created_at": item.get("createdDateTime"),
        "modified_at": item.get("lastModifiedDateTime"),
        "fs_created_at": fs.get("createdDateTime"),
        "fs_modified_at": fs.get("lastModifiedDateTime"),
        "web_url": item.get("webUrl"),
    }
    if is_folder(item):
        package = item.get("package")
        if isinstance(package, Mapping):
            meta["package"] = package.get("type")
        return meta
    mime = (item.get("file") or {}).get("mimeType")
    meta |= {
        "mime_type": mime,
        "file_type": file_type_of(str(item.get("name") or ""), mime),
        "hashes": hashes_of(item),
        "ctag": item.get("cTag"),
        "etag": item.get("eTag"),
    }
    return meta


def extractable(name: str, mime_type: str | None, size: int) -> bool:
    """Whether the file's text is worth reading for the index."""
    return 0 < size <= EXTRACT_MAX_BYTES and file_type_of(name, mime_type) in EXTRACT_TYPES


def parent_path(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


async def drive_search_fields(
    kind: str,
    name: str,
    size: int,
    modified_at: datetime | None,
    meta: Mapping[str, Any],
    read: Callable[[], Awaitable[bytes | None]],
    *,
    tenant_id: str,
    content_hash: str | None,
) -> SearchFields:
    """The one way a drive item becomes searchable: used by the collector on the bytes it
    just downloaded and by the indexing retry job on bytes read back from the store.

    A file's text depends on its bytes (``content_hash``, their SHA-256), its type (by name
    and MIME type) and the configured limit: with the tenant, its key in the worker's memory
    of texts (``TEXTS``). A file seen before (a copy in another drive, a file renamed or
    moved, whose unchanged bytes the collector would otherwise read back from the store) is
    neither read nor extracted again."""
    path = str(meta.get("path") or "/" + name)
    people = [p for p in (meta.get("created_by"), meta.get("modified_by")) if p]
    fields = SearchFields(
        title=name,
        folder_path=parent_path(path),
        date=modified_at,
        people=list(dict.fromkeys(people)),
    )
    if kind != FILE:
        return fields
    mime = meta.get("mime_type")
    fields.file_type = meta.get("file_type") or file_type_of(name, mime)
    if not extractable(name, mime, size):
        return fields
    limit = settings.search_body_max_chars
    key = ("file", tenant_id, content_hash, file_type_of(name, mime), mime, limit)

    async def read_text() -> str:
        data = await read()
        text = await asyncio.to_thread(extract_text, name, mime, data, limit=limit) if data else ""
        return TEXTS.keep(key, text) if content_hash and data else text

    known = TEXTS.known(key) if content_hash else None
    if known is None:
        known = await _once(key, read_text) if content_hash else await read_text()
    fields.body = known
    return fields


# Texts being read now, by event loop and key: two copies of a file met at once (a delta page
# stores its files side by side) share one reading instead of both missing the memory.
_READING: dict[tuple[asyncio.AbstractEventLoop, Any], asyncio.Future[str | None]] = {}


async def _once(key: Any, read_text: Callable[[], Awaitable[str]]) -> str:
    loop = asyncio.get_running_loop()
    slot = (loop, key)
    pending = _READING.get(slot)
    if pending is not None:
        shared = await asyncio.shield(pending)
        if shared is not None:
            return shared
        return await read_text()  # the first reading failed: this copy reads for itself
    future: asyncio.Future[str | None] = loop.create_future()
    _READING[slot] = future
    text: str | None = None
    try:
        text = await read_text()
        return text
    finally:
        del _READING[slot]
        future.set_result(text)


def content_of(repo: TenantRepository, version: ItemVersion) -> Content:
    """A file's bytes for download: its own type, known size, Range-capable."""
    if version.kind != FILE or not version.content:
        raise NotFound("Only files have content to download; this is a folder")
    meta = version.meta or {}

    def open_range(start: int, end_inclusive: int | None) -> Any:
        return read_content(repo, version, start=start, end_inclusive=end_inclusive)

    return Content(
        media_type=str(meta.get("mime_type") or "application/octet-stream"),
        filename=version.name,
        size=version.size,
        etag=version.content_hash or str(version.id),
        rangeable=True,
        open=open_range,
    )
