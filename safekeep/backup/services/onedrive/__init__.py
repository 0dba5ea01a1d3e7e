"""OneDrive for Business: a user's drive, every file and folder, by delta.

Catalog: ``drive_folder`` and ``file`` items (see ``drive.model`` for ``meta``); the drive's
root children sit at the top (parent None). Collection (delta state key) = the drive id.
Restore writes into the target user's drive by path (``drive.restore``); export gives the
files in their tree.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.backup.collect import CollectContext
from safekeep.backup.drive.collect import DriveCollector, DriveSource, FolderTree, q
from safekeep.backup.drive.export import export_files
from safekeep.backup.drive.model import FILE, FOLDER, content_of, drive_search_fields
from safekeep.backup.drive.restore import (
    DriveTarget,
    DriveWriter,
    Expected,
    RestoreFailed,
    folders_in_scope,
    observe_strays,
    run_bounded,
)
from safekeep.backup.services.base import (
    Content,
    ContentReader,
    ExportContext,
    ExportEntry,
    RestoreContext,
    Selection,
)
from safekeep.graph.client import GraphClient
from safekeep.graph.errors import GraphError
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion


async def user_drive(graph: GraphClient, user_id: str) -> tuple[str, str]:
    """The user's drive id and root item id, in one request (the root names its drive)."""
    root = await graph.get_json(
        f"/users/{q(user_id)}/drive/root",
        params={"$select": "id,parentReference"},
        mailbox=user_id,
    )
    return str(root["parentReference"]["driveId"]), str(root["id"])


async def restore_drive(
    ctx: RestoreContext,
    selection: Selection,
    writer: DriveWriter,
    versions: AsyncIterator[ItemVersion],
    *,
    folder_names: Any,
    top: Sequence[str],
) -> Expected:
    """Restore ``versions`` (files) through ``writer``; folders in scope are created first so
    that empty ones come back too. ``folder_names(version)`` is where each goes below
    ``top``. Returns what the restore point held (for ``observe_strays``)."""
    expected = Expected()
    for _external_id, names in folders_in_scope(selection):
        with contextlib.suppress(GraphError, RestoreFailed):  # its files report it each
            await writer.folder([*top, *names])

    async def work(version: ItemVersion) -> None:
        if version.kind != FILE:
            return
        names = folder_names(version)
        expected.add([*names, version.name], (version.meta or {}).get("id"))
        await writer.put(version, [*top, *names])

    await run_bounded(writer.slots, versions, work)
    return expected


class OneDriveService:
    name = "onedrive"
    folder_kinds = frozenset({FOLDER})

    async def collect(self, ctx: CollectContext) -> None:
        user_id = ctx.account.graph_id
        drive_id, root_id = await user_drive(ctx.graph, user_id)
        source = DriveSource(drive_id=drive_id, root_id=root_id, top=None, throttle_key=user_id)
        collector = DriveCollector(ctx, source, await FolderTree.load(ctx, [FOLDER]))
        retries = [r.external_id for r in await ctx.retries() if r.collection == drive_id]
        await collector.retry_skipped(retries)
        await collector.run(await ctx.run.delta_links())

    async def search_fields(
        self, version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
    ) -> SearchFields | None:
        return await drive_search_fields(
            version.kind, version.name, version.size, version.modified_at, version.meta, content
        )

    async def content(self, repo: TenantRepository, version: ItemVersion) -> Content:
        return content_of(repo, version)

    async def restore(self, ctx: RestoreContext, selection: Selection) -> None:
        user_id = ctx.target.graph_id
        drive_id, root_id = await user_drive(ctx.graph, user_id)
        target = DriveTarget(drive_id=drive_id, root_id=root_id, throttle_key=user_id)
        writer = DriveWriter(ctx, target)
        top = [ctx.new_folder_name] if ctx.folder_mode == "new" else []
        expected = await restore_drive(
            ctx,
            selection,
            writer,
            selection.items(),
            folder_names=lambda v: selection.path_of(v.parent_external_id),
            top=top,
        )
        in_place = ctx.folder_mode == "original" and ctx.target.id == ctx.source.id
        if in_place and (selection.whole or selection.roots):
            under = (
                None if selection.whole else [selection.path_of(r) for r in selection.roots or ()]
            )
            await observe_strays(ctx, target, expected, under=under)

    def export(self, ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
        return export_files(ctx.repo, selection)


SERVICE = OneDriveService()
