"""When tenants are backed up: the scheduler's logic (the loop itself lives in workers/).

Replica-safe: a tenant's due time is moved forward with a compare-and-set, so of several
scheduler replicas exactly one enqueues it. A manual backup never touches these times.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import JobKind, JobTrigger, MspStatus, utcnow
from safekeep.tenants.msp import repository as msp_repository
from safekeep.tenants.tenant import repository as tenant_repository

log = structlog.get_logger(__name__)


def interval(backups_per_day: int) -> timedelta:
    return timedelta(hours=24 / max(1, min(24, backups_per_day)))


def next_run(previous_due: datetime, now: datetime, backups_per_day: int) -> datetime:
    """The next slot after ``now`` on the tenant's grid, so a late scheduler catches up once
    instead of firing a burst of missed runs."""
    step = interval(backups_per_day)
    due = previous_due + step
    if due <= now:
        missed = (now - previous_due) // step
        due = previous_due + step * (missed + 1)
    return due


async def enqueue_due(
    session: AsyncSession, *, now: datetime | None = None, limit: int = 500
) -> list[uuid.UUID]:
    """Claim due tenants and start a scheduled backup for each; returns the job ids."""
    now = now or utcnow()
    started: list[uuid.UUID] = []
    for tenant_id in await tenant_repository.due_tenant_ids(session, now, limit):
        tenant = await tenant_repository.get_system(session, tenant_id)
        if tenant is None or tenant.next_backup_at is None:
            continue
        policy = await tenant_repository.get_policy(session, tenant)
        expected = tenant.next_backup_at
        following = next_run(expected, now, policy.backups_per_day)
        if not await tenant_repository.claim_due(
            session, tenant.id, expected=expected, next_at=following, now=now
        ):
            continue  # another replica took it
        await session.refresh(tenant)
        msp = await msp_repository.get(session, tenant.msp_id)
        if msp is None or msp.status == MspStatus.suspended:
            log.info("scheduled_backup_skipped", tenant_id=str(tenant.id), reason="msp_suspended")
            continue
        if await job_repository.active_for_tenant(session, tenant.id, JobKind.backup):
            log.info("scheduled_backup_skipped", tenant_id=str(tenant.id), reason="still_running")
            continue
        job = await job_service.start_job(
            session,
            tenant,
            kind=JobKind.backup,
            trigger=JobTrigger.scheduled,
            requested_by="scheduler",
            params={},
        )
        started.append(job.id)
    return started
