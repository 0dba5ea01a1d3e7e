"""Writing one backup run of one account and service into the catalog.

A run is a snapshot with a sequence number ``seq`` per account and service. Collectors feed
it page by page; each page is one database transaction that holds the item versions it
changed *and* the delta link that covers them, written after the page's blobs are durable.
A run cut short leaves its snapshot ``running``; the next run resumes the same snapshot from
the saved link, and re-recording an item within the same snapshot replaces rather than
duplicates it. So a crash at any moment loses nothing and duplicates nothing.

Versions: recording an item whose current version has the same change key costs nothing;
otherwise the current version is closed at ``seq - 1`` and a new one opens at ``seq``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.backup.detection import RunStats
from safekeep.backup.indexing import index_after_commit, search_document
from safekeep.runtime import Runtime, unit_of_work
from safekeep.search.documents import SearchDocument
from safekeep.storage.repository import ContentRef
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.models import (
    UNFINISHED_SNAPSHOT,
    DeltaState,
    Item,
    ItemVersion,
    JobTask,
    Snapshot,
    SnapshotStatus,
    TaskStatus,
    utcnow,
)
from safekeep.text import storable_text

log = structlog.get_logger(__name__)

Outcome = Literal["added", "changed", "unchanged", "replaced"]
HEARTBEAT_SECONDS = 2.0


@dataclass
class SearchFields:
    """What the search index needs of one version, beyond what the catalog knows."""

    title: str
    folder_path: str = "/"
    date: datetime | None = None
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    location: str | None = None
    body: str = ""
    attachment_names: list[str] = field(default_factory=list)
    attachment_text: str = ""
    has_attachments: bool = False
    file_type: str | None = None


@dataclass
class ItemRecord:
    """One item as a collector saw it, its bytes already stored."""

    external_id: str
    kind: str
    name: str
    parent_external_id: str | None = None
    size: int = 0
    modified_at: datetime | None = None
    change_key: str | None = None
    content: ContentRef | None = None  # the item's own bytes (MIME, file)
    document: ContentRef | None = None  # its Graph JSON, for a faithful restore
    # Every other blob the version needs (attachments, photos referenced from the document):
    # the garbage collector keeps exactly what content, document and refs name.
    refs: list[ContentRef] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    search: SearchFields | None = None


# An item's name as the catalog keeps it: bounded, and storable (U+0000, which anyone who can
# send mail may put in a subject, and a lone surrogate as U+FFFD: see safekeep.text) on both
# databases, so an item whose name is unchanged compares equal to what was stored.
NAME_MAX_CHARS = 1000


def stored_name(name: str) -> str:
    return storable_text(name[:NAME_MAX_CHARS])


@dataclass
class RunCounters:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    bytes: int = 0
    skipped: int = 0

    @property
    def items(self) -> int:
        return self.added + self.changed + self.removed


class Cancelled(Exception):
    """The job was cancelled; the run stops between pages and stays resumable."""


class SnapshotRun:
    """One account and service being backed up into snapshot ``seq``."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        msp_id: uuid.UUID,
        tenant_id: uuid.UUID,
        account_id: uuid.UUID,
        service: str,
        snapshot: Snapshot,
        task_id: uuid.UUID | None,
        job_id: uuid.UUID | None,
        resumed: bool,
    ) -> None:
        self.runtime = runtime
        self.msp_id = msp_id
        self.tenant_id = tenant_id
        self.account_id = account_id
        self.service = service
        self.snapshot_id = snapshot.id
        self.seq = snapshot.seq
        self.started_at = snapshot.started_at
        self.task_id = task_id
        self.job_id = job_id
        self.resumed = resumed
        self.counters = RunCounters()
        self.stats = RunStats()  # what detection judges when the run completes
        self.pending_index: list[SearchDocument] = []
        # Collections this run kept seen rows for (``mark_seen``; a page that rolled back may
        # have kept none, which only costs a needless delete).
        self.marked_seen: set[str] = set()
        # Delta links of rounds that changed nothing (``quiet``), written by ``complete``.
        self._quiet: dict[str, str] = {}
        # Versions the search backend has taken, marked indexed in the next transaction.
        self._indexed: list[uuid.UUID] = []
        # Claiming the task has just written its heartbeat.
        self._last_beat = time.monotonic()

    @classmethod
    async def begin(
        cls,
        runtime: Runtime,
        *,
        msp_id: uuid.UUID,
        tenant_id: uuid.UUID,
        account_id: uuid.UUID,
        service: str,
        job_id: uuid.UUID | None = None,
        task_id: uuid.UUID | None = None,
        session: AsyncSession | None = None,
        new_snapshot_id: uuid.UUID | None = None,
        task_names: uuid.UUID | None = None,
    ) -> SnapshotRun:
        """Resume this account and service's unfinished snapshot, or start the next one.

        With ``session`` it joins the caller's transaction (the one that claims the task:
        the lease and the snapshot it runs into commit together, one transaction fewer
        per task); otherwise it commits on its own. ``new_snapshot_id``: the id a new
        snapshot takes; ``task_names``: the snapshot the task's row names already (its claim
        wrote the one it expected this to choose): when it is right, the task needs no
        statement of its own to name it."""
        if session is None:
            async with unit_of_work(runtime) as own:
                return await cls.begin(
                    runtime,
                    msp_id=msp_id,
                    tenant_id=tenant_id,
                    account_id=account_id,
                    service=service,
                    job_id=job_id,
                    task_id=task_id,
                    session=own,
                    new_snapshot_id=new_snapshot_id,
                    task_names=task_names,
                )
        snapshot, resumed = await cls._snapshot(
            session,
            tenant_id,
            account_id,
            service,
            job_id,
            new_snapshot_id,
            none_running=task_names is not None and task_names == new_snapshot_id,
        )
        if task_id is not None and task_names != snapshot.id:
            await job_repository.name_snapshot(session, task_id, snapshot.id)
        return cls(
            runtime,
            msp_id=msp_id,
            tenant_id=tenant_id,
            account_id=account_id,
            service=service,
            snapshot=snapshot,
            task_id=task_id,
            job_id=job_id,
            resumed=resumed,
        )

    @staticmethod
    async def _snapshot(
        session: AsyncSession,
        tenant_id: uuid.UUID,
        account_id: uuid.UUID,
        service: str,
        job_id: uuid.UUID | None,
        new_snapshot_id: uuid.UUID | None,
        *,
        none_running: bool = False,
    ) -> tuple[Snapshot, bool]:
        """The snapshot to run into, and whether it is resumed. ``none_running``: the task's
        claim, in this transaction, found no running snapshot (it named ``new_snapshot_id``):
        the new one is inserted without reading the newest first. Either way a new snapshot
        is one ``INSERT`` that counts its own seq."""
        if not none_running:
            latest = await catalog.latest_snapshot(session, account_id, service)
            if latest is not None and latest.status in UNFINISHED_SNAPSHOT:
                latest.status = SnapshotStatus.running  # an interrupted one runs again
                if job_id is not None:
                    latest.job_id = job_id
                return latest, True
        values: dict[str, Any] = {
            "id": new_snapshot_id or uuid.uuid4(),
            "tenant_id": tenant_id,
            "account_id": account_id,
            "service": service,
            "job_id": job_id,
            "status": SnapshotStatus.running,
            "started_at": utcnow(),
        }
        # A plain INSERT, not the session's unit of work (a large share of a short task's
        # cost); the run only reads the row's id, seq and start, from this copy.
        seq = await catalog.insert_next_snapshot(session, values)
        return Snapshot(**values, seq=seq), False

    # ---- delta state ---------------------------------------------------------------

    async def delta_links(self) -> dict[str, DeltaState]:
        async with unit_of_work(self.runtime) as session:
            states = await catalog.delta_states(session, self.account_id, self.service)
        return {s.collection: s for s in states}

    async def current(self, external_ids: Collection[str]) -> dict[str, ItemVersion]:
        """The stored current versions of these items (read-only; use it to decide what a
        page needs fetched before opening the page's transaction)."""
        async with unit_of_work(self.runtime) as session:
            return await catalog.open_versions_by_external_ids(
                session, self.account_id, self.service, list(external_ids)
            )

    def quiet(self, collection: str, delta_link: str) -> None:
        """A delta round of ``collection`` that had nothing to write ended at ``delta_link``.
        The link is written by ``complete``, in the transaction that ends the run: most
        containers of an incremental are unchanged, and a transaction of their own was one
        of an unchanged task's four. A run that ends otherwise only replays these rounds
        next time; a page of the same collection saved later in this run supersedes it."""
        self._quiet[collection] = delta_link

    def indexed(self, version_ids: Iterable[uuid.UUID]) -> None:
        """These versions are in the search index: the run's next transaction (the next
        page's, or the one that completes the run) marks them so. A page's own transaction
        for it was one of every two a changed page cost; what a run that stops never marks,
        the scheduler's sweep sends again. At most a page's versions wait here."""
        self._indexed.extend(version_ids)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        """The run's next transaction (a page's, or the completing one): it also writes the
        waiting indexed marks, and gives them back if it does not commit."""
        marks, self._indexed = self._indexed, []
        try:
            async with unit_of_work(self.runtime) as session:
                yield session
                await catalog.mark_indexed(session, marks)
        except BaseException:
            self._indexed[:0] = marks
            raise

    def superseded(self, collection: str) -> None:
        """A page saved or dropped ``collection``'s delta state: a quiet link held for it
        is older than what the page wrote, and must not be written over it."""
        self._quiet.pop(collection, None)

    # ---- pages ---------------------------------------------------------------------

    def may_hold_seen(self, collection: str) -> bool:
        """Whether ``enumeration_seen`` may hold this snapshot's rows for ``collection``: a
        resumed snapshot's earlier attempts may have left some; a new one holds only what
        this run marked (a first backup's folders start with nothing to forget)."""
        return self.resumed or collection in self.marked_seen

    @asynccontextmanager
    async def page(self) -> AsyncIterator[CatalogPage]:
        """One durable step: everything recorded inside commits together, then is indexed."""
        page = CatalogPage(self)
        async with self._transaction() as session:
            page.session = session
            yield page
            await page.finish()
        self.counters.added += page.counters.added
        self.counters.changed += page.counters.changed
        self.counters.removed += page.counters.removed
        self.counters.unchanged += page.counters.unchanged
        self.counters.bytes += page.counters.bytes
        await self._index(page)

    async def _index(self, page: CatalogPage) -> None:
        """Indexing never fails a backup: what does not index now is retried by its own job."""
        await index_after_commit(self, page.indexed_docs, page.closed, page.dropped)

    async def heartbeat(
        self,
        *,
        items: int = 0,
        bytes_: int = 0,
        skipped: int = 0,
        requests: int = 0,
        throttled: int = 0,
        errors: int = 0,
    ) -> None:
        """Progress for the API, proof of life for the task's lease, and the cancel check
        (raises Cancelled after the progress is saved).

        Written at most every ``HEARTBEAT_SECONDS`` (a quarter of the lease when that is
        shorter; ``complete`` writes the last figures): a mailbox of small folders ends a
        page every few items, and a transaction of three statements per page was a large
        share of its cost. A cancel is noticed within that interval."""
        if self.task_id is None:
            return
        interval = min(HEARTBEAT_SECONDS, self.runtime.settings.task_lease_seconds / 4)
        now_mono = time.monotonic()
        if now_mono - self._last_beat < interval:
            return
        self._last_beat = now_mono
        cancelled = False
        async with unit_of_work(self.runtime) as session:
            task = await session.get(JobTask, self.task_id)
            if task is None:
                return
            now = utcnow()
            task.items = items
            task.bytes = bytes_
            task.skipped = skipped
            task.requests = requests
            task.throttled = throttled
            task.errors = errors
            task.heartbeat_at = now
            job = await job_repository.get_system(session, task.job_id)
            if job is not None:
                await job_repository.touch(session, job.id, now)
                cancelled = job.cancel_requested_at is not None
        if cancelled:
            raise Cancelled()

    async def complete(
        self,
        *,
        skipped: int = 0,
        requests: int | None = None,
        throttled: int | None = None,
        errors: int | None = None,
        then: Callable[[AsyncSession], Awaitable[None]] | None = None,
    ) -> None:
        """Finish the snapshot and, in the same transaction, its task with its last progress
        figures: a worker that dies in between cannot leave a finished snapshot under a task
        that looks unfinished (which would be run again into a needless new snapshot). No
        reads: every figure is known here. The same transaction marks the last page's
        versions indexed (``indexed``) and writes the quiet rounds' links (``quiet``).

        ``then`` runs last in that same transaction (judging the run, settling the job when
        this was its last task): what commits with the snapshot costs no transaction of its
        own, and if it fails the snapshot stays running for the retry to resume."""
        now = utcnow()
        async with self._transaction() as session:
            if self._quiet:
                await catalog.save_delta_states(
                    session,
                    tenant_id=self.tenant_id,
                    account_id=self.account_id,
                    service=self.service,
                    finished=self._quiet,
                    resumable={},
                    now=now,
                )
            if self.task_id is not None:
                figures: dict[str, int] = {}
                if requests is not None:
                    figures["requests"] = requests
                if throttled is not None:
                    figures["throttled"] = throttled
                if errors is not None:
                    figures["errors"] = errors
                await job_repository.settle_task(
                    session,
                    self.task_id,
                    status=TaskStatus.partial if skipped else TaskStatus.succeeded,
                    now=now,
                    items=self.counters.items,
                    bytes=self.counters.bytes,
                    skipped=skipped,
                    **figures,
                )
            found = await catalog.finish_snapshot(
                session,
                self.snapshot_id,
                account_id=self.account_id,
                service=self.service,
                status=SnapshotStatus.partial if skipped else SnapshotStatus.complete,
                completed_at=now,
                added=self.counters.added,
                changed=self.counters.changed,
                removed=self.counters.removed,
                bytes_added=self.counters.bytes,
                skipped=skipped,
            )
            assert found, "the snapshot of a running backup is gone"
            if then is not None:
                await then(session)


