"""SharePoint sites: every document library (as a drive, like OneDrive) and every list.

Catalog tree of one site account: a ``library`` item per document library
(``library:<drive id>``, top level; ``meta``: ``drive_id``, ``web_url``, ``description``;
``document``: the drive's Graph JSON) with its ``drive_folder``/``file`` items below it
(see ``drive.model``), and a ``list`` item per list with its ``list_item`` items below it
(see ``sharepoint.lists``). Delta collections: each library's drive id and ``list:<id>``.

Restore: files go into the target site's library of the same name (re-created if Graph
allows, else into the site's default library under a folder of that name), as OneDrive
does; list items into the list of the same name (re-created from the stored columns when
missing). In place (same site, original folders) an item that still exists is found by its
id and the conflict rule applies; otherwise items are added. With ``folder_mode="new"``
files go under a "Restored ..." folder of their library; list items are added to their list.
Export: library files in their tree, each list as ``<list>.json`` and ``<list>.csv``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from safekeep.backup.catalog import ItemRecord, SearchFields
from safekeep.backup.collect import CollectContext
from safekeep.backup.drive.collect import DriveCollector, DriveSource, FolderTree, q
from safekeep.backup.drive.export import export_files
from safekeep.backup.drive.model import (
    FILE,
    FOLDER,
    content_of,
    drive_search_fields,
    parse_time,
)
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
    read_document,
)
from safekeep.backup.services.sharepoint.lists import (
    LIST,
    LIST_ITEM,
    SKIPPED_TEMPLATES,
    ListCollector,
    ListWriter,
    list_exports,
    list_external_id,
    list_item_search_fields,
    list_meta,
    schema_key,
    template_of,
)
from safekeep.errors import NotFound
from safekeep.graph.client import BatchRequest, GraphClient
from safekeep.graph.errors import AuthError, GraphError
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion

LIBRARY = "library"
LIBRARY_CHANGE_KEY = "library"  # a library's version changes with its name only
RESTORE_CONCURRENCY = 4

Json = dict[str, Any]


def library_external_id(drive_id: str) -> str:
    return f"library:{drive_id}"


async def _all(graph: GraphClient, path: str, params: dict[str, Any], site: str) -> list[Json]:
    out: list[Json] = []
    async for page in graph.paginate(path, params=params, mailbox=site):
        out.extend(page)
    return out


def _doc(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True).encode()


async def collect_site(ctx: CollectContext) -> None:
    site = ctx.account.graph_id
    graph = ctx.graph
    drives = await _all(
        graph, f"/sites/{q(site)}/drives", {"$select": "id,name,webUrl,description"}, site
    )
    lists = [
        lst
        for lst in await _all(
            graph,
            f"/sites/{q(site)}/lists",
            {
                "$select": "id,name,displayName,description,webUrl,list,eTag,"
                "createdDateTime,lastModifiedDateTime"
            },
            site,
        )
        if template_of(lst) not in SKIPPED_TEMPLATES
    ]
    tree = await FolderTree.load(ctx, [FOLDER, LIBRARY, LIST])
    tops = {library_external_id(str(d["id"])): d for d in drives}
    tops |= {list_external_id(str(lst["id"])): lst for lst in lists}
    current = await ctx.run.current(list(tops))

    # One $batch for every library's root and the schema of every list that changed.
    requests = [
        BatchRequest(id=f"root{n}", method="GET", url=f"/drives/{q(str(d['id']))}/root?$select=id")
        for n, d in enumerate(drives)
    ]
    stale = []
    for n, lst in enumerate(lists):
        previous = current.get(list_external_id(str(lst["id"])))
        if previous is None or (previous.meta or {}).get("etag") != lst.get("eTag"):
            stale.append((n, lst))
            base = f"/sites/{q(site)}/lists/{q(str(lst['id']))}"
            requests.append(BatchRequest(id=f"cols{n}", method="GET", url=f"{base}/columns"))
            requests.append(BatchRequest(id=f"ctypes{n}", method="GET", url=f"{base}/contentTypes"))
    answers = {a.id: a for a in await graph.batch(requests, mailbox=site)} if requests else {}
    for n, _drive in enumerate(drives):
        answers[f"root{n}"].raise_for_error()
    gone_now: set[int] = set()
    for n, _lst in stale:
        for part in (f"cols{n}", f"ctypes{n}"):
            if answers[part].status == 404:  # deleted since the listing: gone next run
                gone_now.add(n)
            else:
                answers[part].raise_for_error()
    stale = [(n, lst) for n, lst in stale if n not in gone_now]
    lists = [lst for n, lst in enumerate(lists) if n not in gone_now]

    records: list[ItemRecord] = []
    for drive in drives:
        ext = library_external_id(str(drive["id"]))
        name = str(drive.get("name") or "Documents")
        tree.set(ext, name, None)
        previous = current.get(ext)
        if previous is not None and previous.name == name:
            continue
        records.append(
            ItemRecord(
                external_id=ext,
                kind=LIBRARY,
                name=name,
                change_key=LIBRARY_CHANGE_KEY,
                document=await ctx.repo.put_bytes(_doc(drive)),
                meta={
                    "drive_id": drive["id"],
                    "web_url": drive.get("webUrl"),
                    "description": drive.get("description"),
                    "path": "/" + name,
                },
                search=SearchFields(title=name),
            )
        )
    for n, lst in stale:
        ext = list_external_id(str(lst["id"]))
        name = str(lst.get("displayName") or lst.get("name") or lst["id"])
        columns = list((answers[f"cols{n}"].body or {}).get("value") or [])
        content_types = list((answers[f"ctypes{n}"].body or {}).get("value") or [])
        key = schema_key(lst, columns, content_types)
        previous = current.get(ext)
        if previous is not None and previous.change_key == key and previous.name == name:
            continue
        document = {"list": lst, "columns": columns, "contentTypes": content_types}
        records.append(
            ItemRecord(
                external_id=ext,
                kind=LIST,
                name=name,
                modified_at=parse_time(lst.get("lastModifiedDateTime")),
                change_key=key,
                document=await ctx.repo.put_bytes(_doc(document)),
                meta=list_meta(lst) | {"path": "/" + name},
                search=SearchFields(title=name),
            )
        )
    for lst in lists:
        tree.set(list_external_id(str(lst["id"])), str(lst.get("displayName") or ""), None)
    vanished = [
        ext for ext in tree.entries if ext.startswith(("library:", "list:")) and ext not in tops
    ]
    async with ctx.run.page() as cat:
        await cat.preload([r.external_id for r in records] + vanished)
        for record in records:
            await cat.record(record)
        for ext in vanished:  # a library or list deleted from the site: end its tree
            await cat.remove_subtree(ext)
            await cat.remove(ext)
            collection = ext.split(":", 1)[1] if ext.startswith("library:") else ext
            await cat.drop_delta(collection)
            await cat.drop_delta(collection + "#resync")
            tree.drop(ext)
    await ctx.progress()

    states = await ctx.run.delta_links()
    retries = await ctx.retries()
    for n, drive in enumerate(drives):
        drive_id = str(drive["id"])
        source = DriveSource(
            drive_id=drive_id,
            root_id=str((answers[f"root{n}"].body or {})["id"]),
            top=library_external_id(drive_id),
            throttle_key=site,
        )
        collector = DriveCollector(ctx, source, tree)
        await collector.retry_skipped([r.external_id for r in retries if r.collection == drive_id])
        await collector.run(states)
    for lst in lists:
        name = str(lst.get("displayName") or lst.get("name") or lst["id"])
        await ListCollector(ctx, site, str(lst["id"]), name).run(states)


# ---- restore -------------------------------------------------------------------------------


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
        async with self._lock:
            key = library.name.casefold()
            found = self._writers.get(key)
            if found is None:
                try:
                    found = await self._open(library)
                except RestoreFailed as exc:
                    found = exc
                self._writers[key] = found
        if isinstance(found, RestoreFailed):
            raise found
        return found

    async def _open(self, library: ItemVersion) -> tuple[DriveWriter, list[str]]:
        graph, site = self.ctx.graph, self.site_id
        if self._drives is None:
            drives = await _all(graph, f"/sites/{q(site)}/drives", {"$select": "id,name"}, site)
            self._drives = {str(d.get("name") or "").casefold(): d for d in drives}
        prefix: list[str] = []
        drive = self._drives.get(library.name.casefold())
        try:
            if drive is None:
                drive = await self._create(library.name)
        except AuthError:
            raise
        except GraphError:
            # The library cannot be re-created here: use the site's default library, under a
            # folder named after the one that is gone.
            drive = await graph.get_json(
                f"/sites/{q(site)}/drive", params={"$select": "id,name"}, mailbox=site
            )
            prefix = [library.name]
        drive_id = str(drive["id"])
        root = await graph.get_json(
            f"/drives/{q(drive_id)}/root", params={"$select": "id"}, mailbox=site
        )
        target = DriveTarget(drive_id=drive_id, root_id=str(root["id"]), throttle_key=site)
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
            params={"$select": "id,name"},
            mailbox=site,
        )


async def restore_site(ctx: RestoreContext, selection: Selection) -> None:
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
            with contextlib.suppress(GraphError, RestoreFailed):
                writer, prefix = await libraries.get(library)
                await writer.folder([*prefix, *new_top, *names[1:]])

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
            await ctx.report.failed(version, code="library_missing", detail=str(exc))
            return
        names = below_library(version.parent_external_id)
        expected.setdefault(library.name, Expected()).add(
            [*names, version.name], (version.meta or {}).get("id")
        )
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


# ---- export --------------------------------------------------------------------------------


async def export_site(repo: TenantRepository, selection: Selection) -> AsyncIterator[ExportEntry]:
    lists: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    def keep(version: ItemVersion) -> None:
        if version.kind == LIST_ITEM and version.document and version.parent_external_id:
            lists.setdefault(version.parent_external_id, []).append(
                (version.name, version.document)
            )

    async for entry in export_files(repo, selection, also=keep):
        yield entry
    for list_ext, items in lists.items():
        list_version = selection.folders.get(list_ext)
        name = list_version.name if list_version is not None else list_ext
        for entry in list_exports(repo, list_version, name, items):
            yield entry


# ---- the service ---------------------------------------------------------------------------


class SharePointService:
    name = "sharepoint"
    folder_kinds = frozenset({LIBRARY, FOLDER, LIST})

    async def collect(self, ctx: CollectContext) -> None:
        await collect_site(ctx)

    async def search_fields(
        self, version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
    ) -> SearchFields | None:
        meta = version.meta or {}
        if version.kind in (FILE, FOLDER):
            return await drive_search_fields(
                version.kind, version.name, version.size, version.modified_at, meta, content
            )
        if version.kind == LIST_ITEM:
            return list_item_search_fields(version.name, version.modified_at, meta, document)
        return SearchFields(title=version.name)

    async def content(self, repo: TenantRepository, version: ItemVersion) -> Content:
        if version.kind != LIST_ITEM:
            return content_of(repo, version)
        if not version.document:
            raise NotFound("This list item has no stored fields")

        async def render(start: int, end_inclusive: int | None) -> AsyncIterator[bytes]:
            document = await read_document(repo, version) or {}
            yield json.dumps(document, ensure_ascii=False, indent=1).encode()

        return Content(
            media_type="application/json",
            filename=f"{version.name}.json",
            size=None,
            etag=str(version.id),
            rangeable=False,
            open=render,
        )

    async def restore(self, ctx: RestoreContext, selection: Selection) -> None:
        await restore_site(ctx, selection)

    def export(self, ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
        return export_site(ctx.repo, selection)


SERVICE = SharePointService()
