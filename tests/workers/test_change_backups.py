"""The scheduler's continuous-protection steps: a change-driven incremental that has to wait
for a running scheduled backup keeps its dirty marks and goes in the next round, the tenant's
rpo_minutes cuts a long debounce short, and a protected user Graph cannot notify about (no
mailbox, no OneDrive) costs no sync message per tick."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from safekeep.backup.subscriptions import sync_tenant
from safekeep.runtime import Runtime, unit_of_work
from safekeep.tenants.models import (
    Account,
    GraphSubscription,
    Job,
    JobStatus,
    JobTrigger,
    Tenant,
    utcnow,
)
from safekeep.tenants.subscription import repository as subscription_repository
from safekeep.tenants.subscription import service as subscription_service
from safekeep.workers.scheduler import back_up_changes, sync_subscriptions
from tests.factories import add_job, add_subscription, create_account, create_msp, create_tenant
from tests.fixtures.app import SentMessages


async def rpo_tenant(runtime: Runtime, **policy: object) -> Tenant:
    """A tenant of a new MSP under continuous protection: its policy asks for a 15-minute
    rpo (and whatever else ``policy`` sets)."""
    msp = await create_msp(runtime)
    return await create_tenant(runtime, msp, policy={"rpo_minutes": 15, **policy})


async def dirty_since(runtime: Runtime, row: GraphSubscription) -> object:
    async with runtime.db.session() as session:
        found = await session.get(GraphSubscription, row.id)
    assert found is not None
    return found.dirty_since


async def test_marks_wait_for_a_running_scheduled_backup_and_go_in_the_next_round(
    worker_runtime: Runtime, sent: SentMessages
) -> None:
    runtime = worker_runtime
    tenant = await rpo_tenant(runtime)
    user = await create_account(runtime, tenant)
    # Dirty far beyond the rpo: the deadline has passed, yet a backup of this tenant runs.
    mail = await add_subscription(runtime, tenant, user, "mail", dirty_for=timedelta(hours=1))
    drive = await add_subscription(
        runtime, tenant, user, "onedrive", dirty_for=timedelta(minutes=5)
    )
    first_mark = await dirty_since(runtime, mail)
    async with runtime.db.session() as session:
        scheduled = await add_job(
            session, tenant.id, status=JobStatus.running, trigger=JobTrigger.scheduled
        )
    for _tick in range(3):
        assert await back_up_changes() == 0
    assert sent.actors() == []
    # The marks survived the wait unchanged (the first notification's time is kept).
    assert await dirty_since(runtime, mail) == first_mark
    assert await dirty_since(runtime, drive) is not None

    async with runtime.db.session() as session:
        found = await session.get(Job, scheduled.id)
        assert found is not None
        found.status = JobStatus.succeeded
    assert await back_up_changes() == 1
    assert sent.actors() == ["run_backup"]
    async with runtime.db.session() as session:
        stmt = select(Job).where(Job.tenant_id == tenant.id, Job.trigger == JobTrigger.change)
        [change] = (await session.execute(stmt)).scalars().all()
    assert change.params == {"account_ids": [str(user.id)], "services": ["mail", "onedrive"]}
    assert await dirty_since(runtime, mail) is None
    assert await dirty_since(runtime, drive) is None
    # Nothing left: the next tick starts nothing more.
    assert await back_up_changes() == 0


async def test_a_busy_tenant_does_not_crowd_out_another(
    worker_runtime: Runtime, sent: SentMessages
) -> None:
    runtime = worker_runtime
    msp = await create_msp(runtime)
    busy = await create_tenant(runtime, msp, name="Busy", policy={"rpo_minutes": 15})
    quiet = await create_tenant(runtime, msp, name="Quiet", policy={"rpo_minutes": 15})
    for n in range(3):
        account = await create_account(runtime, busy, name=f"Busy User{n}")
        await add_subscription(runtime, busy, account, "mail", dirty_for=timedelta(hours=2))
    other = await create_account(runtime, quiet)
    waiting = await add_subscription(runtime, quiet, other, "mail", dirty_for=timedelta(hours=1))
    async with runtime.db.session() as session:
        await add_job(session, busy.id, status=JobStatus.queued)
    async with runtime.db.session() as session:
        # The busy tenant's older rows are left out before the limit is applied.
        rows = await subscription_repository.dirty_with_rpo(session, utcnow(), 1)
    assert [row.id for row, _rpo in rows] == [waiting.id]
    assert [rpo for _row, rpo in rows] == [15]
    assert await back_up_changes() == 1
    assert sent.actors() == ["run_backup"]


async def test_a_user_graph_cannot_notify_about_costs_no_sync_per_tick(
    worker_runtime: Runtime, sent: SentMessages
) -> None:
    runtime = worker_runtime
    tenant = await rpo_tenant(runtime)
    bare = await create_account(runtime, tenant, name="No Mailbox")
    async with runtime.db.session() as session:
        found = await session.get(Account, bare.id)
        assert found is not None
        found.services_found = {"mail": False, "onedrive": False, "teams": False}
    for _tick in range(3):
        assert await sync_subscriptions() == 0
    assert sent.actors() == []
    # And if the tenant is synced anyway, that user gets no row and costs no Graph call.
    result = await sync_tenant(runtime, str(tenant.id))
    assert (result.created, result.failed) == (0, 0)
    async with runtime.db.session() as session:
        assert await subscription_repository.for_tenant(session, tenant.id) == []

    # A user with a mailbox does count, once: it needs its subscriptions made.
    await create_account(runtime, tenant, name="Has Mailbox")
    assert await sync_subscriptions() == 1
    assert sent.actors() == ["sync_subscriptions"]


async def test_a_policy_without_notifiable_services_costs_no_sync_per_tick(
    worker_runtime: Runtime, sent: SentMessages
) -> None:
    runtime = worker_runtime
    tenant = await rpo_tenant(runtime, services=["sharepoint"])
    await create_account(runtime, tenant)
    assert await sync_subscriptions() == 0
    assert sent.actors() == []


async def test_slow_incrementals_start_earlier_and_one_round_takes_every_dirty_row(
    worker_runtime: Runtime, sent: SentMessages
) -> None:
    """The margin left before the rpo is what the tenant's own incrementals take: with the
    last ones taking 6 minutes, a 15-minute rpo and a 1-minute tick start a dirty account
    after 8 minutes, not after 12. The round takes the tenant's fresher rows too."""
    runtime = worker_runtime
    tenant = await rpo_tenant(runtime)
    user = await create_account(runtime, tenant)
    second = await create_account(runtime, tenant, name="Second User")
    now = utcnow()
    async with runtime.db.session() as session:
        for took in (timedelta(minutes=3), timedelta(minutes=6)):
            await add_job(
                session,
                tenant.id,
                trigger=JobTrigger.change,
                created_at=now - timedelta(hours=2),
                finished_at=now - timedelta(hours=2) + took,
            )
    async with runtime.db.session() as session:
        assert await subscription_service.incremental_margin(session, tenant.id) == timedelta(
            minutes=6
        )
    old = await add_subscription(
        runtime, tenant, user, "mail", dirty_for=timedelta(minutes=7, seconds=30)
    )
    fresh = await add_subscription(
        runtime, tenant, second, "onedrive", dirty_for=timedelta(seconds=5)
    )
    debounce, tick = timedelta(hours=1), timedelta(minutes=1)

    async def round_at(offset: timedelta) -> list[uuid.UUID]:
        async with unit_of_work(runtime) as session:
            return await subscription_service.enqueue_changed(
                session, debounce=debounce, scheduler_interval=tick, now=now + offset
            )

    # 7.5 minutes dirty: under the 15 - 6 - 1 = 8 minute deadline, nothing yet.
    assert await round_at(timedelta(0)) == []
    assert sent.actors() == []
    [job_id] = await round_at(timedelta(seconds=31))
    assert sent.actors() == ["run_backup"]
    async with runtime.db.session() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    assert job.params == {
        "account_ids": sorted([str(user.id), str(second.id)]),
        "services": ["mail", "onedrive"],
    }
    assert await dirty_since(runtime, old) is None
    assert await dirty_since(runtime, fresh) is None
