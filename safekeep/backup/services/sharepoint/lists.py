"""SharePoint lists (not document libraries): items with their fields, by list-item delta;
restored through ``POST /lists/{id}/items``; exported as JSON and CSV.

Catalog: a ``list`` item per list (``list:<list id>``, top level; ``document`` = the list's
Graph JSON with its ``columns`` and ``contentTypes``, the schema a restore re-creates a
missing list from; change key = a hash of that schema, so a version means a schema or name
change, not an item change) and a ``list_item`` per item (``list:<list id>:<item id>``,
under its list; ``document`` = the item's Graph JSON with ``fields``; no ``content``).

``meta`` of a list: ``id``, ``name``, ``template``, ``web_url``, ``etag`` (the list's eTag
when its schema was last read). Of a list item: ``list_id``, ``item_id``, ``path``,
``content_type``, ``created_at``, ``modified_at``, ``created_by``, ``modified_by``,
``web_url``.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from safekeep.backup.catalog import CatalogPage, ItemRecord, SearchFields
from safekeep.backup.collect import CollectContext
from safekeep.backup.drive.delta import DeltaSpec, Json, run_delta
from safekeep.backup.drive.model import parse_time, who
from safekeep.backup.drive.restore import RestoreFailed, made_once
from safekeep.backup.pipeline import gather_bounded
from safekeep.backup.restore.failures import retries_the_job
from safekeep.backup.services.base import ExportEntry, RestoreContext, read_document
from safekeep.graph.errors import AuthError, GraphError
from safekeep.graph.transport import json_bytes
from safekeep.settings import settings
from safekeep.storage.repository import ContentRef, TenantRepository
from safekeep.tenants.models import DeltaState, ItemVersion
from safekeep.text import storable_text

LIST = "list"
LIST_ITEM = "list_item"
DELTA_PAGE_SIZE = 500
STORE_CONCURRENCY = 8  # small JSON blobs written in parallel per page
# Lists that are not user content (GRAPH.md §6); document libraries are backed up as drives.
SKIPPED_TEMPLATES = frozenset(
    {"documentLibrary", "webTemplateExtensionsList", "sharingLinks", "accessRequest"}
)
# Fields SharePoint computes or owns: never written back, never searched.
SYSTEM_FIELDS = frozenset(
    {
        "id",
        "ID",
        "ContentType",
        "ContentTypeId",
        "Modified",
        "Created",
        "Author",
        "Editor",
        "AuthorLookupId",
        "EditorLookupId",
        "AppAuthorLookupId",
        "AppEditorLookupId",
        "_UIVersionString",
        "_UIVersion",
        "Attachments",
        "Edit",
        "LinkTitle",
        "LinkTitleNoMenu",
        "LinkFilename",
        "LinkFilenameNoMenu",
        "DocIcon",
        "ItemChildCount",
        "FolderChildCount",
        "FileLeafRef",
        "FileRef",
        "FileDirRef",
        "FSObjType",
        "GUID",
        "UniqueId",
        "owshiddenversion",
        "WorkflowVersion",
        "_ModerationStatus",
        "_ModerationComments",
        "_ComplianceFlags",
        "_ComplianceTag",
        "_ComplianceTagWrittenTime",
        "_ComplianceTagUserId",
        "_IsRecord",
        "SMTotalSize",
        "SMTotalFileCount",
        "SMLastModifiedDate",
        "SMTotalFileStreamSize",
    }
)
_COLUMN_KEEP = (
    "name",
    "displayName",
    "description",
    "required",
    "hidden",
    "indexed",
    "enforceUniqueValues",
    "columnGroup",
)
_COLUMN_TYPES = (
    "boolean",
    "calculated",
    "choice",
    "currency",
    "dateTime",
    "lookup",
    "number",
    "personOrGroup",
    "text",
    "hyperlinkOrPicture",
    "term",
    "thumbnail",
    "contentApprovalStatus",
    "geolocation",
)


def q(value: str) -> str:
    return quote(value, safe="")


def list_external_id(list_id: str) -> str:
    return f"list:{list_id}"


def item_external_id(list_id: str, item_id: str) -> str:
    return f"list:{list_id}:{item_id}"


def template_of(lst: Mapping[str, Any]) -> str:
    return str((lst.get("list") or {}).get("template") or "genericList")


def schema_key(lst: Mapping[str, Any], columns: list[Json], content_types: list[Json]) -> str:
    """What a list version is: its name and schema (not its items, not its eTag)."""
    schema = {
        "displayName": lst.get("displayName"),
        "name": lst.get("name"),
        "description": lst.get("description"),
        "template": template_of(lst),
        "columns": sorted(columns, key=lambda c: str(c.get("name"))),
        "contentTypes": sorted(content_types, key=lambda c: str(c.get("id"))),
    }
    raw = json_bytes(schema, sort_keys=True)
    return "schema:" + hashlib.sha256(raw).hexdigest()[:40]


def list_meta(lst: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": lst.get("id"),
        "name": lst.get("name"),
        "template": template_of(lst),
        "web_url": lst.get("webUrl"),
        "etag": lst.get("eTag"),
    }


def item_name(item: Mapping[str, Any]) -> str:
    fields = item.get("fields") or {}
    for key in ("Title", "LinkTitle", "FileLeafRef"):
        value = fields.get(key)
        if value:
            return str(value)
    return f"Item {item.get('id')}"


def field_text(fields: Mapping[str, Any], limit: int) -> str:
    """The user's field values as text, for the index."""
    parts: list[str] = []
    size = 0
    for key, value in fields.items():
        if key.startswith(("@", "_")) or key in SYSTEM_FIELDS or value in (None, "", [], {}):
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}: {text}")
        size += len(parts[-1]) + 1
        if size >= limit:
            break
    return "\n".join(parts)[:limit]


