"""Backing up one Exchange mailbox by Graph delta, folder by folder.

The run has three steps. (1) The folder hierarchy comes from ``/mailFolders/delta`` (one
collection, ``folders``); well-known folders are resolved by name so that policy switches
(Deleted Items, Junk Email, Recoverable Items) and cross-mailbox restores can find them.
(2) Messages a previous run could not read are tried again by id. (3) Each folder included
by the policy has its own message delta (collection = folder id). Delta pages carry each
message's JSON with its attachment metadata, exactly as a ``GET`` of the message would, so a
message whose change key is already stored costs nothing and a changed one costs only its
MIME: the small ones 20 at a time through ``$batch``, large ones streamed straight into the
blob store. (Delta links saved before pages carried the JSON still work: such entries are
fetched by id, 20 at a time.)

Every page follows the engine's order: fetch and store blobs first, then one catalog
transaction with the versions, removals and the delta (or resume) link, then a heartbeat.
The fetching runs ahead of that order (``safekeep.backup.pipeline``): while a page is
stored, the next groups' ``$batch`` fetches, the next pages and the next folders are already
on their way, waiting at the mailbox's adaptive limiter, so the mailbox keeps close to
Exchange's 4 concurrent requests until it is done. Transactions still happen one at a
time, in the order above; what runs ahead is bounded (``AHEAD`` steps and the loop's
budget of held bytes), and if a step fails, the pages before it are durable and the next
run resumes after them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
import structlog

from safekeep.backup.catalog import CatalogPage, ItemRecord
from safekeep.backup.collect import ITEM_ATTEMPTS, CollectContext, KeptBytes, held_bytes
from safekeep.backup.outlook import MailboxReader
from safekeep.backup.pipeline import Ready, ahead, gather_bounded, gather_limited, ready
from safekeep.backup.services.mail import search as fields
from safekeep.backup.services.mail.mime import PartCuts
from safekeep.backup.services.mail.search import FOLDER, MESSAGE
from safekeep.graph.client import BatchRequest, BatchResponse, DeltaPage, prefer
from safekeep.graph.errors import GraphError, NotFound, ResyncRequired
from safekeep.graph.transport import json_bytes
from safekeep.runtime import unit_of_work
from safekeep.storage.repository import ContentRef, InFlight
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import DeltaState, ItemVersion

log = structlog.get_logger(__name__)

T = TypeVar("T")

FOLDERS = "folders"  # the delta collection of the folder hierarchy
ROOT = "msgfolderroot"
DELETED_ITEMS = "deleteditems"
JUNK = "junkemail"
RECOVERABLE = "recoverableitemsdeletions"  # outside msgfolderroot, not in /mailFolders/delta
WELL_KNOWN = (
    ROOT,
    "inbox",
    "drafts",
    "sentitems",
    DELETED_ITEMS,
    JUNK,
    "archive",
    "outbox",
    "conversationhistory",
    "clutter",
    "scheduled",
    RECOVERABLE,
)

DELTA_PAGE_SIZE = 100
FETCH_GROUP = 20  # one $batch
# Attachment metadata only: file bytes are in the MIME (Graph still sends contentId).
ATTACHMENT_SELECT = "id,name,contentType,size,isInline,lastModifiedDateTime"
MESSAGE_QUERY = f"$expand=attachments($select={ATTACHMENT_SELECT})"
ITEM_ATTACHMENT_QUERY = "$expand=microsoft.graph.itemattachment/item"
# MIME expected below this goes through $batch (base64 in JSON); larger MIME is streamed.
SMALL_MIME = 1024 * 1024
MIME_BATCH_BUDGET = 8 * 1024 * 1024
STREAMS = 2
# Large MIME with an attachment worth indexing is kept as it streams, up to this size, so
# that its text comes from the bytes in hand: reading it back from the blob store decrypts,
# decompresses and hashes it again (in the bench's mailboxes, 126 messages and 380 MB of
# the 636 MB of MIME a full backup stores). Held under the same byte budgets as small MIME.
KEEP_MIME = 8 * 1024 * 1024
# Steps of a mailbox's backup (a group's $batch, a page's end) started ahead of the page
# being stored: enough that a fetch always waits at the mailbox's limiter for a slot.
AHEAD = 8
MAILBOX_HELD_BYTES = 8 * 1024 * 1024  # small MIME one mailbox's steps hold at once
# What one group of a page holds: half the mailbox's budget, so that the next group's $batch
# is on its way while this one's blobs are stored. Twenty messages of the bench's mean size
# (about 320 KB) held 6.4 MB: the next group waited for the budget, and the mailbox had
# nothing in flight while a group was stored (2.5 requests in flight on average, not 4).
GROUP_HELD_BYTES = MAILBOX_HELD_BYTES // 2
FULL_FIRST_PAGES = 4  # full enumerations whose first pages share a $batch
MAX_RESYNCS = 2
DROPPED_KEYS = frozenset({"@odata.context", "@odata.etag"})
# What _folder_record keeps of a folder. Delta may send an updated folder as its id and only
# what changed ("Resource representation in the delta query response"): the rest is taken
# from the folder's stored version, or read from Graph for a folder not stored.
FOLDER_KEPT = ("displayName", "parentFolderId", "isHidden")
# What a message's standard representation always carries and an update sent as its changed
# properties lacks (``createdDateTime`` and ``receivedDateTime`` never change).
MESSAGE_SHAPE = frozenset(
    {
        "attachments",  # answered for $expand=attachments even where there are none
        "body",
        "changeKey",
        "createdDateTime",
        "parentFolderId",
        "receivedDateTime",
        "subject",
    }
)


@dataclass
class Begin:
    """A folder's pass from its first page starts: forget what an earlier pass saw."""

    folder_id: str