class CatalogPage:
    """The catalog changes of one page, inside one transaction."""

    session: AsyncSession

    def __init__(self, run: SnapshotRun) -> None:
        self.run = run
        self.counters = RunCounters()
        self._current: dict[str, ItemVersion | None] = {}
        # Items without an open version (gone once, now back), found by ``preload``.
        self._items: dict[str, Item | None] = {}
        self._records: list[tuple[ItemVersion, SearchFields]] = []
        self._dirty = False  # rows added or changed since the last flush
        self.indexed_docs: list[SearchDocument] = []
        self.closed: list[uuid.UUID] = []
        self.dropped: list[uuid.UUID] = []
        # Delta links saved on this page, written together when it ends (``finish``).
        self._finished: dict[str, str] = {}
        self._resumable: dict[str, tuple[str | None, int | None]] = {}

    async def preload(self, external_ids: Iterable[str]) -> None:
        """Load a whole page's items with their current versions in one query: recording
        them then costs no query of its own."""
        wanted = list(dict.fromkeys(e for e in external_ids if e not in self._current))
        if not wanted:
            return
        found = await catalog.items_with_open_versions(
            self.session, self.run.account_id, self.run.service, wanted
        )
        for external_id in wanted:
            item, version = found.get(external_id, (None, None))
            self._current[external_id] = version
            self._items.setdefault(external_id, item)

    async def current(self, external_id: str) -> ItemVersion | None:
        if external_id not in self._current:
            await self.preload([external_id])
        return self._current[external_id]

    async def is_current(self, external_id: str, change_key: str | None) -> bool:
        """True when this exact state is already stored: the caller need fetch nothing."""
        if change_key is None:
            return False
        version = await self.current(external_id)
        return version is not None and version.change_key == change_key

    async def record_many(self, records: Iterable[ItemRecord]) -> None:
        """Record a page's items: one query finds what is stored, and the new rows go to the
        database together when the page flushes (at ``save_delta`` or commit)."""
        records = list(records)
        await self.preload(r.external_id for r in records)
        for rec in records:
            await self.record(rec)

    async def record(self, rec: ItemRecord) -> Outcome:
        """Record one item. Nothing is flushed here: ids are assigned in Python, so a page's
        inserts are sent together (one multi-row INSERT per table) when the page flushes.
        Call ``preload`` (or ``record_many``) first for a whole page: otherwise each item
        costs a query."""
        run = self.run
        version = await self.current(rec.external_id)
        previous = version
        if version is not None and rec.change_key is not None:
            same = (
                version.change_key == rec.change_key
                and version.parent_external_id == rec.parent_external_id
                and version.name == stored_name(rec.name)
            )
            if same and version.first_seq != run.seq:
                self.counters.unchanged += 1
                return "unchanged"
        stored = (
            (rec.content.size if rec.content else 0)
            + (rec.document.size if rec.document else 0)
            + sum(r.size for r in rec.refs)
        )
        if version is not None and version.first_seq == run.seq:
            # Seen earlier in this same snapshot (a replayed change, a resumed run): replace.
            self._fill(version, rec)
            outcome: Outcome = "replaced"
        else:
            if version is not None:
                version.last_seq = run.seq - 1
                version.valid_to = run.started_at
                self.closed.append(version.id)
            if version is not None:
                item_id = version.item_id
            else:
                item = await self._item(rec.external_id)
                if item is None:
                    item = Item(
                        id=uuid.uuid4(),
                        tenant_id=run.tenant_id,
                        account_id=run.account_id,
                        service=run.service,
                        external_id=rec.external_id,
                        kind=rec.kind,
                    )
                    self.session.add(item)
                    self._items[rec.external_id] = item
                item_id = item.id
            new = ItemVersion(
                id=uuid.uuid4(),
                item_id=item_id,
                tenant_id=run.tenant_id,
                account_id=run.account_id,
                service=run.service,
                first_seq=run.seq,
                last_seq=None,
                valid_from=run.started_at,
                valid_to=None,
            )
            self._fill(new, rec)
            self.session.add(new)
            outcome = "changed" if version is not None else "added"
            version = new
        self._dirty = True
        self._current[rec.external_id] = version
        if outcome == "added":
            self.counters.added += 1
        elif outcome == "changed":
            self.counters.changed += 1
        self.counters.bytes += stored
        run.stats.observe_record(previous, rec, outcome)
        if rec.search is not None:
            self._records.append((version, rec.search))
        return outcome

    async def _item(self, external_id: str) -> Item | None:
        if external_id not in self._items:
            self._items[external_id] = await catalog.get_item(
                self.session, self.run.account_id, self.run.service, external_id
            )
        return self._items[external_id]

    async def flush(self) -> None:
        """Send what ``record`` queued (before a query that must see it)."""
        if self._dirty:
            await self.session.flush()
            self._dirty = False

    @staticmethod
    def _fill(version: ItemVersion, rec: ItemRecord) -> None:
        version.kind = rec.kind
        version.parent_external_id = rec.parent_external_id
        version.name = stored_name(rec.name)
        version.size = rec.size
        version.modified_at = rec.modified_at
        version.change_key = rec.change_key[:500] if rec.change_key else None
        version.content = rec.content.to_json() if rec.content else None
        version.content_hash = rec.content.sha256 if rec.content else None
        version.document = rec.document.to_json() if rec.document else None
        version.refs = [r.to_json() for r in rec.refs]
        version.meta = rec.meta
        # A version with no search document (a folder, a calendar) has nothing to index:
        # left unindexed, it would count as the search index's backlog for ever.
        version.indexed = rec.search is None

    async def remove(self, external_id: str, *, only_if_parent: str | None = None) -> bool:
        """The item is gone (deleted, or moved out of ``only_if_parent``): end its version.
        Returns whether anything changed."""
        version = await self.current(external_id)
        if version is None:
            return False
        if only_if_parent is not None and version.parent_external_id != only_if_parent:
            return False  # it has moved elsewhere since; that record already superseded it
        await self._end(version)
        await self.session.flush()  # later subtree/unseen queries must see it ended
        self._current[external_id] = None
        return True

    async def _end(self, version: ItemVersion) -> None:
        run = self.run
        await self.flush()  # a version recorded on this page must exist before it is ended
        if version.first_seq == run.seq:
            # Created and removed within one unfinished snapshot: it never was in a view.
            self.dropped.append(version.id)
            await catalog.delete_version(self.session, version.id)
        else:
            version.last_seq = run.seq - 1
            version.valid_to = run.started_at
            self.closed.append(version.id)
        self.counters.removed += 1
        run.stats.observe_removal(version)

    async def remove_subtree(self, parent_external_id: str) -> int:
        """A folder vanished: end everything below it."""
        removed = 0
        await self.flush()
        stack = [parent_external_id]
        while stack:
            parent = stack.pop()
            for external_id, version in await catalog.open_versions_under(
                self.session, self.run.account_id, self.run.service, parent
            ):
                stack.append(external_id)
                await self._end(version)
                self._current[external_id] = None
                removed += 1
        await self.session.flush()
        return removed

    async def remove_unseen(
        self,
        kinds: Collection[str],
        seen: Collection[str],
        *,
        parent_external_id: str | None = None,
    ) -> int:
        """After a full enumeration (first run or resync): what was not seen is gone. Reads
        only ids of the open versions and ends the unseen ones in bulk statements, so memory
        and statements do not grow with whole versions of a large folder."""
        await self.flush()
        run = self.run
        rows = await catalog.open_version_keys(
            self.session,
            run.account_id,
            run.service,
            kinds,
            parent_external_id=parent_external_id,
        )
        return await self._end_keys([(e, v, f) for e, v, f in rows if e not in seen])

    async def mark_seen(self, collection: str, external_ids: Iterable[str]) -> None:
        """A full enumeration of ``collection`` saw these: kept with this page's
        transaction, read back by ``remove_unseen_in`` when the pass ends."""
        self.run.marked_seen.add(collection)
        await catalog.add_seen(self.session, self.run.snapshot_id, collection, list(external_ids))

    async def forget_seen(self, collection: str) -> None:
        """A full enumeration of ``collection`` starts (again) from its first page."""
        if self.run.may_hold_seen(collection):
            await catalog.clear_seen(self.session, self.run.snapshot_id, collection)

    async def remove_unseen_in(
        self, kinds: Collection[str], collection: str, *, parent_external_id: str | None = None
    ) -> int:
        """``remove_unseen`` for a pass that kept what it saw with ``mark_seen``: the
        database finds what is gone, and the pass's rows are dropped."""
        await self.flush()
        run = self.run
        rows = await catalog.open_version_keys_unseen(
            self.session,
            run.account_id,
            run.service,
            kinds,
            snapshot_id=run.snapshot_id,
            collection=collection,
            parent_external_id=parent_external_id,
        )
        removed = await self._end_keys(rows)
        await catalog.clear_seen(self.session, run.snapshot_id, collection)
        return removed

    async def _end_keys(self, gone: list[tuple[str, uuid.UUID, int]]) -> int:
        run = self.run
        ended = [v for _, v, first in gone if first != run.seq]
        dropped = [v for _, v, first in gone if first == run.seq]
        await catalog.end_versions(
            self.session, ended, last_seq=run.seq - 1, valid_to=run.started_at
        )
        await catalog.delete_versions(self.session, dropped)
        for external_id, _, _ in gone:
            self._current[external_id] = None
        self.closed.extend(ended)
        # Created and removed within one unfinished snapshot: never in a view.
        self.dropped.extend(dropped)
        self.counters.removed += len(gone)
        return len(gone)

    async def save_delta(
        self,
        collection: str,
        *,
        delta_link: str | None = None,
        resume_link: str | None = None,
    ) -> None:
        """``resume_link``: the next page of an unfinished pass; ``delta_link``: the pass
        finished and everything it covered is in this transaction.

        The link is written when the page ends, with every other link the page saved, in one
        statement (an unchanged mailbox saves a link per folder, and a read and a write each
        were most of its incremental); it commits with the page either way."""
        await self.flush()
        self._finished.pop(collection, None)
        self._resumable.pop(collection, None)
        self.run.superseded(collection)
        if delta_link is not None:
            self._finished[collection] = delta_link
        else:
            self._resumable[collection] = (resume_link, self.run.seq if resume_link else None)

    async def drop_delta(self, collection: str) -> None:
        self._finished.pop(collection, None)
        self._resumable.pop(collection, None)
        self.run.superseded(collection)
        state = await catalog.delta_state(
            self.session, self.run.account_id, self.run.service, collection
        )
        if state is not None:
            await catalog.delete_delta_state(self.session, state.id)

    async def _write_deltas(self) -> None:
        if not self._finished and not self._resumable:
            return
        await catalog.save_delta_states(
            self.session,
            tenant_id=self.run.tenant_id,
            account_id=self.run.account_id,
            service=self.run.service,
            finished=self._finished,
            resumable=self._resumable,
            now=utcnow(),
        )
        self._finished = {}
        self._resumable = {}

    async def finish(self) -> None:
        """Write the page's delta links and build search documents for the versions it
        opened (ids now assigned)."""
        await self.flush()
        await self._write_deltas()
        for version, fields in self._records:
            if version.id in self.dropped:
                continue
            self.indexed_docs.append(search_document(self.run.msp_id, version, fields))