def list_item_search_fields(
    name: str,
    modified_at: datetime | None,
    meta: Mapping[str, Any],
    document: Mapping[str, Any] | None,
) -> SearchFields:
    """The one way a list item becomes searchable (collector and indexing retry alike)."""
    path = str(meta.get("path") or "/" + name)
    people = [p for p in (meta.get("created_by"), meta.get("modified_by")) if p]
    fields = (document or {}).get("fields") or {}
    return SearchFields(
        title=name,
        folder_path=path.rsplit("/", 1)[0] or "/",
        date=modified_at,
        people=list(dict.fromkeys(people)),
        body=field_text(fields, settings.search_body_max_chars),
    )


def writable_fields(fields: Mapping[str, Any], list_document: Mapping[str, Any]) -> Json:
    """The fields a create or update may send: the list's own writable columns, never what
    SharePoint computes (ids, dates, authors, versions, annotations)."""
    columns = list_document.get("columns") or []
    writable = {
        str(c.get("name"))
        for c in columns
        if not c.get("readOnly") and "calculated" not in c and c.get("name") not in SYSTEM_FIELDS
    }
    out: Json = {}
    for key, value in fields.items():
        if key.startswith("@") or key in SYSTEM_FIELDS:
            continue
        base = key[: -len("LookupId")] if key.endswith("LookupId") else key
        if columns and base not in writable:
            continue
        if not columns and key.startswith("_"):
            continue
        out[key] = value
    return out


def column_definitions(list_document: Mapping[str, Any]) -> list[Json]:
    """Columns to create a missing list with: the custom ones, as Graph accepts them."""
    out = []
    for column in list_document.get("columns") or []:
        name = column.get("name")
        if not name or name in SYSTEM_FIELDS or name == "Title" or column.get("readOnly"):
            continue
        definition = {k: column[k] for k in _COLUMN_KEEP if k in column}
        for facet in _COLUMN_TYPES:
            if facet in column:
                definition[facet] = column[facet]
        out.append(definition)
    return out


# ---- backup --------------------------------------------------------------------------------


