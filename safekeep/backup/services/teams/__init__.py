"""Microsoft Teams (safekeep/registry.py's ``teams``): a protected user's teams (those it is
the first owner of) and chats. ``backup`` collects into the catalog, ``restore`` brings
channels back through the import API and exports transcripts, ``transcript`` renders them,
``collect`` reads teams from Graph (delta plus a re-read window for replies)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.backup.collect import CollectContext
from safekeep.backup.services.base import (
    Content,
    ContentReader,
    ExportContext,
    ExportEntry,
    RestoreContext,
    Selection,
    read_document,
    rendered_content,
)
from safekeep.backup.services.teams import backup, restore
from safekeep.backup.services.teams.fields import message_fields
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion


class TeamsService:
    name = "teams"
    folder_kinds: frozenset[str] = frozenset({"team", "channel", "chat", "thread"})

    async def collect(self, ctx: CollectContext) -> None:
        await backup.collect(ctx)

    async def search_fields(
        self, version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
    ) -> SearchFields | None:
        if not document or "message" not in document:
            return None
        return message_fields(document)

    async def content(self, repo: TenantRepository, version: ItemVersion) -> Content:
        async def render() -> AsyncIterator[bytes]:
            yield json.dumps(await read_document(repo, version), ensure_ascii=False).encode()

        return rendered_content(
            version,
            media_type="application/json",
            filename=f"{version.kind}.json",
            suffix="json",
            render=render,
        )

    async def restore(self, ctx: RestoreContext, selection: Selection) -> None:
        await restore.restore(ctx, selection)

    def export(self, ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
        return restore.export(ctx, selection)


SERVICE = TeamsService()
