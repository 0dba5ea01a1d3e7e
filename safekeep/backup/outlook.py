"""What the mailbox services (mail, calendar, contacts) share: reading one mailbox
(``MailboxReader``) and writing into one (``MailboxWriter``). And what calendars and contacts
share beyond that: both keep an Outlook item (an event, a contact) as its Graph JSON with no
bytes of their own, so search describes it from that document (``document_search``), browse,
download and export render it as a file on demand (ICS, vCard: ``RenderedForm``), and a
restore creates it again in a target container (a calendar, a contact folder), stamped with
Safekeep's identity so that the conflict rule finds an earlier copy (``ItemRestore``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, NamedTuple
from urllib.parse import quote

import structlog

from safekeep.backup.catalog import SearchFields
from safekeep.backup.collect import ITEM_ATTEMPTS, CollectContext
from safekeep.backup.export.zipper import safe_name
from safekeep.backup.pipeline import Ready, ahead, ready
from safekeep.backup.restore import identity
from safekeep.backup.services.base import (
    Content,
    ContentReader,
    ExportContext,
    ExportEntry,
    RestoreContext,
    Selection,
    read_document,
    rendered_content,
    restore_each,
)
from safekeep.graph.client import BatchRequest, BatchResponse, DeltaPage, prefer
from safekeep.graph.errors import GraphError, NotFound
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion

log = structlog.get_logger(__name__)

CONCURRENCY = 4  # items restored at once into one mailbox (Exchange allows 4 per mailbox)
INDEX_PAGE_SIZE = 500
# Said of an item reported ``partially_restored``: the copy stays for the user, unstamped.
INCOMPLETE = "; this incomplete copy is not counted as restored: a later restore makes it again"


def component(name: str) -> str:
    """One path component: a "/" in a subject or folder name must not open a folder."""
    return safe_name(name.replace("/", "-"))


# ---- reading one mailbox -------------------------------------------------------------------


class MailboxReader:
    """Where a mail, calendar or contacts collector starts: the user's mailbox in Graph."""

    def __init__(self, ctx: CollectContext) -> None:
        self.ctx = ctx
        self.graph = ctx.graph
        self.run = ctx.run
        self.user = ctx.account.graph_id
        self.base = f"/users/{quote(self.user, safe='')}"

    async def get_item(self, path: str, headers: dict[str, str]) -> dict[str, Any]:
        """One item, read up to ``ITEM_ATTEMPTS`` times (an error Graph may not repeat is
        tried again); NotFound at once: the item is gone."""
        last: GraphError | None = None
        for _ in range(ITEM_ATTEMPTS):
            try:
                return await self.graph.get_json(path, headers=headers, mailbox=self.user)
            except NotFound:
                raise
            except GraphError as exc:
                last = exc
        assert last is not None
        raise last

    async def batch_get(self, paths: Sequence[str]) -> list[BatchResponse]:
        """GET each of ``paths`` (below the mailbox) in ``$batch``, 20 per call; the answers
        in the order of ``paths``."""
        requests = [
            BatchRequest(
                id=str(n), method="GET", url=self.base + path, headers=prefer(immutable_id=True)
            )
            for n, path in enumerate(paths)
        ]
        return await self.graph.batch(requests, mailbox=self.user) if requests else []

    async def whole_folders(
        self,
        entries: list[dict[str, Any]],
        kept: Sequence[str],
        stored_fields: Callable[[ItemVersion], dict[str, Any]],
        collection: str,
    ) -> list[dict[str, Any]]:
        """A folder delta page's entries with everything the collector keeps of a folder
        (``kept``). Delta may send an updated folder as its id and only what changed
        ("Resource representation in the delta query response", delta-query-overview): the
        rest comes from the folder's stored version (``stored_fields``, no request), or from
        Graph (``{collection}/{id}``, in ``$batch``) for a folder not stored; one Graph no
        longer finds is left out, and the next round removes it."""
        partial_ids = [
            str(e["id"])
            for e in entries
            if e.get("id") and "@removed" not in e and not all(k in e for k in kept)
        ]
        if not partial_ids:
            return entries
        stored = await self.run.current(partial_ids)
        unknown = [folder_id for folder_id in partial_ids if folder_id not in stored]
        select = "$select=id," + ",".join(kept)
        answers = await self.batch_get(
            [f"/{collection}/{quote(folder_id, safe='')}?{select}" for folder_id in unknown]
        )
        read: dict[str, dict[str, Any]] = {}
        for folder_id, answer in zip(unknown, answers, strict=True):
            if answer.ok and isinstance(answer.body, dict):
                read[folder_id] = answer.body
            elif not isinstance(answer.error, NotFound):
                answer.raise_for_error()
        out: list[dict[str, Any]] = []
        for entry in entries:
            folder_id = str(entry.get("id") or "")
            if folder_id not in partial_ids:
                out.append(entry)
            elif folder_id in stored:
                out.append({**stored_fields(stored[folder_id]), **entry})
            elif folder_id in read:
                out.append({**read[folder_id], **entry})
        return out

    @asynccontextmanager
    async def delta_pages(
        self, link: str, headers: Mapping[str, str]
    ) -> AsyncIterator[AsyncIterator[DeltaPage]]:
        """A delta round's pages, the next one fetched while the caller stores the current
        one (``pipeline.ahead``), so a mailbox is not idle for a page's worth of storing
        every page. The caller still makes each page durable before taking the next; a
        page's error (``ResyncRequired`` included) comes out at its turn, as ``graph.delta``
        raises it. At most two pages wait beside the one being stored: memory stays that of
        three pages."""

        async def fetched() -> AsyncIterator[Ready[DeltaPage]]:
            async for page in self.graph.delta(link, headers=headers, mailbox=self.user):
                yield ready(page)

        async with ahead(fetched(), 1, markers=1) as pages:
            yield pages

    async def unreadable(
        self, container: str, name: str | None, exc: GraphError, what: str
    ) -> None:
        """A container (calendar, folder) we may list but not read must not cost the others;
        it is recorded as skipped and the next run tries it again."""
        await self.ctx.skip(
            item_ref=None,
            name=name,
            code=exc.reason,
            detail=f"{what} not readable: {exc}",
            collection=container,
        )


