"""Restoring a site: files into the target site's library of the same name (re-created if
Graph allows, else into the site's default library under a folder of that name), as OneDrive
does; list items into the list of the same name (``lists.ListWriter``). In place, files
present now that were not at the restore point are reported (``observe_strays``)."""

from __future__ import annotations

import asyncio
from typing import Any

from safekeep.backup.drive.collect import q
from safekeep.backup.drive.model import FILE
from safekeep.backup.drive.restore import (
    DriveTarget,
    DriveWriter,
    Expected,
    RestoreFailed,
    folders_in_scope,
    made_once,
    make_folder,
    observe_strays,
    run_bounded,
)
from safekeep.backup.restore.failures import retries_the_job
from safekeep.backup.services.base import RestoreContext, Selection
from safekeep.backup.services.sharepoint.collect import all_pages
from safekeep.backup.services.sharepoint.lists import LIST_ITEM, ListWriter
from safekeep.backup.services.sharepoint.search import LIBRARY
from safekeep.graph.errors import AuthError, GraphError
from safekeep.tenants.models import ItemVersion

RESTORE_CONCURRENCY = 4

Json = dict[str, Any]


def top_of(selection: Selection, parent: str | None) -> str | None:
    """The library or list a version belongs to (the top of its folder chain)."""
    seen: set[str] = set()
    current = parent
    while current is not None and current not in seen:
        seen.add(current)
        folder = selection.folders.get(current)
        if folder is None or folder.parent_external_id is None:
            return current
        current = folder.parent_external_id
    return None


class LibraryWriters:
    """One DriveWriter per library of the target site, found by name on first use."""

    def __init__(self, ctx: RestoreContext) -> None:
        self.ctx = ctx
        self.site_id = ctx.target.graph_id
        self._drives: dict[str, Json] | None = None
        self._writers: dict[str, tuple[DriveWriter, list[str]] | RestoreFailed] = {}
        self._lock = asyncio.Lock()

    async def get(self, library: ItemVersion) -> tuple[DriveWriter, list[str]]:
        """The writer for ``library`` and the folders every path below it starts with."""
        return await made_once(
            self._lock, self._writers, library.name.casefold(), lambda: self._open(library)
        )

    async def _open(self, library: ItemVersion) -> tuple[DriveWriter, list[str]]:
        graph, site = self.ctx.graph, self.site_id
        if self._drives is None:
            drives = await all_pages(
                graph, f"/sites/{q(site)}/drives", {"$select": "id,name,driveType"}, site
            )
            self._drives = {str(d.get("name") or "").casefold(): d for d in drives}
        prefix: list[str] = []
        drive = self._drives.get(library.name.casefold())
        try:
            if drive is None:
                drive = await self._create(library.name)
        except AuthError:
            raise
        except GraphError as exc:
            if retries_the_job(exc):  # Graph unavailable: not a reason to write elsewhere
                raise
            # The library cannot be re-created here: use the site's default library, under a
            # folder named after the one that is gone.
            drive = await graph.get_json(
                f"/sites/{q(site)}/drive", params={"$select": "id,name,driveType"}, mailbox=site
            )
            prefix = [library.name]
        drive_id = str(drive["id"])
        root = await graph.get_json(
            f"/drives/{q(drive_id)}/root", params={"$select": "id"}, mailbox=site
        )
        target = DriveTarget(
            drive_id=drive_id,
            root_id=str(root["id"]),
            throttle_key=site,
            # A library rewrites the Office files it receives; a personal site's drive does not.
            library=drive.get("driveType") == "documentLibrary",
        )
        return DriveWriter(self.ctx, target), prefix

    async def _create(self, name: str) -> Json:
        site = self.site_id
        created = await self.ctx.graph.request_json(
            "POST",
            f"/sites/{q(site)}/lists",
            json={"displayName": name, "list": {"template": "documentLibrary"}},
            mailbox=site,
            expected=(200, 201),
        )
        list_id = str((created or {}).get("id"))
        return await self.ctx.graph.get_json(
            f"/sites/{q(site)}/lists/{q(list_id)}/drive",
            params={"$select": "id,name,driveType"},
            mailbox=site,
        )


async def restore(ctx: RestoreContext, selection: Selection) -> None:
    libraries = LibraryWriters(ctx)
    lists = ListWriter(ctx, selection.folders)
    new_top = [ctx.new_folder_name] if ctx.folder_mode == "new" else []
    expected: dict[str, Expected] = {}

    def below_library(parent: str | None) -> list[str]:
        return selection.path_of(parent)[1:]

    # Folders in scope first, so that empty ones come back too.
    if selection.whole or selection.roots:
        for folder_ext, names in folders_in_scope(selection):
            if len(names) < 2:
                continue
            top = top_of(selection, folder_ext)
            library = selection.folders.get(top or "")
            if library is None or library.kind != LIBRARY:
                continue
            try:
                writer, prefix = await libraries.get(library)
            except (GraphError, RestoreFailed) as exc:
                if retries_the_job(exc):
                    raise
                continue  # the library could not be made: each of its files says so
            folder = selection.folders[folder_ext]
            await make_folder(ctx, writer, folder, [*prefix, *new_top, *names[1:]])

    async def work(version: ItemVersion) -> None:
        top = top_of(selection, version.parent_external_id)
        if version.kind == LIST_ITEM:
            await lists.put(version)
            return
        library = selection.folders.get(top or "")
        if version.kind != FILE:
            return
        if library is None or library.kind != LIBRARY:
            await ctx.report.failed(
                version, code="no_library", detail="its library is not in the restore point"
            )
            return
        try:
            writer, prefix = await libraries.get(library)
        except RestoreFailed as exc:
            await ctx.report.failed(version, code=exc.code, detail=exc.detail)
            return
        except AuthError:
            raise
        except GraphError as exc:
            if retries_the_job(exc):
                raise
            await ctx.report.failed(version, code="library_missing", detail=str(exc))
            return
        names = below_library(version.parent_external_id)
        expected.setdefault(library.name, Expected()).add([*names, version.name], version)
        await writer.put(version, [*prefix, *new_top, *names])

    await run_bounded(asyncio.Semaphore(RESTORE_CONCURRENCY), selection.items(), work)

    in_place = ctx.folder_mode == "original" and ctx.target.id == ctx.source.id
    if not (in_place and (selection.whole or selection.roots)):
        return
    for top, library in selection.folders.items():
        if library.kind != LIBRARY or library.name not in expected:
            continue
        under: list[list[str]] | None = None
        if not selection.whole:
            roots = [r for r in selection.roots or () if top_of(selection, r) == top]
            if not roots:
                continue
            if top not in roots:
                under = [selection.path_of(r)[1:] for r in roots]
        writer, prefix = await libraries.get(library)
        if prefix:
            continue  # written into another library: nothing there to compare with
        await observe_strays(
            ctx, writer.target, expected[library.name], under=under, shown_prefix=[library.name]
        )
