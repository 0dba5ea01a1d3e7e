"""A site's catalog kinds, and what search indexes of each: library files as OneDrive's,
list items by their fields, libraries and lists by name."""

from __future__ import annotations

from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.backup.drive.model import FILE, FOLDER, drive_search_fields
from safekeep.backup.services.base import ContentReader
from safekeep.backup.services.sharepoint.lists import LIST_ITEM, list_item_search_fields
from safekeep.tenants.models import ItemVersion

LIBRARY = "library"
LIBRARY_CHANGE_KEY = "library"  # a library's version changes with its name only


def library_external_id(drive_id: str) -> str:
    return f"library:{drive_id}"


async def search_fields(
    version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
) -> SearchFields | None:
    meta = version.meta or {}
    if version.kind in (FILE, FOLDER):
        return await drive_search_fields(
            version.kind,
            version.name,
            version.size,
            version.modified_at,
            meta,
            content,
            tenant_id=str(version.tenant_id),
            content_hash=version.content_hash,
        )
    if version.kind == LIST_ITEM:
        return list_item_search_fields(version.name, version.modified_at, meta, document)
    return SearchFields(title=version.name)
