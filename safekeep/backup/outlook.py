"""What the mailbox services (mail, calendar, contacts) share: reading one mailbox
(``MailboxReader``) and writing into one (``MailboxWriter``). And what calendars and contacts
share beyond that: both keep an Outlook item (an event, a contact) as its Graph JSON with no
bytes of their own, so search describes it from that document (``document_search``), browse,
download and export render it as a file on demand (ICS, vCard: ``RenderedForm``), and a
restore creates it again in a target container (a calendar, a contact folder), stamped with
Safekeep's identity so that the conflict rule finds an earlier copy (``ItemRestore``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, NamedTuple
from urllib.parse import quote

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
from safekeep.graph.client import DeltaPage, prefer
from safekeep.graph.errors import GraphError, NotFound
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion

CONCURRENCY = 4  # items restored at once into one mailbox (Exchange allows 4 per mailbox)
INDEX_PAGE_SIZE = 500


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
    """What a subclass's ``create`` made of one item."""

    id: str
    # Set when the item was created but a part of it was not (an attachment, a photo):
    # reported as ``partially_restored`` with this detail.
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
    with ``overwrite``, the earlier copies are deleted once the new item exists."""

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
        if self.ctx.conflict != "keep_both":
            index = await self._index(container)
            graph_id = self.selection.external_id(version) if self.in_place else None
            existing = index.existing(version, graph_id)
            if existing and self.ctx.conflict == "skip":
                await self.ctx.report.existing(version, target_id=existing[0])
                return
        created = await self.create(container, version, document)
        if index is not None:
            index.remember(version, created.id)
        for old in existing if self.ctx.conflict == "overwrite" else []:
            with contextlib.suppress(NotFound):
                await self.send(
                    "DELETE", f"{self.base}/{self.items}/{quote(old, safe='')}", expected=(204, 200)
                )
        if index is not None:
            index.forget(existing)
        if created.problem is not None:
            await self.ctx.report.failed(version, code="partially_restored", detail=created.problem)
            return
        await self.ctx.report.restored(version, target_id=created.id, note=created.note)