@dataclass
class Resync:
    """A folder's delta link expired: its state goes, and its pass starts again."""

    folder_id: str


@dataclass
class Quiet:
    """Folders whose round was one empty page: only their delta links move."""

    links: list[tuple[str, str]]


@dataclass
class Group:
    """Messages of a page fetched and stored (blobs durable), and those left unreadable."""

    folder_id: str
    records: list[ItemRecord]
    skipped: list[tuple[str, str | None, GraphError]]


@dataclass
class PageEnd:
    """A page's groups are all in: its transaction, with its delta or resume link."""

    folder_id: str
    page: DeltaPage
    track: bool
    full: bool


Step = Begin | Resync | Quiet | Group | PageEnd


@dataclass
class FolderInfo:
    id: str
    name: str
    parent: str | None
    well_known: str | None = None


@dataclass
class Fetched:
    """One message read from Graph, its MIME already durable."""

    message: dict[str, Any]
    mime: ContentRef
    raw: bytes | None  # the MIME when it was small, or kept for its attachment text


def _document_json(document: Mapping[str, Any]) -> bytes:
    """A message's Graph JSON as stored. orjson writes the same compact UTF-8 JSON as the
    standard library at a tenth of its CPU; what it refuses (a lone surrogate, which Graph's
    JSON may carry: see safekeep.graph.transport) the standard library writes."""
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        return json_bytes(document, separators=(",", ":"))


def _dedupe(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Delta may replay a change or list an item twice: the last entry wins."""
    last: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry.get("id"):
            last.pop(str(entry["id"]), None)
            last[str(entry["id"])] = entry
    return list(last.values())


def folder_change_key(entry: dict[str, Any]) -> str:
    """Folders have no change key in Graph, and their delta entries change with every unread
    count; a folder's version changes only when what we keep of it does."""
    kept = [entry.get("displayName"), entry.get("parentFolderId"), bool(entry.get("isHidden"))]
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:32]


def document_of(message: dict[str, Any]) -> dict[str, Any]:
    """The Graph JSON kept for restore: annotations dropped, and no ``contentBytes`` (file
    attachment bytes are taken back out of the MIME)."""
    doc = {k: v for k, v in message.items() if k not in DROPPED_KEYS}
    attachments = []
    for att in message.get("attachments") or []:
        kept = {k: v for k, v in att.items() if k != "contentBytes" and k not in DROPPED_KEYS}
        item = kept.get("item")
        if isinstance(item, dict):
            kept["item"] = document_of(item)
        attachments.append(kept)
    if "attachments" in message:
        doc["attachments"] = attachments
    return doc


def _estimate(message: dict[str, Any]) -> int:
    body = len(str((message.get("body") or {}).get("content") or ""))
    return 8192 + body + sum(int(a.get("size") or 0) for a in message.get("attachments") or [])


def _kept(message: dict[str, Any]) -> bool:
    """Whether a large message's MIME is kept as it streams, for its attachment text (base64
    makes MIME about 4/3 of what its parts add up to)."""
    return _estimate(message) * 4 // 3 <= KEEP_MIME and fields.has_extractable(message)


def _held(message: dict[str, Any]) -> int:
    """The bytes a message's fetch holds in memory until its record is built."""
    size = _estimate(message)
    if size > SMALL_MIME and _kept(message):
        return size * 4 // 3
    return min(size, SMALL_MIME)


