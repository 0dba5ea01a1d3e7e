"""The contract of one Microsoft 365 service (mail, calendar, contacts, onedrive, sharepoint).

Each service is a package ``safekeep/backup/services/<name>/`` whose ``SERVICE`` object does
five things over the same catalog: collect (Graph delta into versions and blobs), describe
for search, give back the original bytes, restore into Microsoft 365, and export as files.
The engine (jobs, restore and export jobs, the browse API) only ever talks to this contract.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import structlog

from safekeep.backup.catalog import SearchFields
from safekeep.backup.collect import CollectContext
from safekeep.backup.restore.failures import first_error, retries_the_job
from safekeep.graph.client import GraphClient
from safekeep.runtime import Runtime
from safekeep.storage.repository import ContentRef, TenantRepository
from safekeep.tenants.models import Account, ItemVersion, Tenant

ContentReader = Callable[[], Awaitable[bytes | None]]
log = structlog.get_logger(__name__)


async def read_document(repo: TenantRepository, version: ItemVersion) -> dict[str, Any] | None:
    """The Graph JSON stored with a version (None if it has none)."""
    if not version.document:
        return None
    data: dict[str, Any] = json.loads(await repo.read_bytes(ContentRef.from_json(version.document)))
    return data


def read_content(
    repo: TenantRepository,
    version: ItemVersion,
    *,
    start: int = 0,
    end_inclusive: int | None = None,
) -> AsyncIterator[bytes]:
    """The stored bytes of a version (MIME, file), streamed; ranges for HTTP Range."""
    if not version.content:
        raise ValueError("this version has no stored content")
    return repo.read(
        ContentRef.from_json(version.content), start=start, end_inclusive=end_inclusive
    )


# ---- browse: the original bytes ------------------------------------------------------------


@dataclass
class Content:
    """How to hand one version's original bytes to a client."""

    media_type: str
    filename: str
    size: int | None  # None when rendered on the fly (ICS, VCF) and not known in advance
    etag: str
    rangeable: bool  # stored bytes support Range; rendered ones do not
    open: Callable[[int, int | None], AsyncIterator[bytes]]  # (start, end_inclusive) -> bytes


# ---- restore -------------------------------------------------------------------------------

FolderMode = Literal["original", "new"]
ConflictRule = Literal["skip", "overwrite", "keep_both"]
# How Teams channel conversations come back: through the import API into a channel, or as an
# HTML transcript uploaded to the channel's files folder (other services ignore it).
ChannelMode = Literal["import", "transcript"]


class RestoreReport(Protocol):
    """Where a restore writer says what happened to each item (kept on the job)."""

    async def restored(
        self, version: ItemVersion, *, target_id: str | None, note: str | None = None
    ) -> None: ...
    async def existing(self, version: ItemVersion, *, target_id: str | None) -> None:
        """Already in the target as it was (the same item, or Safekeep's earlier copy of it)
        and left alone: not a failure."""
        ...

    async def skipped(self, version: ItemVersion, *, reason: str) -> None:
        """Not restored: something else holds its place and the rule said skip."""
        ...

    async def failed(self, version: ItemVersion, *, code: str, detail: str) -> None: ...
    async def observed(self, *, code: str, name: str, detail: str) -> None:
        """Something found in the target that is not part of the restore, e.g. files present
        now that were not there at the restore point (ransomware-encrypted copies)."""
        ...


@dataclass
class RestoreContext:
    runtime: Runtime
    tenant: Tenant
    graph: GraphClient
    repo: TenantRepository
    service: str
    source: Account  # whose backup is read
    target: Account  # where it is written (the same account, or another of the tenant)
    at: datetime  # the point in time (completed_at of the snapshot restored from)
    at_seq: int
    folder_mode: FolderMode
    new_folder_name: str  # "Restored 2026-11-27 15-20" when folder_mode == "new"
    conflict: ConflictRule
    report: RestoreReport
    channels: ChannelMode = "import"
    # The restore job (stamped on what it writes, so that a retry of the job finds it) and
    # whether this is a later attempt of it (an earlier one may have written some items).
    job_id: uuid.UUID | None = None
    retry: bool = False


@dataclass
class Selection:
    """What to restore or export of one account and service, as of one snapshot.

    ``folders`` is the whole folder tree at that snapshot (external id -> folder version), so
    paths can be rebuilt; ``items()`` streams the selected non-folder versions page by page
    (memory stays bounded whatever the size); ``roots`` are the folders chosen when the
    scope was folders (restore them and everything below), else None.
    """

    folders: dict[str, ItemVersion]
    items: Callable[[], AsyncIterator[ItemVersion]]
    roots: set[str] | None = None
    whole: bool = False  # the whole account and service (not single items)
    extra: dict[str, Any] = field(default_factory=dict)
    # the Graph id of each version ``items()`` yields, for as long as the version is in use
    graph_ids: weakref.WeakKeyDictionary[ItemVersion, str] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def external_id(self, version: ItemVersion) -> str | None:
        """The item's id in Microsoft 365 when it was backed up."""
        return self.graph_ids.get(version)

    def path_of(self, parent_external_id: str | None) -> list[str]:
        """Folder names from the root down to this folder."""
        names: list[str] = []
        seen: set[str] = set()
        current = parent_external_id
        while current is not None and current in self.folders and current not in seen:
            seen.add(current)
            folder = self.folders[current]
            names.append(folder.name)
            current = folder.parent_external_id
        return list(reversed(names))