class ListCollector:
    """One list's items by ``/items/delta?$expand=fields`` (the delta page has every field:
    nothing else is fetched per item)."""

    def __init__(self, ctx: CollectContext, site_id: str, list_id: str, list_name: str) -> None:
        self.ctx = ctx
        self.site_id = site_id
        self.list_id = list_id
        self.list_name = list_name
        self.parent = list_external_id(list_id)
        self._slots = asyncio.Semaphore(STORE_CONCURRENCY)

    def spec(self) -> DeltaSpec:
        return DeltaSpec(
            collection=self.parent,
            path=f"/sites/{q(self.site_id)}/lists/{q(self.list_id)}/items/delta",
            params={"$expand": "fields", "$top": DELTA_PAGE_SIZE},
            mailbox=self.site_id,
            # A Location link need not carry $expand=fields; the plain path with it does.
            follow_location=False,
        )

    async def run(self, states: dict[str, DeltaState]) -> None:
        await run_delta(self.ctx, self.spec(), self, states)

    async def prepare(
        self, items: list[Json], seen: set[str] | None
    ) -> Callable[[CatalogPage], Awaitable[None]]:
        ids = {item_external_id(self.list_id, str(i["id"])): i for i in items}
        current = await self.ctx.run.current(list(ids))
        gone = [ext for ext, i in ids.items() if "deleted" in i]
        work = []
        for ext, item in ids.items():
            if "deleted" in item:
                continue
            if seen is not None:
                seen.add(ext)
            previous = current.get(ext)
            if previous is not None and previous.change_key == item.get("eTag"):
                continue
            work.append((ext, item))

        async def one(ext: str, item: Json) -> ItemRecord:
            async with self._slots:
                return await self.record_for(ext, item)

        records: list[ItemRecord] = await gather_bounded(one(e, i) for e, i in work)

        async def apply(cat: CatalogPage) -> None:
            await cat.preload(list(ids))
            for record in records:
                await cat.record(record)
            for ext in gone:
                await cat.remove(ext)

        return apply

    async def record_for(self, ext: str, item: Json) -> ItemRecord:
        name = item_name(item)
        modified = parse_time(item.get("lastModifiedDateTime"))
        meta = {
            "list_id": self.list_id,
            "item_id": str(item["id"]),
            "path": f"/{self.list_name}/{name}",
            "content_type": (item.get("contentType") or {}).get("name"),
            "created_at": item.get("createdDateTime"),
            "modified_at": item.get("lastModifiedDateTime"),
            "created_by": who(item.get("createdBy")),
            "modified_by": who(item.get("lastModifiedBy")),
            "web_url": item.get("webUrl"),
        }
        raw = json_bytes(item, sort_keys=True)
        document = await self.ctx.repo.put_bytes(raw)
        return ItemRecord(
            external_id=ext,
            kind=LIST_ITEM,
            name=name,
            parent_external_id=self.parent,
            size=len(raw),
            modified_at=modified,
            change_key=item.get("eTag"),
            document=document,
            meta=meta,
            search=list_item_search_fields(name, modified, meta, item),
        )

    async def remove_unseen(self, cat: CatalogPage, seen: set[str]) -> None:
        await cat.remove_unseen([LIST_ITEM], seen, parent_external_id=self.parent)


# ---- restore -------------------------------------------------------------------------------


