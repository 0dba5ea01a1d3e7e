"""What search indexes of a drive item: OneDrive and SharePoint libraries describe files
alike (``drive.model``)."""

from __future__ import annotations

from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.backup.drive.model import drive_search_fields
from safekeep.backup.services.base import ContentReader
from safekeep.tenants.models import ItemVersion


async def search_fields(
    version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
) -> SearchFields | None:
    return await drive_search_fields(
        version.kind,
        version.name,
        version.size,
        version.modified_at,
        version.meta,
        content,
        tenant_id=str(version.tenant_id),
        content_hash=version.content_hash,
    )