# ---- search: the fields of an item, from its stored document --------------------------------

SearchHook = Callable[
    [ItemVersion, dict[str, Any] | None, ContentReader], Awaitable[SearchFields | None]
]


def document_search(
    kind: str, describe: Callable[[dict[str, Any], str], SearchFields], folder: str, default: str
) -> SearchHook:
    """The search hook of items of ``kind``: ``describe(document, folder path)``, the folder
    path being the version's ``meta[folder]`` (these items have no content of their own)."""

    async def search_fields(
        version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
    ) -> SearchFields | None:
        if version.kind != kind or document is None:
            return None
        return describe(document, str((version.meta or {}).get(folder) or default))

    return search_fields


# ---- the original form: a file rendered from the stored document ---------------------------


class FileType(NamedTuple):
    media_type: str
    suffix: str  # "ics", "vcf"
    form: str  # what it is, for errors: "an ICS form"


class RenderedForm:
    """How items of one kind are handed out as files, their stored document rendered on
    demand. A service subclasses it: which kind, which file type, and how to name, render and
    place one item."""

    kind: ClassVar[str]  # the catalog kind that has this form ("event", "contact")
    file: ClassVar[FileType]

    def filename(self, version: ItemVersion) -> str:
        raise NotImplementedError

    def render(self, repo: TenantRepository, document: dict[str, Any]) -> AsyncIterator[bytes]:
        raise NotImplementedError

    def default_folder(self, version: ItemVersion) -> str:
        """The folder an exported item goes in when the selection does not hold its own."""
        raise NotImplementedError

    async def stream(self, repo: TenantRepository, version: ItemVersion) -> AsyncIterator[bytes]:
        document = await read_document(repo, version)
        if document is None:
            return
        async for piece in self.render(repo, document):
            yield piece

    async def content(self, repo: TenantRepository, version: ItemVersion) -> Content:
        if version.kind != self.kind or not version.document:
            raise ValueError(f"only {self.kind}s have {self.file.form}")
        return rendered_content(
            version,
            media_type=self.file.media_type,
            filename=self.filename(version),
            suffix=self.file.suffix,
            render=partial(self.stream, repo, version),
        )

    async def export(self, ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
        """One file per item, in its folder path."""
        async for version in selection.items():
            if version.kind != self.kind or not version.document:
                continue
            folder = selection.path_of(version.parent_external_id) or [self.default_folder(version)]
            yield ExportEntry(
                path="/".join([*(component(n) for n in folder), self.filename(version)]),
                open=partial(self.stream, ctx.repo, version),
                version=version,
                modified_at=version.modified_at,
            )


# ---- restore: create the item again in a target container ----------------------------------


@dataclass
class Created:
    """What a subclass's ``create`` made of one item: created with ``identity.started`` and
    stamped by ``ItemRestore`` once whole, or, when nothing follows its create request,
    stamped by that request (``stamped``)."""

    id: str
    stamped: bool = False
    # Set when the item was created but a part of it was not (an attachment, a photo):
    # reported as ``partially_restored`` with this detail, and the copy is never stamped.
    problem: str | None = None
    note: str | None = None  # said with a successful restore


class MailboxWriter:
    """Where a restore into one mailbox starts: the target user's mailbox in Graph, written
    with immutable ids (so the ids it answers are the ones a later backup sees)."""

    def __init__(self, ctx: RestoreContext) -> None:
        self.ctx = ctx
        self.graph = ctx.graph
        self.user = ctx.target.graph_id
        self.base = f"/users/{quote(self.user, safe='')}"
        self.headers = prefer(immutable_id=True)

    async def send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        expected: tuple[int, ...] = (201, 200),
    ) -> dict[str, Any] | None:
        return await self.graph.request_json(
            method, path, json=body, headers=self.headers, mailbox=self.user, expected=expected
        )

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an item (a folder, an attachment) in the target mailbox."""
        created = await self.send("POST", path, body)
        assert created is not None
        return created


class ItemRestore(MailboxWriter):
    """The restore skeleton of one account's Outlook items: each item's stored document is
    created again in the target container that ``container`` names, unless the conflict rule
    says an earlier copy found there (by Graph id in place, else by Safekeep's stamp) stays;
    with ``overwrite``, the earlier copies are deleted once the new item is whole. The new
    item is stamped only then (``identity``: written last), so one left incomplete is never
    taken as restored; a later restore that makes it whole takes the incomplete copy out."""

    noun: ClassVar[str]  # "event", "contact": for reports
    items: ClassVar[str]  # the collection an item is addressed in: /users/{id}/<items>/{item}
    index_select: ClassVar[str] = "id"

    def __init__(self, ctx: RestoreContext, selection: Selection) -> None:
        super().__init__(ctx)
        self.selection = selection
        self.in_place = identity.in_place(ctx.source.id, ctx.target.id, ctx.folder_mode)
        self._indexes: dict[str, identity.TargetIndex] = {}
        self._index_locks: dict[str, asyncio.Lock] = {}

    async def restore(self) -> None:
        await restore_each(self.ctx, self.selection, self._restore_one, concurrency=CONCURRENCY)

    async def container(self, source_parent: str | None) -> str:
        """The id of the container items of ``source_parent`` go to (made if missing)."""
        raise NotImplementedError

    def listing(self, container: str) -> str:
        """The path listing a container's items."""
        raise NotImplementedError

    async def create(
        self, container: str, version: ItemVersion, document: dict[str, Any]
    ) -> Created:
        raise NotImplementedError

    async def _index(self, container: str) -> identity.TargetIndex:
        """What the container holds, by identity (Graph id and Safekeep's stamp), read once."""
        async with self._index_locks.setdefault(container, asyncio.Lock()):
            index = self._indexes.get(container)
            if index is None:
                index = identity.TargetIndex()
                async for values in self.graph.paginate(
                    self.listing(container),
                    params={"$select": self.index_select, "$expand": identity.EXPAND},
                    headers=prefer(max_page_size=INDEX_PAGE_SIZE, immutable_id=True),
                    mailbox=self.user,
                ):
                    for item in values:
                        index.add(item)
                self._indexes[container] = index
            return index

    async def delete(self, item_id: str) -> None:
        """Delete an item of the target (one already gone is as good)."""
        await self.send(
            "DELETE",
            f"{self.base}/{self.items}/{quote(item_id, safe='')}",
            expected=(204, 200, 404),
        )

    async def discard(self, item_id: str) -> None:
        """Take out an item whose restore stopped half-way (an attachment not added because
        the store or Graph was unavailable), so that the job's retry, which makes it whole,
        does not meet the half-made copy as one already there."""
        try:
            await asyncio.shield(self.delete(item_id))
        except Exception:
            log.info("restore_discard_failed", item=item_id, exc_info=True)

    async def seal(self, item_id: str, version: ItemVersion) -> None:
        """Stamp an item whose every part is in: from now on it is restored. If the stamp
        cannot be written, the unstamped item is taken out again (the error is the item's,
        or the job's to retry), so that no copy is left beside the one a rerun makes."""
        try:
            await self.send(
                "PATCH",
                f"{self.base}/{self.items}/{quote(item_id, safe='')}",
                {identity.EXTENDED: identity.stamp(version, self.ctx.job_id)},
                expected=(200, 204),
            )
        except BaseException:
            await self.discard(item_id)
            raise

    async def drop_leftovers(self, leftovers: list[str]) -> None:
        """Take out incomplete copies an earlier restore left of an item now restored whole.
        They are Safekeep's (marked, never stamped): best effort, a later restore tries again."""
        for old in leftovers:
            try:
                await self.delete(old)
            except GraphError:
                log.info("restore_leftover_not_removed", item=old, exc_info=True)

    async def _restore_one(self, version: ItemVersion) -> None:
        document = await read_document(self.ctx.repo, version)
        if document is None:
            await self.ctx.report.failed(
                version, code="no_document", detail=f"this version has no stored {self.noun}"
            )
            return
        container = await self.container(version.parent_external_id)
        existing: list[str] = []
        index: identity.TargetIndex | None = None
        job = self.ctx.job_id
        if self.ctx.conflict != "keep_both":
            index = await self._index(container)
            graph_id = self.selection.external_id(version) if self.in_place else None
            existing = index.existing(version, graph_id)
            if existing and self.ctx.conflict == "skip":
                await self.ctx.report.existing(version, target_id=existing[0])
                return
        elif self.ctx.retry and job is not None:
            # keep_both writes beside whatever is there, except what this very job wrote on
            # an earlier attempt (its stamp says so): that copy is the item restored.
            index = await self._index(container)
            mine = index.restored_by(version, job)
            if mine is not None:
                await self.ctx.report.restored(version, target_id=mine)
                return
        created = await self.create(container, version, document)
        # Earlier incomplete copies go once this one is at least as far (under keep_both,
        # which leaves whatever is there, only those an earlier attempt of this job left).
        leftovers: list[str] = []
        if index is not None:
            keeps = self.ctx.conflict == "keep_both"
            leftovers = index.leftovers(version, job if keeps else None)
        if created.problem is not None:
            # Left unstamped: a later restore does not take it as there, makes the item
            # again, and takes this copy out; the earlier copies it would replace stay.
            await self.drop_leftovers(leftovers)
            if index is not None:
                index.forget(leftovers)
            await self.ctx.report.failed(
                version, code="partially_restored", detail=f"{created.problem}{INCOMPLETE}"
            )
            return
        if not created.stamped:
            await self.seal(created.id, version)
        if index is not None:
            index.remember(version, created.id, job)
        for old in existing if self.ctx.conflict == "overwrite" else []:
            await self.delete(old)
        await self.drop_leftovers(leftovers)
        if index is not None:
            index.forget(existing + leftovers)
        await self.ctx.report.restored(version, target_id=created.id, note=created.note)