class ListWriter:
    """Writes list items into the target site's lists, found by name (or id in place) and
    re-created from the stored schema when missing."""

    def __init__(self, ctx: RestoreContext, folders: Mapping[str, ItemVersion]) -> None:
        self.ctx = ctx
        self.site_id = ctx.target.graph_id
        self.folders = folders
        self._lists: dict[str, Json] | None = None
        self._targets: dict[str, str | RestoreFailed] = {}
        self._documents: dict[str, Json] = {}
        self._columns: dict[str, set[str]] = {}  # target list id -> its column names
        self._contents: dict[str, TargetItems] = {}
        self._contents_lock = asyncio.Lock()
        self._lock = asyncio.Lock()

    @property
    def in_place(self) -> bool:
        return self.ctx.target.id == self.ctx.source.id and self.ctx.folder_mode == "original"

    async def document(self, list_ext: str) -> Json:
        found = self._documents.get(list_ext)
        if found is None:
            version = self.folders.get(list_ext)
            found = (await read_document(self.ctx.repo, version) if version else None) or {}
            self._documents[list_ext] = found
        return found

    async def _site_lists(self) -> dict[str, Json]:
        if self._lists is None:
            self._lists = {}
            async for page in self.ctx.graph.paginate(
                f"/sites/{q(self.site_id)}/lists",
                params={"$select": "id,name,displayName,list"},
                mailbox=self.site_id,
            ):
                for lst in page:
                    self._lists[str(lst["id"])] = lst
        return self._lists

    async def target_list(self, list_ext: str) -> str:
        return await made_once(self._lock, self._targets, list_ext, lambda: self._resolve(list_ext))

    async def _resolve(self, list_ext: str) -> str:
        source_id = list_ext.split(":", 1)[1]
        version = self.folders.get(list_ext)
        name = version.name if version is not None else source_id
        lists = await self._site_lists()
        if self.in_place and source_id in lists:
            return source_id
        for lst in lists.values():
            if str(lst.get("displayName") or "").casefold() == name.casefold():
                return str(lst["id"])
        document = await self.document(list_ext)
        template = template_of(document.get("list") or {})
        try:
            created = await self.ctx.graph.request_json(
                "POST",
                f"/sites/{q(self.site_id)}/lists",
                json={
                    "displayName": name,
                    "columns": column_definitions(document),
                    "list": {"template": template},
                },
                mailbox=self.site_id,
                expected=(200, 201),
            )
        except AuthError:
            raise
        except GraphError as exc:
            if retries_the_job(exc):
                raise
            raise RestoreFailed(
                "list_missing",
                f"The list {name!r} is not in the target site and could not be re-created "
                f"from its stored columns: {exc}",
            ) from exc
        assert created is not None
        lists[str(created["id"])] = created
        return str(created["id"])

    async def target_columns(self, list_id: str) -> set[str]:
        """Column names of a list in the target site (another list than the source)."""
        async with self._lock:
            found = self._columns.get(list_id)
            if found is None:
                found = set()
                async for page in self.ctx.graph.paginate(
                    f"/sites/{q(self.site_id)}/lists/{q(list_id)}/columns",
                    params={"$select": "name"},
                    mailbox=self.site_id,
                ):
                    found.update(str(c.get("name")) for c in page)
                self._columns[list_id] = found
        return found

    async def put(self, version: ItemVersion) -> None:
        """Restore one list item; report what happened (never raises for the item)."""
        try:
            outcome = await self._put(version)
        except RestoreFailed as exc:
            await self.ctx.report.failed(version, code=exc.code, detail=exc.detail)
            return
        except AuthError:
            raise
        except GraphError as exc:
            if retries_the_job(exc):  # Graph unavailable: the job is tried again
                raise
            await self.ctx.report.failed(version, code=exc.reason, detail=str(exc))
            return
        if outcome is not None:
            target_id, dropped = outcome
            note = f"fields the target list lacks: {', '.join(dropped)}" if dropped else None
            await self.ctx.report.restored(version, target_id=target_id, note=note)

    async def contents(self, list_id: str, list_ext: str) -> TargetItems:
        """What the target list holds now (read once per list and restore)."""
        schema = await self.document(list_ext)
        same_list = list_id == list_ext.split(":", 1)[1]
        known = None if same_list else await self.target_columns(list_id)
        async with self._contents_lock:  # one reading per list, shared by every task
            found = self._contents.get(list_id)
            if found is not None:
                return found
            found = TargetItems()
            async for page in self.ctx.graph.paginate(
                f"/sites/{q(self.site_id)}/lists/{q(list_id)}/items",
                params={"$expand": "fields", "$top": 1000},
                mailbox=self.site_id,
            ):
                for item in page:
                    fields = writable_fields(item.get("fields") or {}, schema)
                    if known is not None:
                        fields = {
                            k: v for k, v in fields.items() if k.removesuffix("LookupId") in known
                        }
                    found.add(str(item["id"]), fields)
            self._contents[list_id] = found
        return found

    async def _put(self, version: ItemVersion) -> tuple[str | None, list[str]] | None:
        list_ext = str(version.parent_external_id)
        list_id = await self.target_list(list_ext)
        same_list = list_id == list_ext.split(":", 1)[1]
        document = await read_document(self.ctx.repo, version) or {}
        fields = writable_fields(document.get("fields") or {}, await self.document(list_ext))
        dropped: list[str] = []
        if not same_list:  # another site's list of that name: send only what it has
            known = await self.target_columns(list_id)
            dropped = sorted(k for k in fields if k.removesuffix("LookupId") not in known)
            fields = {k: v for k, v in fields.items() if k not in dropped}
        base = f"/sites/{q(self.site_id)}/lists/{q(list_id)}/items"
        item_id = str((version.meta or {}).get("item_id") or "")
        target = await self.contents(list_id, list_ext)
        conflict = self.ctx.conflict
        if self.in_place and same_list and item_id in target.ids:
            if conflict != "keep_both" and target.holds(item_id, fields):
                await self.ctx.report.existing(version, target_id=item_id)
                return None
            if conflict == "skip":
                await self.ctx.report.skipped(
                    version,
                    reason="not restored: this item's fields changed since the restore point "
                    "(conflict rule skip)",
                )
                return None
            if conflict == "overwrite":
                await self.ctx.graph.request_json(
                    "PATCH",
                    f"{base}/{q(item_id)}/fields",
                    json=fields,
                    mailbox=self.site_id,
                    expected=(200,),
                )
                return item_id, dropped
        elif conflict != "keep_both":
            twin = target.twin(fields)
            if twin is not None:  # restored before, or re-created by hand: not twice
                # every field equal: the item (or Safekeep's copy of it) is there
                await self.ctx.report.existing(version, target_id=twin)
                return None
        created = await self.ctx.graph.request_json(
            "POST", base, json={"fields": fields}, mailbox=self.site_id, expected=(200, 201)
        )
        new_id = str((created or {}).get("id") or "") or None
        if new_id:
            target.add(new_id, fields)
        return new_id, dropped


