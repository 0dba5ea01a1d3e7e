"""A site as files: library files in their tree, each list as ``<list>.json`` and
``<list>.csv``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from safekeep.backup.drive.export import export_files
from safekeep.backup.services.base import ExportContext, ExportEntry, Selection
from safekeep.backup.services.sharepoint.lists import LIST_ITEM, list_exports
from safekeep.tenants.models import ItemVersion


async def export(ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
    lists: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    def keep(version: ItemVersion) -> None:
        if version.kind == LIST_ITEM and version.document and version.parent_external_id:
            lists.setdefault(version.parent_external_id, []).append(
                (version.name, version.document)
            )

    async for entry in export_files(ctx.repo, selection, also=keep):
        yield entry
    for list_ext, items in lists.items():
        list_version = selection.folders.get(list_ext)
        name = list_version.name if list_version is not None else list_ext
        for entry in list_exports(ctx.repo, list_version, name, items):
            yield entry