async def restore_each(
    ctx: RestoreContext,
    selection: Selection,
    restore_one: Callable[[ItemVersion], Awaitable[None]],
    *,
    concurrency: int,
) -> None:
    """Restore the selection's items a few at a time (memory stays bounded: items are pulled
    from the selection only as slots free up); one failing item never stops the rest, it is
    reported with the reason Graph or the service gave. An error that is the job's, not the
    item's (``restore/failures.py``: the store or Graph unavailable), stops the attempt so
    that the job is retried."""
    slots = asyncio.Semaphore(concurrency)

    async def one(version: ItemVersion) -> None:
        try:
            await restore_one(version)
        except Exception as exc:
            if retries_the_job(exc):
                raise
            log.warning(
                "item_restore_failed",
                service=ctx.service,
                item_id=str(version.item_id),
                error=str(exc)[:300],
            )
            await ctx.report.failed(
                version, code=str(getattr(exc, "reason", type(exc).__name__)), detail=str(exc)
            )
        finally:
            slots.release()

    try:
        async with asyncio.TaskGroup() as group:
            async for version in selection.items():
                await slots.acquire()
                group.create_task(one(version))
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def rendered_content(
    version: ItemVersion,
    *,
    media_type: str,
    filename: str,
    suffix: str,
    render: Callable[[], AsyncIterator[bytes]],
) -> Content:
    """Content rendered on the fly from the stored document (ICS, VCF): no known size, no
    ranges; the ETag follows the document it is rendered from."""
    document = version.document or {}

    def open_rendered(start: int = 0, end_inclusive: int | None = None) -> AsyncIterator[bytes]:
        return render()

    return Content(
        media_type=media_type,
        filename=filename,
        size=None,
        etag=f'"{document.get("sha256", version.id)}-{suffix}"',
        rangeable=False,
        open=open_rendered,
    )


# ---- export --------------------------------------------------------------------------------


@dataclass
class ExportEntry:
    """One file in the export ZIP, under ``<account>/<service>/``."""

    path: str  # relative, with forward slashes
    open: Callable[[], AsyncIterator[bytes]]
    version: ItemVersion | None  # None for aggregates such as an .mbox of a folder
    modified_at: datetime | None = None


@dataclass
class ExportContext:
    runtime: Runtime
    repo: TenantRepository
    account: Account
    service: str
    options: dict[str, Any]  # {"mbox": bool}


# ---- the contract --------------------------------------------------------------------------


class ServiceModule(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def folder_kinds(self) -> frozenset[str]:
        """Catalog kinds that are folders (containers) of this service."""
        ...

    # The engine passes arguments by position only, so a service may declare plain functions
    # (``ServiceHooks``) whatever their parameters are called.
    def collect(self, ctx: CollectContext, /) -> Awaitable[None]: ...

    def search_fields(
        self, version: ItemVersion, document: dict[str, Any] | None, content: ContentReader, /
    ) -> Awaitable[SearchFields | None]: ...

    def content(self, repo: TenantRepository, version: ItemVersion, /) -> Awaitable[Content]: ...

    def restore(self, ctx: RestoreContext, selection: Selection, /) -> Awaitable[None]: ...

    def export(self, ctx: ExportContext, selection: Selection, /) -> AsyncIterator[ExportEntry]: ...


@dataclass(frozen=True)
class ServiceHooks:
    """A service's engine side as plain functions, one from each file of its folder
    (``collect.py``, ``search.py``, ``render.py``, ``restore.py``, ``export.py``): what the
    folder's ``__init__`` declares as ``SERVICE``."""

    name: str
    folder_kinds: frozenset[str]
    collect: Callable[[CollectContext], Awaitable[None]]
    search_fields: Callable[
        [ItemVersion, dict[str, Any] | None, ContentReader], Awaitable[SearchFields | None]
    ]
    content: Callable[[TenantRepository, ItemVersion], Awaitable[Content]]
    restore: Callable[[RestoreContext, Selection], Awaitable[None]]
    export: Callable[[ExportContext, Selection], AsyncIterator[ExportEntry]]


def folder_service(package: str, *, folder_kinds: frozenset[str]) -> ServiceHooks:
    """The hooks of the service whose folder is ``package`` (its ``__init__`` passes
    ``__name__``), one from each of the folder's files by their fixed names:
    ``collect.collect``, ``search.search_fields``, ``render.content``, ``restore.restore`` and
    ``export.export``. A folder missing one fails at import, so every service has the same
    shape (tests/backup/test_registry.py checks each against its declaration)."""

    def hook(module: str, name: str) -> Any:
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return ServiceHooks(
        name=package.rpartition(".")[2],
        folder_kinds=folder_kinds,
        collect=hook("collect", "collect"),
        search_fields=hook("search", "search_fields"),
        content=hook("render", "content"),
        restore=hook("restore", "restore"),
        export=hook("export", "export"),
    )
