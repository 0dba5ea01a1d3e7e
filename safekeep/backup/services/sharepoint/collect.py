"""Backing up a site: its libraries and lists are listed and recorded first (the tops of its
catalog tree, ended with everything below them when they leave the site), then each library
is collected by delta as a drive and each list by its own delta."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safekeep.backup.catalog import ItemRecord, SearchFields
from safekeep.backup.collect import CollectContext
from safekeep.backup.drive.collect import DriveCollector, DriveSource, FolderTree, q
from safekeep.backup.drive.model import FOLDER, parse_time
from safekeep.backup.services.sharepoint.lists import (
    LIST,
    SKIPPED_TEMPLATES,
    ListCollector,
    list_external_id,
    list_meta,
    schema_key,
    template_of,
)
from safekeep.backup.services.sharepoint.search import (
    LIBRARY,
    LIBRARY_CHANGE_KEY,
    library_external_id,
)
from safekeep.graph.client import BatchRequest, BatchResponse, GraphClient
from safekeep.graph.transport import json_bytes
from safekeep.tenants.models import ItemVersion

Json = dict[str, Any]
LIST_FIELDS = (
    "id,name,displayName,description,webUrl,list,eTag,createdDateTime,lastModifiedDateTime"
)


async def all_pages(graph: GraphClient, path: str, params: dict[str, Any], site: str) -> list[Json]:
    out: list[Json] = []
    async for page in graph.paginate(path, params=params, mailbox=site):
        out.extend(page)
    return out


def _doc(value: Any) -> bytes:
    return json_bytes(value, sort_keys=True)


def _known_root(previous: ItemVersion | None) -> bool:
    return previous is not None and bool((previous.meta or {}).get("root_id"))


def _list_name(lst: Json) -> str:
    return str(lst.get("displayName") or lst.get("name") or lst["id"])


@dataclass
class SiteListing:
    """The site's libraries and lists now, with what the catalog holds of them."""

    drives: list[Json]
    lists: list[Json]
    tops: list[str]  # as listed (a list deleted before its schema was read is still here)
    current: dict[str, ItemVersion]
    answers: dict[str, BatchResponse] = field(default_factory=dict)
    stale: list[tuple[int, Json]] = field(default_factory=list)  # lists whose schema changed

    def root_of(self, n: int) -> str:
        """The library's root item id: asked for the first time, else as recorded."""
        answer = self.answers.get(f"root{n}")
        if answer is not None:
            return str((answer.body or {})["id"])
        previous = self.current[library_external_id(str(self.drives[n]["id"]))]
        return str((previous.meta or {})["root_id"])


async def list_site(ctx: CollectContext, site: str) -> SiteListing:
    """Libraries and lists, then one ``$batch`` for every library's root and the schema of
    every list that changed (a list deleted in between is left for the next run)."""
    graph = ctx.graph
    fields = {"$select": "id,name,webUrl,description"}
    drives = await all_pages(graph, f"/sites/{q(site)}/drives", fields, site)
    lists = [
        lst
        for lst in await all_pages(graph, f"/sites/{q(site)}/lists", {"$select": LIST_FIELDS}, site)
        if template_of(lst) not in SKIPPED_TEMPLATES
    ]
    tops = [library_external_id(str(d["id"])) for d in drives]
    tops += [list_external_id(str(lst["id"])) for lst in lists]
    listing = SiteListing(drives, lists, tops, await ctx.run.current(tops))
    # A library's root item is asked for once and kept in its record (a library's drive
    # cannot get another root: deleted, it leaves the listing with its tree).
    requests = [
        BatchRequest(id=f"root{n}", method="GET", url=f"/drives/{q(str(d['id']))}/root?$select=id")
        for n, d in enumerate(drives)
        if not _known_root(listing.current.get(library_external_id(str(d["id"]))))
    ]
    for n, lst in enumerate(lists):
        previous = listing.current.get(list_external_id(str(lst["id"])))
        if previous is None or (previous.meta or {}).get("etag") != lst.get("eTag"):
            listing.stale.append((n, lst))
            base = f"/sites/{q(site)}/lists/{q(str(lst['id']))}"
            requests.append(BatchRequest(id=f"cols{n}", method="GET", url=f"{base}/columns"))
            requests.append(BatchRequest(id=f"ctypes{n}", method="GET", url=f"{base}/contentTypes"))
    if requests:
        listing.answers = {a.id: a for a in await graph.batch(requests, mailbox=site)}
    for n, _drive in enumerate(drives):
        if f"root{n}" in listing.answers:
            listing.answers[f"root{n}"].raise_for_error()
    gone_now: set[int] = set()
    for n, _lst in listing.stale:
        for part in (f"cols{n}", f"ctypes{n}"):
            if listing.answers[part].status == 404:  # deleted since the listing: gone next run
                gone_now.add(n)
            else:
                listing.answers[part].raise_for_error()
    listing.stale = [(n, lst) for n, lst in listing.stale if n not in gone_now]
    listing.lists = [lst for n, lst in enumerate(lists) if n not in gone_now]
    return listing


