"""What every per-service collector receives, how it reports what it could not read, and
which collector serves which service (``safekeep/backup/services/<service>/collect.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from safekeep.backup.catalog import SnapshotRun
from safekeep.graph.client import GraphClient
from safekeep.runtime import Runtime, unit_of_work
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Account, JobIssue, Policy, SkippedItem, Tenant, utcnow

# After this many failed reads of one item in one run, it is skipped (and tried next run).
ITEM_ATTEMPTS = 3


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
        """Report counters (and check for cancellation) between pages."""
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
