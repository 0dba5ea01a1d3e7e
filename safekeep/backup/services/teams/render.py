"""What browse and download hand out for a Teams item: its stored document as JSON (a
message with its author, times, body, mentions, reactions and the blobs of its images; a
team, channel or chat with its settings, members and tabs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from safekeep.backup.services.base import Content, read_document, rendered_content
from safekeep.graph.transport import json_bytes
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion


async def content(repo: TenantRepository, version: ItemVersion) -> Content:
    async def render() -> AsyncIterator[bytes]:
        yield json_bytes(await read_document(repo, version))

    return rendered_content(
        version,
        media_type="application/json",
        filename=f"{version.kind}.json",
        suffix="json",
        render=render,
    )