async def top_records(
    ctx: CollectContext, listing: SiteListing, tree: FolderTree
) -> list[ItemRecord]:
    """A record for each library renamed or new, and each list whose schema changed."""
    records: list[ItemRecord] = []
    for n, drive in enumerate(listing.drives):
        ext = library_external_id(str(drive["id"]))
        name = str(drive.get("name") or "Documents")
        tree.set(ext, name, None)
        previous = listing.current.get(ext)
        if previous is not None and previous.name == name and _known_root(previous):
            continue
        meta = {
            "drive_id": drive["id"],
            "root_id": listing.root_of(n),
            "web_url": drive.get("webUrl"),
            "description": drive.get("description"),
            "path": "/" + name,
        }
        records.append(
            ItemRecord(
                external_id=ext,
                kind=LIBRARY,
                name=name,
                change_key=LIBRARY_CHANGE_KEY,
                document=await ctx.repo.put_bytes(_doc(drive)),
                meta=meta,
                search=SearchFields(title=name),
            )
        )
    for n, lst in listing.stale:
        record = await _list_record(ctx, listing, n, lst)
        if record is not None:
            records.append(record)
    for lst in listing.lists:
        tree.set(list_external_id(str(lst["id"])), str(lst.get("displayName") or ""), None)
    return records


async def _list_record(
    ctx: CollectContext, listing: SiteListing, n: int, lst: Json
) -> ItemRecord | None:
    ext = list_external_id(str(lst["id"]))
    name = _list_name(lst)
    columns = list((listing.answers[f"cols{n}"].body or {}).get("value") or [])
    content_types = list((listing.answers[f"ctypes{n}"].body or {}).get("value") or [])
    key = schema_key(lst, columns, content_types)
    previous = listing.current.get(ext)
    if previous is not None and previous.change_key == key and previous.name == name:
        return None
    document = {"list": lst, "columns": columns, "contentTypes": content_types}
    return ItemRecord(
        external_id=ext,
        kind=LIST,
        name=name,
        modified_at=parse_time(lst.get("lastModifiedDateTime")),
        change_key=key,
        document=await ctx.repo.put_bytes(_doc(document)),
        meta=list_meta(lst) | {"path": "/" + name},
        search=SearchFields(title=name),
    )


async def save_tops(
    ctx: CollectContext, listing: SiteListing, tree: FolderTree, records: list[ItemRecord]
) -> None:
    """Record the tops in one page; a library or list gone from the site ends its tree."""
    tops = set(listing.tops)
    vanished = [
        ext for ext in tree.entries if ext.startswith(("library:", "list:")) and ext not in tops
    ]
    async with ctx.run.page() as cat:
        await cat.preload([r.external_id for r in records] + vanished)
        for record in records:
            await cat.record(record)
        for ext in vanished:
            await cat.remove_subtree(ext)
            await cat.remove(ext)
            collection = ext.split(":", 1)[1] if ext.startswith("library:") else ext
            await cat.drop_delta(collection)
            await cat.drop_delta(collection + "#resync")
            tree.drop(ext)
    await ctx.progress()


async def collect(ctx: CollectContext) -> None:
    site = ctx.account.graph_id
    listing = await list_site(ctx, site)
    tree = await FolderTree.load(ctx, [FOLDER, LIBRARY, LIST])
    await save_tops(ctx, listing, tree, await top_records(ctx, listing, tree))
    states = await ctx.run.delta_links()
    retries = await ctx.retries()
    for n, drive in enumerate(listing.drives):
        drive_id = str(drive["id"])
        source = DriveSource(
            drive_id=drive_id,
            root_id=listing.root_of(n),
            top=library_external_id(drive_id),
            throttle_key=site,
        )
        collector = DriveCollector(ctx, source, tree)
        await collector.retry_skipped([r.external_id for r in retries if r.collection == drive_id])
        await collector.run(states)
    for lst in listing.lists:
        await ListCollector(ctx, site, str(lst["id"]), _list_name(lst)).run(states)
