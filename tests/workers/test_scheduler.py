"""The scheduler: due tenants once (several replicas), the policy's cadence, manual backups
leave the schedule alone, lost jobs are sent again."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from safekeep.backup.jobs.purge import enqueue_retention
from safekeep.runtime import Runtime, unit_of_work
from safekeep.tenants.models import Job, JobKind, JobStatus, JobTrigger, Tenant, utcnow
from safekeep.tenants.schedule import service as schedule
from safekeep.workers.scheduler import recover_lost_jobs
from tests.factories import add_job, create_msp, create_tenant
from tests.fixtures.app import SentMessages
from tests.plans import statements


def test_next_run_keeps_the_grid_and_skips_missed_slots() -> None:
    start = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    assert schedule.next_run(start, start + timedelta(minutes=1), 3) == start + timedelta(hours=8)
    # the scheduler was down for 20 hours: one run now, the next slot on the grid after now
    assert schedule.next_run(start, start + timedelta(hours=20), 3) == start + timedelta(hours=24)
    assert schedule.interval(24) == timedelta(hours=1)


async def _due(runtime: Runtime, tenant: Tenant) -> None:
    async with runtime.db.session() as session:
        row = await session.get(Tenant, tenant.id)
        assert row is not None
        row.next_backup_at = utcnow() - timedelta(minutes=1)


async def due_tenant(runtime: Runtime) -> Tenant:
    """A tenant of a new MSP backed up four times a day, whose next backup was due a minute
    ago: what the scheduler's next tick must start."""
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp, policy={"backups_per_day": 4})
    await _due(runtime, tenant)
    return tenant


async def test_replicas_enqueue_a_due_tenant_once(
    worker_runtime: Runtime, sent: SentMessages
) -> None:
    runtime = worker_runtime
    tenant = await due_tenant(runtime)

    async def replica() -> list[object]:
        async with unit_of_work(runtime) as session:
            return list(await schedule.enqueue_due(session))

    results = await asyncio.gather(*(replica() for _ in range(4)))
    assert sum(len(r) for r in results) == 1
    assert sent.actors() == ["run_backup"]
    async with runtime.db.session() as session:
        jobs = (
            (await session.execute(select(Job).where(Job.tenant_id == tenant.id))).scalars().all()
        )
        row = await session.get(Tenant, tenant.id)
    assert [(j.kind, j.trigger) for j in jobs] == [(JobKind.backup, JobTrigger.scheduled)]
    assert row is not None and row.next_backup_at is not None
    assert timedelta(hours=5) < row.next_backup_at - utcnow() <= timedelta(hours=6)


async def test_a_replica_that_read_after_the_claim_does_not_claim_the_next_slot(
    worker_runtime: Runtime,
) -> None:
    """The race behind a once-flaky replica test: replica B lists the tenant as due, replica A
    claims it (its next slot is now in the future), then B loads the row and sees that future
    slot. B's compare-and-set must fail, not push the tenant a second interval away."""
    from safekeep.tenants.tenant import repository as tenant_repository

    runtime = worker_runtime
    tenant = await due_tenant(runtime)
    now = utcnow()
    async with unit_of_work(runtime) as session:
        row = await session.get(Tenant, tenant.id)
        assert row is not None and row.next_backup_at is not None
        first = row.next_backup_at
        claimed = await tenant_repository.claim_due(
            session, tenant.id, expected=first, next_at=now + timedelta(hours=6), now=now
        )
    assert claimed
    async with unit_of_work(runtime) as session:
        late = await tenant_repository.claim_due(
            session,
            tenant.id,
            expected=now + timedelta(hours=6),
            next_at=now + timedelta(hours=12),
            now=now,
        )
        row = await session.get(Tenant, tenant.id)
    assert not late
    assert row is not None and row.next_backup_at is not None
    assert timedelta(hours=5) < row.next_backup_at - utcnow() <= timedelta(hours=6)


async def test_not_due_unconsented_or_still_running_tenants_wait(
    worker_runtime: Runtime, sent: SentMessages
) -> None:
    runtime = worker_runtime
    msp = await create_msp(runtime)
    pending = await create_tenant(runtime, msp, consented=False)
    await _due(runtime, pending)
    busy = await create_tenant(runtime, msp)
    await _due(runtime, busy)
    async with runtime.db.session() as session:
        await add_job(session, busy.id, status=JobStatus.running)
    async with unit_of_work(runtime) as session:
        started = await schedule.enqueue_due(session)
    assert started == []
    assert sent.messages == []


async def test_lost_jobs_are_sent_again(worker_runtime: Runtime, sent: SentMessages) -> None:
    runtime = worker_runtime
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    an_hour_ago = utcnow() - timedelta(hours=1)
    async with runtime.db.session() as session:
        old = await add_job(
            session,
            tenant.id,
            kind=JobKind.restore,
            status=JobStatus.queued,
            updated_at=an_hour_ago,
        )
        await add_job(session, tenant.id, kind=JobKind.export, status=JobStatus.queued)
        # finished long ago: nothing to recover
        await add_job(session, tenant.id, status=JobStatus.succeeded, updated_at=an_hour_ago)
    assert await recover_lost_jobs() == 1
    assert [(m.actor, m.args) for m in sent.messages] == [("run_restore", (str(old.id),))]
    # touched: the next tick does not send it again straight away
    assert await recover_lost_jobs() == 0


async def test_retention_purges_start_once_a_day_in_one_read_of_every_tenant(
    worker_runtime: Runtime, sent: SentMessages
) -> None:
    """Each tenant whose policy keeps data for a limited time gets a purge job a day: one
    that had one in the last day waits, one with no retention gets none, and finding them
    is one statement however many tenants there are."""
    runtime = worker_runtime
    msp = await create_msp(runtime)
    kept = {"retention_days": 30}
    due = [await create_tenant(runtime, msp, name=f"Due {n}", policy=kept) for n in range(3)]
    purged = await create_tenant(runtime, msp, name="Purged", policy=kept)
    forever = await create_tenant(runtime, msp, name="No retention")
    async with runtime.db.session() as session:
        await add_job(
            session, purged.id, kind=JobKind.purge, created_at=utcnow() - timedelta(hours=23)
        )
    async with unit_of_work(runtime) as session:
        started = await enqueue_retention(session)
    async with runtime.db.session() as session:
        rows = await session.execute(
            select(Job.tenant_id).where(Job.id.in_(started), Job.kind == JobKind.purge)
        )
        jobs = list(rows.scalars())
    assert sorted(map(str, jobs)) == sorted(str(t.id) for t in due)
    assert forever.id not in jobs and purged.id not in jobs
    # the same day again: nothing more, found in one statement for the five tenants
    with statements(runtime) as sent_sql:
        async with unit_of_work(runtime) as session:
            assert await enqueue_retention(session) == []
    assert len(sent_sql) == 1, sent_sql