class MailCollector(MailboxReader):
    def __init__(self, ctx: CollectContext) -> None:
        super().__init__(ctx)
        self.headers = prefer(immutable_id=True)
        self.delta_headers = prefer(max_page_size=DELTA_PAGE_SIZE, immutable_id=True)
        self.well_known: dict[str, dict[str, Any]] = {}  # name -> folder JSON
        self.folders: dict[str, FolderInfo] = {}
        self._streams = asyncio.Semaphore(STREAMS)
        # What this mailbox's steps hold at once, below the loop's budget: running ahead
        # must not let one large mailbox take what every other task on the loop shares.
        self._held = InFlight(AHEAD, MAILBOX_HELD_BYTES)
        self._resolved = False  # well_known came from Graph in this run
        # The folders as the catalog had them when the run began (an incremental reads them
        # for the well-known names), and whether the folder pass changed any of them since:
        # if not, that read and the delta states read before it still hold.
        self._catalog_folders: dict[str, ItemVersion] | None = None
        self._folders_changed = False
        self._messages_stored: bool | None = None  # see _stored_before
        # First pages of folders' rounds fetched with the hierarchy's (``_early_pages``), by
        # folder: the link each was asked from, and the answer.
        self._early: dict[str, tuple[str, DeltaPage | GraphError | None]] = {}

    # ---- the run ---------------------------------------------------------------------------

    async def collect(self) -> None:
        states = await self.run.delta_links()
        folders = states.get(FOLDERS)
        tree: DeltaPage | GraphError | None = None
        if folders is not None and folders.delta_link and not folders.resume_link:
            # An incremental: the well-known ids are already in the catalog, and asking
            # Graph again costs 12 requests a mailbox for nothing (they never change).
            await self._well_known_from_catalog()
            tree = await self._early_pages(folders.delta_link, states)
        else:
            await self._resolve_well_known()
        await self._collect_folders(folders, tree)
        await self._recoverable_items()
        await self._load_folders()
        if self._folders_changed or self._catalog_folders is None:
            states = await self.run.delta_links()  # folders gone took their states along
        included = self._included()
        await self._forget_excluded(states, included)
        await self._retry_skipped(included)
        order = [f for f in self.folders if f in included]
        # The next pages, groups and folders are fetched while the current page is stored
        # (``pipeline.ahead``); pages still commit one at a time, in order.
        records: list[ItemRecord] = []
        async with ahead(self._plan(order, states), AHEAD) as steps:
            async for step in steps:
                records = await self._apply(step, records)

    async def _apply(self, step: Step, records: list[ItemRecord]) -> list[ItemRecord]:
        """Make one step of the plan durable; returns the records of the page under way."""
        if isinstance(step, Group):
            for message_id, name, error in step.skipped:
                await self.ctx.skip(
                    item_ref=message_id,
                    name=name,
                    code=error.reason,
                    detail=str(error),
                    collection=step.folder_id,
                )
            return records + step.records
        if isinstance(step, PageEnd):
            await self._message_page(step.folder_id, step.page, step.track, step.full, records)
            return []
        if isinstance(step, Begin):
            if self.run.may_hold_seen(step.folder_id):  # not in a new snapshot's first pass
                async with self.run.page() as cat:
                    await cat.forget_seen(step.folder_id)
        elif isinstance(step, Resync):
            async with self.run.page() as cat:
                await cat.drop_delta(step.folder_id)
        elif step.links:
            # An unchanged folder only moves its delta link (most folders of an
            # incremental): written as the run completes, with no transaction here.
            for folder_id, delta_link in step.links:
                self.run.quiet(folder_id, delta_link)
            await self.ctx.progress()
        return records

    async def _plan(
        self, order: Sequence[str], states: dict[str, DeltaState]
    ) -> AsyncIterator[Awaitable[Step] | Ready[Step]]:
        """The run's steps in the order they become durable: for each folder its pages, for
        each page the ``$batch`` fetches of its changed messages then its end. Runs ahead of
        ``_apply`` (``pipeline.ahead`` pulls it from a task of its own)."""
        for start in range(0, len(order), FETCH_GROUP):
            group = order[start : start + FETCH_GROUP]
            quiet: list[tuple[str, str]] = []  # folders whose round is one empty page
            pages = await self._first_pages(group, states)
            full = [f for f, (where, first) in pages.items() if where[1] and first is None]
            for folder_id, (where, first) in pages.items():
                if folder_id in full:
                    # Full enumerations' first pages, a few folders per $batch (they
                    # carry whole messages: memory holds a few pages, not 20).
                    chunk = full[: full.index(folder_id) + FULL_FIRST_PAGES]
                    chunk = [f for f in chunk if pages[f][1] is None]
                    firsts = await self._batch_first(chunk, {f: pages[f][0] for f in chunk})
                    for other in chunk:
                        pages[other] = (pages[other][0], firsts[other])
                    full = [f for f in full if f not in chunk]
                    first = pages[folder_id][1]
                link = _unchanged_round(where, first)
                if link is not None:
                    quiet.append((folder_id, link))
                    continue
                first, pages[folder_id] = pages[folder_id][1], (where, None)  # held once
                async for step in self._folder_steps(folder_id, where, first):
                    yield step
            if quiet:
                yield ready(Quiet(quiet))

    # ---- folders ---------------------------------------------------------------------------

    async def _well_known_from_catalog(self) -> None:
        """Well-known folders as the last run recorded them (``meta.well_known``). The root
        is not a recorded folder: a folder change, which needs it, resolves from Graph."""
        async with unit_of_work(self.ctx.runtime) as session:
            found = await catalog.open_external_ids(
                session, self.run.account_id, self.run.service, [FOLDER]
            )
        self._catalog_folders = found
        for folder_id, version in found.items():
            name = (version.meta or {}).get("well_known")
            if name in WELL_KNOWN:
                self.well_known[name] = {"id": folder_id, "displayName": version.name}
        if self.ctx.policy.include_recoverable_items and RECOVERABLE not in self.well_known:
            await self._resolve_well_known()  # switched on since: find it in Graph

    def _get(self, request_id: str, path: str) -> BatchRequest:
        """A ``$batch`` GET of ``path`` under this mailbox, with the collector's headers."""
        return BatchRequest(id=request_id, method="GET", url=self.base + path, headers=self.headers)

    async def _resolve_well_known(self) -> None:
        """Well-known folder ids by name, in one ``$batch`` (a mailbox may lack some)."""
        if self._resolved:
            return
        self._resolved = True
        self.well_known.clear()
        requests = [
            self._get(str(n), f"/mailFolders/{name}?$select=id,displayName,parentFolderId")
            for n, name in enumerate(WELL_KNOWN)
        ]
        answers = await self.graph.batch(requests, mailbox=self.user)
        for name, answer in zip(WELL_KNOWN, answers, strict=True):
            if answer.ok and isinstance(answer.body, dict) and answer.body.get("id"):
                self.well_known[name] = answer.body
            elif name == ROOT:
                answer.raise_for_error()  # no root folder: the mailbox is not reachable
                raise GraphError(answer.status, "NoRootFolder", "msgfolderroot has no id")

    def _wk_id(self, name: str) -> str | None:
        found = self.well_known.get(name)
        return str(found["id"]) if found else None

    def _wk_name(self, folder_id: str) -> str | None:
        for name, found in self.well_known.items():
            if found.get("id") == folder_id:
                return name
        return None

    def _folder_record(self, entry: dict[str, Any]) -> ItemRecord:
        folder_id = str(entry["id"])
        parent = entry.get("parentFolderId")
        if parent in (None, "", folder_id, self._wk_id(ROOT)):
            parent = None
        return ItemRecord(
            external_id=folder_id,
            kind=FOLDER,
            name=str(entry.get("displayName") or ""),
            parent_external_id=parent,
            change_key=folder_change_key(entry),
            meta={"well_known": self._wk_name(folder_id), "is_hidden": bool(entry.get("isHidden"))},
        )

    async def _start(
        self, state: DeltaState | None, initial: str, *, kinds: set[str], parent: str | None
    ) -> tuple[str, bool, bool]:
        """Where a collection's round starts: (link, full enumeration?, from scratch?).

        A full enumeration (first pass or resync) removes what it did not see only if it
        saw everything from the start. Resuming one that earlier runs' items predate would
        lose that guarantee, so it starts again instead (unchanged items cost no fetch).
        """
        if state is None:
            return initial, True, True
        if state.resume_link and state.delta_link:
            return state.resume_link, False, False
        if state.delta_link:
            return state.delta_link, False, False
        if state.resume_link and not await self._has_older(kinds, parent):
            return state.resume_link, True, False
        return initial, True, True

    async def _stored_before(self) -> bool:
        """Whether messages of this mailbox may be stored from before this run (an earlier
        run's, or an earlier attempt's at this snapshot): asked once per run."""
        if self._messages_stored is None:
            self._messages_stored = self.run.resumed or await self._has_older({MESSAGE}, None)
        return self._messages_stored

    async def _has_older(self, kinds: set[str], parent: str | None) -> bool:
        async with unit_of_work(self.ctx.runtime) as session:
            return await catalog.has_open_older(
                session,
                self.run.account_id,
                self.run.service,
                kinds,
                self.run.seq,
                parent_external_id=parent,
            )

    async def _collect_folders(
        self, state: DeltaState | None, first: DeltaPage | GraphError | None = None
    ) -> None:
        """The hierarchy's round (``first``: its first page, already fetched)."""
        initial = f"{self.base}/mailFolders/delta"
        link, _, scratch = await self._start(state, initial, kinds={FOLDER}, parent=None)
        resyncs = 0
        while True:
            seen: set[str] = set()
            try:
                async for page in self._pages(link, first):
                    await self._folder_page(page, seen, scratch)
                return
            except ResyncRequired as exc:
                first = None
                resyncs += 1
                if resyncs > MAX_RESYNCS:
                    raise
                log.info("mail_folders_resync", account_id=str(self.run.account_id))
                async with self.run.page() as cat:
                    await cat.drop_delta(FOLDERS)
                link, scratch = exc.location or initial, True

    async def _folder_page(self, page: DeltaPage, seen: set[str], scratch: bool) -> None:
        entries = _dedupe(page.items)
        if not entries and not scratch and page.delta_link:
            self.run.quiet(FOLDERS, page.delta_link)  # the hierarchy did not change
            await self.ctx.progress()
            return
        if entries or scratch:
            await self._resolve_well_known()  # folder records need the root and the names
        entries = await self._whole_folders(entries)
        if scratch:
            self._folders_changed = True
        async with self.run.page() as cat:
            for entry in entries:
                folder_id = str(entry["id"])
                if "@removed" in entry:
                    self._folders_changed = True
                    await self._drop_folder(cat, folder_id)
                    continue
                seen.add(folder_id)
                if await cat.record(self._folder_record(entry)) != "unchanged":
                    self._folders_changed = True
            if page.delta_link:
                if scratch:
                    keep = seen | {fid for fid in (self._wk_id(RECOVERABLE),) if fid}
                    open_folders = await catalog.open_external_ids(
                        cat.session, self.run.account_id, self.run.service, [FOLDER]
                    )
                    for folder_id in set(open_folders) - keep:
                        await self._drop_folder(cat, folder_id)
                await cat.save_delta(FOLDERS, delta_link=page.delta_link)
            else:
                await cat.save_delta(FOLDERS, resume_link=page.next_link)
        await self.ctx.progress()

    async def _whole_folders(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The page's folder entries with everything ``_folder_record`` keeps
        (``whole_folders``)."""

        def stored_fields(version: ItemVersion) -> dict[str, Any]:
            return {
                "displayName": version.name,
                # A top-level folder is stored without its parent, the root.
                "parentFolderId": version.parent_external_id or self._wk_id(ROOT),
                "isHidden": bool((version.meta or {}).get("is_hidden")),
            }

        return await self.whole_folders(entries, FOLDER_KEPT, stored_fields, "mailFolders")

    @staticmethod
    async def _drop_folder(cat: CatalogPage, folder_id: str) -> None:
        """A folder is gone: end it, everything below it, and its delta state. The folder
        goes first: ``remove_subtree`` flushes, so a later subtree query (sessions do not
        autoflush) cannot meet this folder again and end it twice."""
        await cat.remove(folder_id)
        await cat.remove_subtree(folder_id)
        await cat.drop_delta(folder_id)

    async def _recoverable_items(self) -> None:
        """Recoverable Items lives outside the folder hierarchy: a root of its own here."""
        found = self.well_known.get(RECOVERABLE)
        if found is None:
            return
        folder_id = str(found["id"])
        current = await self.run.current([folder_id])
        async with self.run.page() as cat:
            if self.ctx.policy.include_recoverable_items:
                entry = {**found, "parentFolderId": None, "isHidden": True}
                if await cat.record(self._folder_record(entry)) != "unchanged":
                    self._folders_changed = True
            elif folder_id in current:
                self._folders_changed = True
                await self._drop_folder(cat, folder_id)

    async def _load_folders(self) -> None:
        found = self._catalog_folders
        if found is None or self._folders_changed:
            async with unit_of_work(self.ctx.runtime) as session:
                found = await catalog.open_external_ids(
                    session, self.run.account_id, self.run.service, [FOLDER]
                )
        self.folders = {
            fid: FolderInfo(fid, v.name, v.parent_external_id, (v.meta or {}).get("well_known"))
            for fid, v in sorted(found.items(), key=lambda kv: kv[1].name.lower())
        }

    def _included(self) -> set[str]:
        """Folders whose messages this policy backs up (Deleted Items and Junk Email with
        everything below them are switches; Recoverable Items is only here when on)."""
        policy = self.ctx.policy
        roots = set()
        if not policy.include_deleted_items and self._wk_id(DELETED_ITEMS):
            roots.add(self._wk_id(DELETED_ITEMS))
        if not policy.include_junk and self._wk_id(JUNK):
            roots.add(self._wk_id(JUNK))
        included = set()
        for folder_id in self.folders:
            current: str | None = folder_id
            hops = 0
            while current is not None and current not in roots and hops < 64:
                current = self.folders[current].parent if current in self.folders else None
                hops += 1
            if current is None:
                included.add(folder_id)
        return included

    def folder_path(self, folder_id: str | None) -> str:
        names: list[str] = []
        current = folder_id
        while current is not None and current in self.folders and len(names) < 64:
            names.append(self.folders[current].name)
            current = self.folders[current].parent
        return "/" + "/".join(reversed(names))

    async def _forget_excluded(self, states: dict[str, DeltaState], included: set[str]) -> None:
        """Collections we no longer back up: a folder that is gone, or one a policy switch
        now excludes (its messages leave the current view; nothing is deleted)."""
        stale = [c for c in states if c != FOLDERS and c not in included]
        if not stale:
            return
        async with self.run.page() as cat:
            for collection in stale:
                if collection in self.folders:
                    await cat.remove_unseen({MESSAGE}, set(), parent_external_id=collection)
                await cat.drop_delta(collection)
        for collection in stale:
            states.pop(collection, None)

    # ---- messages --------------------------------------------------------------------------

    async def _early_pages(
        self, tree_link: str, states: dict[str, DeltaState]
    ) -> DeltaPage | GraphError | None:
        """An incremental's first request: the hierarchy's delta round and the first pages
        of the first included folders' rounds (as the catalog knows them), in one
        ``$batch``, so that an unchanged mailbox costs one request in all. Returns the
        hierarchy's first page; the folders' wait in ``_early`` for ``_first_pages``, which
        takes a page only if the folder is still included and its round still starts at the
        link the page was asked from (the hierarchy may have changed meanwhile)."""
        await self._load_folders()
        starts: dict[str, tuple[str, bool, bool]] = {}
        included = self._included()
        for folder_id in (f for f in self.folders if f in included):
            state = states.get(folder_id)
            if state is None or not state.delta_link or state.resume_link:
                continue  # a first pass, or one to resume: not a one-page round
            starts[folder_id] = (state.delta_link, False, False)
            if len(starts) == FETCH_GROUP - 1:
                break
        answers = await self._batch_first(
            [FOLDERS, *starts], {FOLDERS: (tree_link, False, False), **starts}
        )
        for folder_id, (link, _, _) in starts.items():
            self._early[folder_id] = (link, answers[folder_id])
        return answers[FOLDERS]

    def _initial_messages_link(self, folder_id: str) -> str:
        return f"{self.base}/mailFolders/{quote(folder_id, safe='')}/messages/delta?{MESSAGE_QUERY}"

    async def _first_pages(
        self, group: Sequence[str], states: dict[str, DeltaState]
    ) -> dict[str, tuple[tuple[str, bool, bool], DeltaPage | GraphError | None]]:
        """Where each folder's round starts, and its first delta page: up to 20 folders in
        one ``$batch``, so that an unchanged folder costs no request of its own. A full
        enumeration's first page is not fetched here: its pages carry whole messages, and
        20 of them held at once would bound memory by the mailbox, not by a page (``_plan``
        fetches them ``FULL_FIRST_PAGES`` at a time)."""
        starts: dict[str, tuple[str, bool, bool]] = {}
        for folder_id in group:
            starts[folder_id] = await self._start(
                states.get(folder_id),
                self._initial_messages_link(folder_id),
                kinds={MESSAGE},
                parent=folder_id,
            )
        out: dict[str, tuple[tuple[str, bool, bool], DeltaPage | GraphError | None]] = {
            f: (starts[f], None) for f in group
        }
        batched = []
        for folder_id in (f for f in group if not starts[f][1]):
            link, early = self._early.pop(folder_id, ("", None))
            if early is not None and link == starts[folder_id][0]:
                out[folder_id] = (starts[folder_id], early)
            else:
                batched.append(folder_id)
        self._early.clear()  # what the first group did not take is stale by now
        for folder_id, first in (await self._batch_first(batched, starts)).items():
            out[folder_id] = (starts[folder_id], first)
        return out

    async def _batch_first(
        self, folders: Sequence[str], starts: dict[str, tuple[str, bool, bool]]
    ) -> dict[str, DeltaPage | GraphError | None]:
        """The first page of each folder's round in one ``$batch`` (None: fetch it alone)."""
        out: dict[str, DeltaPage | GraphError | None] = {f: None for f in folders}
        requests = [
            BatchRequest(id=str(n), method="GET", url=starts[f][0], headers=self.delta_headers)
            for n, f in enumerate(folders)
        ]
        if not requests:
            return out
        try:
            answers = await self.graph.batch(requests, mailbox=self.user)
        except (ValueError, GraphError) as exc:  # e.g. a link outside this Graph version
            log.info("mail_first_pages_unbatched", error=str(exc)[:200])
            return out
        for folder_id, answer in zip(folders, answers, strict=True):
            if answer.ok and isinstance(answer.body, dict):
                body = answer.body
                out[folder_id] = DeltaPage(
                    list(body.get("value") or []),
                    body.get("@odata.nextLink"),
                    body.get("@odata.deltaLink"),
                )
            else:
                out[folder_id] = answer.error
        return out

    async def _pages(
        self, link: str, first: DeltaPage | GraphError | None
    ) -> AsyncIterator[DeltaPage]:
        if isinstance(first, ResyncRequired):
            raise first
        if isinstance(first, DeltaPage):
            yield first
            if first.next_link is None:
                return
            link = first.next_link
        async for page in self.graph.delta(link, headers=self.delta_headers, mailbox=self.user):
            yield page

    async def _folder_steps(
        self,
        folder_id: str,
        where: tuple[str, bool, bool],
        first: DeltaPage | GraphError | None,
    ) -> AsyncIterator[Awaitable[Step] | Ready[Step]]:
        initial = self._initial_messages_link(folder_id)
        link, full, scratch = where
        resyncs = 0
        while True:
            # A pass from the first page removes at its end what it did not see; what it saw
            # is kept in the database (memory must not grow with the folder). In a mailbox's
            # first backup nothing was stored before this pass that it could fail to see.
            track = full and scratch and (resyncs > 0 or await self._stored_before())
            if track:
                yield ready(Begin(folder_id))
            try:
                async for page in self._pages(link, first):
                    async for step in self._page_steps(folder_id, page, track, full):
                        yield step
                return
            except NotFound:
                # Deleted since the folder pass: the next run's folder delta removes it and
                # everything in it; the rest of the mailbox goes on.
                log.info("mail_folder_vanished", folder=folder_id[-12:])
                return
            except ResyncRequired as exc:
                resyncs += 1
                if resyncs > MAX_RESYNCS:
                    raise
                log.info("mail_folder_resync", folder=folder_id[-12:])
                yield ready(Resync(folder_id))
                link, full, scratch, first = exc.location or initial, True, True, None

    async def _page_steps(
        self, folder_id: str, page: DeltaPage, track: bool, full: bool
    ) -> AsyncIterator[Awaitable[Step] | Ready[Step]]:
        """A page's fetches, one step per group of changed messages, then its end. What is
        stored is read here, ahead of the page's transaction: a message that an earlier
        page still in flight records is fetched again and found unchanged, never lost."""
        entries = _dedupe(page.items)
        changed = [e for e in entries if "@removed" not in e]
        current = await self.run.current([str(e["id"]) for e in changed]) if changed else {}
        wanted = [e for e in changed if not _is_stored(current.get(str(e["id"])), e, folder_id)]
        for group in _budgeted(wanted, _held, GROUP_HELD_BYTES):
            yield self._group_step(group, folder_id)
        # The page's end keeps only ids and links: the messages' JSON is in the group steps,
        # and a marker must stay small (unchanged pages of a resync may queue up).
        slim = [
            {"id": e["id"], "@removed": e["@removed"]} if "@removed" in e else {"id": e["id"]}
            for e in entries
        ]
        yield ready(
            PageEnd(folder_id, DeltaPage(slim, page.next_link, page.delta_link), track, full)
        )

    async def _message_page(
        self,
        folder_id: str,
        page: DeltaPage,
        track: bool,
        full: bool = False,
        records: Sequence[ItemRecord] = (),
    ) -> None:
        """One page's transaction: its fetched messages (``records``), its removals, what it
        saw, and its delta (or resume) link."""
        entries = _dedupe(page.items)
        removed = [str(e["id"]) for e in entries if "@removed" in e]
        changed = [e for e in entries if "@removed" not in e]
        async with self.run.page() as cat:
            await cat.preload([r.external_id for r in records] + removed)
            await cat.record_many(records)
            for message_id in removed:
                await cat.remove(message_id, only_if_parent=folder_id)
            if track:
                await cat.mark_seen(folder_id, (str(e["id"]) for e in changed))
            if page.delta_link:
                if track:
                    await cat.remove_unseen_in({MESSAGE}, folder_id, parent_external_id=folder_id)
                elif full:  # a resumed first pass: drop what a pass cut short had kept
                    await cat.forget_seen(folder_id)
                await cat.save_delta(folder_id, delta_link=page.delta_link)
            else:
                await cat.save_delta(folder_id, resume_link=page.next_link)
        await self.ctx.progress()

    async def _group_step(self, group: Sequence[dict[str, Any]], folder_id: str) -> Group:
        """Fetch and store what these delta entries point at; what stays unreadable is
        handed back to be skipped. Small MIME, and large MIME kept for its attachment text,
        is held until the group's records are built (the rest streams): the loop's byte
        budget bounds what all steps hold at once."""
        held = sum(_held(e) for e in group)
        async with self._held.holding(held), held_bytes().holding(held):
            records, skipped = await self._group_records(group, folder_id)
        return Group(folder_id, records, skipped)

    async def _group_records(
        self, group: Sequence[dict[str, Any]], folder_id: str
    ) -> tuple[list[ItemRecord], list[tuple[str, str | None, GraphError]]]:
        records: list[ItemRecord] = []
        skipped: list[tuple[str, str | None, GraphError]] = []
        if group:
            fetched, failed = await self.fetch([str(e["id"]) for e in group], known=group)
            names = {str(e["id"]): str(e.get("subject") or "") for e in group}
            for message_id, error in failed.items():
                if isinstance(error, NotFound):
                    continue  # deleted since the delta listed it: the next delta says so
                again = await self._fetch_again(message_id, error)
                if isinstance(again, Fetched):
                    fetched[message_id] = again
                elif not isinstance(again, NotFound):
                    skipped.append((message_id, names.get(message_id), again))
            records = await gather_limited(
                self.record_for(one, folder_id) for one in fetched.values()
            )
        return records, skipped

    async def _fetch_again(self, message_id: str, error: GraphError) -> Fetched | GraphError:
        for _ in range(ITEM_ATTEMPTS - 1):
            fetched, failed = await self.fetch([message_id])
            if message_id in fetched:
                return fetched[message_id]
            error = failed[message_id]
            if isinstance(error, NotFound):
                break
        return error

    async def record_for(self, one: Fetched, folder_id: str) -> ItemRecord:
        message = one.message
        parent = str(message.get("parentFolderId") or folder_id)
        if parent not in self.folders:
            parent = folder_id
        document = document_of(message)
        doc_ref = await self.ctx.repo.put_bytes(_document_json(document))
        meta = fields.message_meta(document, self.folder_path(parent))
        name = str(message.get("subject") or "") or "(no subject)"
        modified = fields.parse_when(message.get("lastModifiedDateTime"))
        probe = ItemVersion(
            kind=MESSAGE, name=name, meta=meta, size=one.mime.size, modified_at=modified
        )
        raw, repo, ref = one.raw, self.ctx.repo, one.mime

        async def reader() -> bytes | None:
            return raw if raw is not None else await repo.read_bytes(ref)

        return ItemRecord(
            external_id=str(message["id"]),
            kind=MESSAGE,
            name=name,
            parent_external_id=parent,
            size=one.mime.size,
            modified_at=modified,
            change_key=message.get("changeKey"),
            content=one.mime,
            document=doc_ref,
            meta=meta,
            search=await fields.search_fields(probe, document, reader),
        )

    # ---- fetching --------------------------------------------------------------------------

    async def fetch(
        self, ids: Sequence[str], known: Sequence[dict[str, Any]] = ()
    ) -> tuple[dict[str, Fetched], dict[str, GraphError]]:
        """Messages by id: JSON in one ``$batch`` (unless ``known``, their delta entries,
        already carry it), then small MIME in batches (the first also reading attached
        items), large MIME streamed into the blob store."""
        failed: dict[str, GraphError] = {}
        messages = {str(e["id"]): e for e in known if _is_complete(e) and str(e["id"]) in ids}
        wanted = [mid for mid in ids if mid not in messages]
        answers = (
            await self.graph.batch(
                [
                    self._get(str(n), f"/messages/{quote(mid, safe='')}?{MESSAGE_QUERY}")
                    for n, mid in enumerate(wanted)
                ],
                mailbox=self.user,
            )
            if wanted
            else []
        )
        for mid, answer in zip(wanted, answers, strict=True):
            if answer.ok and isinstance(answer.body, dict) and answer.body.get("id"):
                messages[mid] = answer.body
            else:
                failed[mid] = answer.error or GraphError(answer.status, "NoBody", "empty answer")
        await self._read_links(messages, failed)
        # Attached items' expansions ride in the first MIME $batch: one round trip, not two.
        expansions = _item_attachments(messages)
        small = [m for m in messages if _estimate(messages[m]) <= SMALL_MIME]
        large = [m for m in messages if m not in small]
        fetched: dict[str, Fetched] = {}

        async def small_mime() -> None:
            groups = _budgeted(small, lambda m: _estimate(messages[m]), MIME_BATCH_BUDGET)
            if expansions and not groups:
                groups = [[]]
            for n, group in enumerate(groups):
                extra = expansions if n == 0 else []
                requests = [
                    self._get(str(k), f"/messages/{quote(mid, safe='')}/$value")
                    for k, mid in enumerate(group)
                ] + [
                    self._get(
                        f"a{k}",
                        f"/messages/{quote(mid, safe='')}/attachments/"
                        f"{quote(aid, safe='')}?{ITEM_ATTACHMENT_QUERY}",
                    )
                    for k, (mid, _, aid) in enumerate(extra)
                ]
                answers = await self.graph.batch(requests, mailbox=self.user)
                _expand(messages, failed, extra, answers[len(group) :])
                bodies: dict[str, bytes] = {}
                for mid, answer in zip(group, answers[: len(group)], strict=True):
                    if mid not in messages:
                        continue  # its attached item could not be read: failed already
                    try:
                        bodies[mid] = answer.binary()
                    except GraphError as exc:
                        failed[mid] = exc
                # Stored side by side, up to 16 at once: one after the other, a group waited
                # for a round trip to the blob store per message.
                refs = await gather_limited(
                    self.ctx.repo.put_bytes(raw, cuts=PartCuts()) for raw in bodies.values()
                )
                for (mid, raw), ref in zip(bodies.items(), refs, strict=True):
                    fetched[mid] = Fetched(messages[mid], ref, raw)

        async def stream_one(mid: str) -> None:
            if mid not in messages:
                return  # its attached item could not be read: failed already
            # MIME larger than its attachments said is not kept: read back for its text.
            kept = KeptBytes(KEEP_MIME) if _kept(messages[mid]) else None

            async def keeping(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
                async for piece in stream:
                    if kept is not None:
                        kept.add(piece)
                    yield piece

            async with self._streams:
                try:
                    ref = await self.ctx.repo.put_stream(
                        keeping(
                            self.graph.stream(
                                f"{self.base}/messages/{quote(mid, safe='')}/$value",
                                mailbox=self.user,
                                headers=self.headers,
                            )
                        ),
                        cuts=PartCuts(),
                    )
                except GraphError as exc:
                    failed[mid] = exc
                    return
                fetched[mid] = Fetched(messages[mid], ref, kept.value if kept is not None else None)

        # Large MIME is streamed beside the small MIME's $batch, not after its answers are
        # stored: all of a group's requests wait at the mailbox's limiter at once, so a slot
        # that frees goes to whichever is ready (one mailbox alone in the bench: requests in
        # flight 2.0 -> 2.1-2.3). A message with attached items waits for the first
        # envelope, which reads them and may fail it.
        expanding = {mid for mid, _, _ in expansions}

        async def small_then_expanded() -> None:
            await small_mime()
            await gather_bounded(stream_one(m) for m in large if m in expanding)

        # A failure cancels the rest of the group's fetches: nothing outlives the step.
        await gather_bounded(
            [small_then_expanded(), *(stream_one(m) for m in large if m not in expanding)]
        )
        return fetched, failed

    async def _read_links(
        self, messages: dict[str, dict[str, Any]], failed: dict[str, GraphError]
    ) -> None:
        """Link (reference) attachments as beta answers them: v1.0 gives their name only,
        and a restore cannot make a link again without its address. One request each, side
        by side (the mailbox's limiter bounds them); a message whose link cannot be read
        fails, as one whose attached item cannot."""

        async def read(mid: str, index: int, aid: str) -> None:
            try:
                answer = await self.graph.request_json(
                    "GET",
                    f"/beta{self.base}/messages/{quote(mid, safe='')}/attachments/"
                    f"{quote(aid, safe='')}",
                    headers=self.headers,
                    mailbox=self.user,
                )
            except GraphError as exc:
                failed[mid] = exc
                messages.pop(mid, None)
                return
            if isinstance(answer, dict) and mid in messages:
                answer.pop("@odata.context", None)
                messages[mid]["attachments"][index] = answer

        await gather_bounded(read(*link) for link in _attachments_of_kind(messages, "reference"))

    # ---- retries ---------------------------------------------------------------------------

    async def _retry_skipped(self, included: set[str]) -> None:
        """Items earlier runs could not read: fetch them by id; drop the gone ones."""
        pending = await self.ctx.retries()
        for start in range(0, len(pending), FETCH_GROUP):
            group = pending[start : start + FETCH_GROUP]
            ids = [row.external_id for row in group]
            fetched, failed = await self.fetch(ids)
            done = [m for m, e in failed.items() if isinstance(e, NotFound)] + list(fetched)
            records = await gather_limited(
                self.record_for(one, parent)
                for one in fetched.values()
                if (parent := str(one.message.get("parentFolderId") or "")) in included
            )
            if records:
                async with self.run.page() as cat:
                    await cat.record_many(records)
            if done:
                await self.ctx.resolved(done)
            for row in group:
                error = failed.get(row.external_id)
                if error is not None and not isinstance(error, NotFound):
                    await self.ctx.skip(
                        item_ref=row.external_id,
                        name=row.name,
                        code=error.reason,
                        detail=str(error),
                        collection=row.collection,
                    )
            await self.ctx.progress()


def _item_attachments(messages: dict[str, dict[str, Any]]) -> list[tuple[str, int, str]]:
    """Attached messages, events and contacts, (message, index, attachment id): their item
    is read for a faithful restore."""
    return _attachments_of_kind(messages, "item")


def _attachments_of_kind(
    messages: dict[str, dict[str, Any]], kind: str
) -> list[tuple[str, int, str]]:
    """(message, index, attachment id) of the messages' attachments of ``kind``."""
    wanted: list[tuple[str, int, str]] = []
    for mid, message in messages.items():
        for index, att in enumerate(message.get("attachments") or []):
            if fields.attachment_kind(att) == kind and att.get("id"):
                wanted.append((mid, index, str(att["id"])))
    return wanted


def _expand(
    messages: dict[str, dict[str, Any]],
    failed: dict[str, GraphError],
    wanted: Sequence[tuple[str, int, str]],
    answers: Sequence[BatchResponse],
) -> None:
    """Put each attached item in its message; a message whose item stays unreadable fails."""
    for (mid, index, _), answer in zip(wanted, answers, strict=True):
        if mid not in messages:
            continue
        if answer.ok and isinstance(answer.body, dict):
            messages[mid]["attachments"][index] = answer.body
        else:
            failed[mid] = answer.error or GraphError(answer.status, "NoBody", "empty answer")
            del messages[mid]


def _unchanged_round(
    where: tuple[str, bool, bool], first: DeltaPage | GraphError | None
) -> str | None:
    """The new delta link of a round (not a full enumeration) whose first page is its last
    and is empty; None for any other round."""
    if where[1] or not isinstance(first, DeltaPage) or first.items or first.next_link:
        return None
    return first.delta_link or None


def _is_complete(entry: dict[str, Any]) -> bool:
    """A delta entry that is the whole message JSON: not a slim one from an older delta
    link, nor an update sent as its changed properties (even body and attachments)."""
    return entry.keys() >= MESSAGE_SHAPE and "@removed" not in entry


def _is_stored(version: ItemVersion | None, entry: dict[str, Any], folder_id: str) -> bool:
    key = entry.get("changeKey")
    return (
        version is not None
        and key is not None
        and version.change_key == key
        and version.parent_external_id == folder_id
    )


def _budgeted(items: Sequence[T], size: Callable[[T], int], budget: int) -> list[list[T]]:
    """Groups of at most 20 whose estimated total stays under ``budget`` (an item larger
    than the budget is a group of its own)."""
    groups: list[list[T]] = []
    current: list[T] = []
    total = 0
    for item in items:
        estimate = int(size(item))
        if current and (len(current) >= FETCH_GROUP or total + estimate > budget):
            groups.append(current)
            current, total = [], 0
        current.append(item)
        total += estimate
    if current:
        groups.append(current)
    return groups


async def collect(ctx: CollectContext) -> None:
    await MailCollector(ctx).collect()
