"""A site item's original form: a library file's bytes (as OneDrive's), a list item's stored
fields as JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator

from safekeep.backup.drive.model import content_of
from safekeep.backup.services.base import Content, read_document
from safekeep.backup.services.sharepoint.lists import LIST_ITEM
from safekeep.errors import NotFound
from safekeep.graph.transport import json_bytes
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion


async def content(repo: TenantRepository, version: ItemVersion) -> Content:
    if version.kind != LIST_ITEM:
        return content_of(repo, version)
    if not version.document:
        raise NotFound("This list item has no stored fields")

    async def render(start: int, end_inclusive: int | None) -> AsyncIterator[bytes]:
        document = await read_document(repo, version) or {}
        yield json_bytes(document, indent=1)

    return Content(
        media_type="application/json",
        filename=f"{version.name}.json",
        size=None,
        etag=str(version.id),
        rangeable=False,
        open=render,
    )
