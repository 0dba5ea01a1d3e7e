"""What every per-service collector receives, how it reports what it could not read, and
which collector serves which service (``safekeep/backup/services/<service>/collect.py``)."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from safekeep.backup.catalog import SnapshotRun
from safekeep.graph.client import GraphClient
from safekeep.runtime import Runtime, unit_of_work
from safekeep.storage.repository import InFlight, TenantRepository
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Account, JobIssue, Policy, SkippedItem, Tenant, utcnow

# After this many failed reads of one item in one run, it is skipped (and tried next run).
ITEM_ATTEMPTS = 3
# Item bodies a worker holds in memory at once, across all the tasks on its event loop
# (MIME fetched through $batch, kept for text extraction until its page is built). Tasks
# run concurrently, so a per-task bound alone lets memory grow with the number of tasks.
HELD_BYTES = 48 * 1024 * 1024
_held: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, InFlight] = weakref.WeakKeyDictionary()


class KeptBytes:
    """A download's bytes kept as they pass, for its text, up to ``limit``: past that
    nothing is kept (``value`` is None) and the text is read from the stored copy, if at all.
    Keeping them spares reading back, decrypting, decompressing and hashing what was just
    stored."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._pieces: list[bytes] | None = []

    def add(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._pieces is not None and self._size <= self._limit:
            self._pieces.append(piece)
        else:
            self._pieces = None

    @property
    def value(self) -> bytes | None:
        return None if self._pieces is None else b"".join(self._pieces)


def held_bytes() -> InFlight:
    """This event loop's budget of item bytes held in memory (one is always admitted)."""
    loop = asyncio.get_running_loop()
    budget = _held.get(loop)
    if budget is None:
        budget = _held[loop] = InFlight(1_000_000, HELD_BYTES)
    return budget


@dataclass
class CollectContext:
    runtime: Runtime
    tenant: Tenant
    policy: Policy
    account: Account
    service: str
    graph: GraphClient
    repo: TenantRepository
    run: SnapshotRun
    job_id: uuid.UUID | None = None
    task_id: uuid.UUID | None = None
    skipped: int = 0
    errors: int = 0
    notes: dict[str, int] = field(default_factory=dict)

    async def skip(
        self,
        *,
        item_ref: str | None,
        name: str | None,
        code: str,
        detail: str,
        collection: str | None = None,
    ) -> None:
        """Record an item not backed up in this run, with a reason an MSP can act on. With an
        ``item_ref`` (its Graph id) it is also queued for the next run to try again."""
        self.skipped += 1
        async with unit_of_work(self.runtime) as session:
            if self.job_id is not None:
                session.add(
                    JobIssue(
                        job_id=self.job_id,
                        task_id=self.task_id,
                        account_id=self.account.id,
                        service=self.service,
                        item_ref=(item_ref or "")[:500] or None,
                        item_name=(name or "")[:500] or None,
                        code=code[:60],
                        detail=detail[:4000],
                    )
                )
            if item_ref:
                row = await catalog.skipped_item(session, self.account.id, self.service, item_ref)
                if row is None:
                    session.add(
                        SkippedItem(
                            tenant_id=self.tenant.id,
                            account_id=self.account.id,
                            service=self.service,
                            external_id=item_ref[:500],
                            collection=collection,
                            name=(name or "")[:500] or None,
                            code=code[:60],
                            detail=detail[:4000],
                        )
                    )
                else:
                    row.attempts += 1
                    row.code = code[:60]
                    row.detail = detail[:4000]
                    row.last_attempt_at = utcnow()

    async def retries(self) -> list[SkippedItem]:
        """Items earlier runs skipped: try these again (by id) before or after the delta."""
        async with unit_of_work(self.runtime) as session:
            return await catalog.skipped_items(session, self.account.id, self.service)

    async def resolved(self, external_ids: list[str]) -> None:
        """These skipped items are now backed up (or gone): drop them from the retry list."""
        async with unit_of_work(self.runtime) as session:
            await catalog.delete_skipped(session, self.account.id, self.service, external_ids)

    async def progress(self) -> None:
        """Report counters (and check for cancellation) between pages; at most every few
        seconds (see ``SnapshotRun.heartbeat``; the last figures go with ``complete``)."""
        c = self.run.counters
        stats = self.graph.stats
        await self.run.heartbeat(
            items=c.items,
            bytes_=c.bytes,
            skipped=self.skipped,
            requests=stats.requests,
            throttled=stats.throttled,
            errors=self.errors,
        )


Collector = Callable[[CollectContext], Awaitable[None]]


def collector_for(service: str) -> Collector:
    from safekeep.backup.services import module_for

    return module_for(service).collect