class TargetItems:
    """A target list's item ids, and a digest of each item's writable fields so that an
    item equal to a backed-up one (restored by an earlier run) is recognised."""

    def __init__(self) -> None:
        self._by_id: dict[str, bytes] = {}
        self._digests: dict[bytes, str] = {}

    @property
    def ids(self) -> Collection[str]:
        return self._by_id.keys()

    @staticmethod
    def digest(fields: Mapping[str, Any]) -> bytes:
        raw = json_bytes(fields, sort_keys=True, default=str)
        return hashlib.blake2b(raw, digest_size=16).digest()

    def add(self, item_id: str, fields: Mapping[str, Any]) -> None:
        digest = self.digest(fields)
        self._by_id[item_id] = digest
        self._digests.setdefault(digest, item_id)

    def holds(self, item_id: str, fields: Mapping[str, Any]) -> bool:
        """Does the item ``item_id`` hold exactly these fields?"""
        return self._by_id.get(item_id) == self.digest(fields)

    def twin(self, fields: Mapping[str, Any]) -> str | None:
        return self._digests.get(self.digest(fields))


# ---- export --------------------------------------------------------------------------------


def list_exports(
    repo: TenantRepository,
    list_version: ItemVersion | None,
    list_name: str,
    items: list[tuple[str, dict[str, Any]]],
) -> list[ExportEntry]:
    """``<list>.json`` (the list, its columns and every item's Graph JSON) and ``<list>.csv``
    (one row per item, one column per list column). ``items`` holds (name, document ref)
    pairs only: each document is read from the store while the file streams."""

    async def schema() -> Json:
        if list_version is None:
            return {}
        return await read_document(repo, list_version) or {}

    async def documents() -> AsyncIterator[Json]:
        for _name, ref in items:
            yield json.loads(await repo.read_bytes(ContentRef.from_json(ref)))

    async def as_json() -> AsyncIterator[bytes]:
        document = await schema()
        head = {"list": document.get("list"), "columns": document.get("columns", [])}
        yield json_bytes(head)[:-1] + b', "items": ['
        first = True
        async for item in documents():
            yield (b"" if first else b",") + json_bytes(item)
            first = False
        yield b"]}"

    async def as_csv() -> AsyncIterator[bytes]:
        document = await schema()
        names = [
            str(c["name"])
            for c in document.get("columns") or []
            if c.get("name") and not c.get("hidden")
        ]
        header = ["id", *names, "Created", "Modified"]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        yield out.getvalue().encode("utf-8-sig")
        async for item in documents():
            fields = item.get("fields") or {}
            row = [item.get("id")] + [_cell(fields.get(n)) for n in names]
            row += [item.get("createdDateTime"), item.get("lastModifiedDateTime")]
            out.seek(0)
            out.truncate()
            writer.writerow(row)
            yield storable_text(out.getvalue()).encode()

    modified = list_version.modified_at if list_version is not None else None
    return [
        ExportEntry(path=f"{list_name}.json", open=as_json, version=None, modified_at=modified),
        ExportEntry(path=f"{list_name}.csv", open=as_csv, version=None, modified_at=modified),
    ]


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value
