"""The life of a single-step job (discovery, restore, export, purge): queued, running, then
succeeded, partial or failed exactly once, with a reason; transient failures retry."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.graph.errors import AuthError, ConsentRequired
from safekeep.runtime import Runtime, unit_of_work
from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.models import Job, JobStatus, Tenant, utcnow
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.tenants.tenant import service as tenant_service
from safekeep.tenants.webhook import service as webhooks
from safekeep.transient import TransientCondition, is_retryable, is_transient

log = structlog.get_logger(__name__)

# Attempts a job (or a backup task) may spend on failures that retrying could fix before it is
# settled as failed. The actors' Dramatiq ``max_retries`` is this same number, so the broker
# delivers a message up to MAX_ATTEMPTS + 1 times: the engine's count runs out (and settles the
# job with its reason) before the broker gives the message up. See docs/architecture.md.
MAX_ATTEMPTS = 5


@dataclass
class JobOutcome:
    result: dict[str, Any] = field(default_factory=dict)
    partial: bool = False
    # Webhook to emit on success (event type, extra data), in the same commit as the status.
    event: tuple[str, dict[str, Any]] | None = None


class RetryLater(TransientCondition):
    """Not now (another job of the tenant is in the way): Dramatiq retries with backoff."""


class JobFailed(Exception):
    """A permanent failure with a stable code for the job record."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


Body = Callable[[Runtime, Job, Tenant], Awaitable[JobOutcome]]


async def load_runnable(session: AsyncSession, job_id: str) -> Job | None:
    """The job if there is work to do: None when it is gone or finished, and a job whose
    cancellation was asked for before it started is settled as cancelled here."""
    job = await job_repository.get_system(session, uuid.UUID(job_id))
    if job is None or job.status.finished:
        return None
    if job.cancel_requested_at is not None:
        await job_repository.settle_cancelled(session, job.id)
        return None
    return job


async def run_job(
    runtime: Runtime, job_id: str, body: Body, *, max_attempts: int = MAX_ATTEMPTS
) -> None:
    async with unit_of_work(runtime) as session:
        job = await load_runnable(session, job_id)
        if job is None:
            return
        now = utcnow()
        await job_repository.set_job_status(
            session, job.id, from_statuses=[JobStatus.queued], to_status=JobStatus.running, now=now
        )
        attempts = int(job.result.get("attempts", 0)) + 1
        job.result = {**job.result, "attempts": attempts}
        tenant = await tenant_repository.get_system(session, job.tenant_id)
        assert tenant is not None
    try:
        outcome = await body(runtime, job, tenant)
    except JobFailed as exc:
        await _settle(runtime, job.id, JobStatus.failed, {}, code=exc.code, detail=exc.detail)
        return
    except ConsentRequired as exc:
        async with unit_of_work(runtime) as session:
            row = await tenant_repository.get_system(session, tenant.id)
            if row is not None:
                await tenant_service.mark_consent_revoked(session, row, str(exc))
        await _settle(runtime, job.id, JobStatus.failed, {}, code=exc.reason, detail=str(exc))
        return
    except AuthError as exc:
        await _settle(runtime, job.id, JobStatus.failed, {}, code=exc.reason, detail=str(exc))
        return
    except Exception as exc:
        if not is_retryable(exc):
            raise
        # A blip of our own infrastructure (or another job in the way) never fails the job:
        # Dramatiq's bounded retries and the scheduler's recovery cover a longer outage.
        if attempts >= max_attempts and not is_transient(exc):
            code = str(getattr(exc, "reason", "transient_error"))
            await _settle(runtime, job.id, JobStatus.failed, {}, code=code, detail=str(exc))
            return
        log.warning("job_retry", job_id=job_id, error=str(exc)[:300], attempts=attempts)
        raise
    status = JobStatus.partial if outcome.partial else JobStatus.succeeded
    await _settle(runtime, job.id, status, outcome.result, event=outcome.event, tenant=tenant)


async def _settle(
    runtime: Runtime,
    job_id: uuid.UUID,
    status: JobStatus,
    result: dict[str, Any],
    *,
    code: str | None = None,
    detail: str | None = None,
    event: tuple[str, dict[str, Any]] | None = None,
    tenant: Tenant | None = None,
) -> None:
    async with unit_of_work(runtime) as session:
        job = await job_repository.get_system(session, job_id)
        if job is None:
            return
        merged = {**job.result, **result}
        won = await job_repository.set_job_status(
            session,
            job_id,
            from_statuses=[JobStatus.queued, JobStatus.running],
            to_status=status,
            now=utcnow(),
            result=merged,
            error_code=code,
            error_detail=detail[:4000] if detail else None,
        )
        if won and event is not None and tenant is not None:
            event_type, data = event
            await webhooks.emit(
                session,
                msp_id=tenant.msp_id,
                event_type=event_type,
                data={"tenant_id": str(tenant.id), "job_id": str(job_id), **data},
            )
