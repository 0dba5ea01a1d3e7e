"""The life of a single-step job (discovery, restore, export, purge): queued, running, then
succeeded, partial or failed exactly once, with a reason; transient failures retry.

A run holds the job's lease (``job.heartbeat_at``, taken by a compare-and-set as a backup
task's) and renews it in the background while its body runs: a second delivery of the job (a
redelivery, the scheduler's recovery) finds the lease live and leaves the run to its holder,
and only a run whose worker died (its lease expired) is taken over."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
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
from safekeep.transient import TransientCondition, is_retryable, is_transient, retry_transient

log = structlog.get_logger(__name__)

# Attempts a job (or a backup task) may spend on failures that retrying could fix before it is
# settled as failed. The actors' Dramatiq ``max_retries`` is this same number, so the broker
# delivers a message up to MAX_ATTEMPTS + 1 times: the engine's count runs out (and settles the
# job with its reason) before the broker gives the message up. See docs/architecture.md.
MAX_ATTEMPTS = 5
# The error code of a job (or backup task) ended by an error nobody expected (a bug: a
# KeyError, a ValueError) once it had spent its attempts, as any other failure does.
INTERNAL_ERROR = "internal_error"
# A running job's lease is renewed this often at most (a quarter of the lease when that is
# shorter), so that a few missed renewals (the database restarting) never lose it.
LEASE_RENEWAL_SECONDS = 60.0
# How long giving a lease back may wait for the database to return (it is what lets the
# retry start at once instead of after the lease's timeout).
RELEASE_PATIENCE_SECONDS = 120.0


@dataclass
class JobOutcome:
    result: dict[str, Any] = field(default_factory=dict)
    partial: bool = False
    # Webhook to emit on success (event type, extra data), in the same commit as the status.
    event: tuple[str, dict[str, Any]] | None = None
    # What else commits with the job's status, and only if this run settles it (an export
    # made downloadable): a worker that dies in between cannot leave one without the other.
    settle_with: Callable[[AsyncSession], Awaitable[None]] | None = None


class RetryLater(TransientCondition):
    """Not now (another job of the tenant is in the way): Dramatiq retries with backoff."""


class JobFailed(Exception):
    """A permanent failure with a stable code for the job record."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


Body = Callable[[Runtime, Job, Tenant], Awaitable[JobOutcome]]


# The error code of a job (or backup task) whose every attempt ended without a word: its
# worker was lost each time (killed; out of memory on this very job, most likely).
WORKER_LOST = "worker_lost"


def lost_bound(max_attempts: int) -> int:
    """The attempts after which a job or task whose runs keep ending without an outcome is
    settled ``worker_lost``: failures settle it at ``max_attempts``, so past twice that,
    more runs were lost than a run may fail. Twice, not once: a rolling deploy that stops
    workers mid-run costs an attempt too, and a long first backup may see a few."""
    return 2 * max_attempts


class WorkerLost(Exception):
    """Claimed once more than its attempts allow, every earlier attempt having ended with no
    outcome recorded: the work is not started again (it would only take the next worker
    down with it), and the job or task is settled failed with this reason."""

    reason = WORKER_LOST

    def __init__(self, attempts: int) -> None:
        super().__init__(
            f"The worker running this was lost {attempts - 1} times (killed, or out of "
            "memory on it); it is not tried again"
        )


class UnexpectedError(Exception):
    """An error nobody expected (a bug), as a job or task records it once its attempts are
    spent: ``internal_error``, with the error's type and message."""

    reason = INTERNAL_ERROR

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}"[:1000])


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
        lease = timedelta(seconds=runtime.settings.task_lease_seconds)
        if not await job_repository.claim_job(session, job.id, now=now, stale_before=now - lease):
            return  # another delivery holds a live lease on it
        attempts = int(job.result.get("attempts", 0)) + 1
        job.result = {**job.result, "attempts": attempts}
        tenant = await tenant_repository.get_system(session, job.tenant_id)
        assert tenant is not None
    if attempts > lost_bound(max_attempts):
        lost = WorkerLost(attempts)
        log.error("job_worker_lost", job_id=job_id, attempts=attempts)
        await _settle(runtime, job.id, JobStatus.failed, {}, code=lost.reason, detail=str(lost))
        return
    try:
        failed: tuple[str, str] | None = None  # a permanent failure's code and detail
        try:
            async with _lease_renewed(runtime, job.id):
                outcome = await body(runtime, job, tenant)
        except JobFailed as exc:
            failed = (exc.code, exc.detail)
        except ConsentRequired as exc:
            async with unit_of_work(runtime) as session:
                row = await tenant_repository.get_system(session, tenant.id)
                if row is not None:
                    await tenant_service.mark_consent_revoked(session, row, str(exc))
            failed = (exc.reason, str(exc))
        except AuthError as exc:
            failed = (exc.reason, str(exc))
        if failed is not None:
            code, detail = failed
            await _settle(runtime, job.id, JobStatus.failed, {}, code=code, detail=detail)
            return
        status = JobStatus.partial if outcome.partial else JobStatus.succeeded
        await _settle(
            runtime,
            job.id,
            status,
            outcome.result,
            event=outcome.event,
            tenant=tenant,
            settle_with=outcome.settle_with,
        )
    except Exception as exc:
        # A blip of our own infrastructure (or another job in the way) never fails the job:
        # Dramatiq's bounded retries and the scheduler's recovery cover a longer outage. Any
        # other error, a bug included, spends an attempt: the last one settles the job.
        failure = exc if is_retryable(exc) else UnexpectedError(exc)
        if attempts >= max_attempts and not is_transient(exc):
            code = str(getattr(failure, "reason", "transient_error"))
            log.error("job_failed", job_id=job_id, code=code, attempts=attempts, exc_info=exc)
            await _settle(runtime, job.id, JobStatus.failed, {}, code=code, detail=str(failure))
            return
        await _release(runtime, job.id, exc)
        if failure is exc:
            log.warning("job_retry", job_id=job_id, error=str(exc)[:300], attempts=attempts)
        else:
            log.error("job_retry_after_bug", job_id=job_id, attempts=attempts, exc_info=exc)
        raise


@asynccontextmanager
async def _lease_renewed(runtime: Runtime, job_id: uuid.UUID) -> AsyncIterator[None]:
    """Renew the job's lease (and ``updated_at``, the scheduler's sign of life) in the
    background while the block runs. The renewals stop, a renewal in flight finishing first,
    before the block's end is recorded: no renewal follows a lease given back."""
    stop = asyncio.Event()
    renewing = asyncio.create_task(_renew_lease(runtime, job_id, stop))
    try:
        yield
    finally:
        stop.set()
        await renewing


async def _renew_lease(runtime: Runtime, job_id: uuid.UUID, stop: asyncio.Event) -> None:
    interval = min(LEASE_RENEWAL_SECONDS, runtime.settings.task_lease_seconds / 4)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            async with unit_of_work(runtime) as session:
                await job_repository.renew_job_lease(session, job_id, utcnow())
        except Exception as exc:  # the lease has slack: the next renewal tries again
            log.warning(
                "job_lease_renewal_failed",
                job_id=str(job_id),
                transient=is_transient(exc),
                error=str(exc)[:300],
            )


async def _release(runtime: Runtime, job_id: uuid.UUID, exc: BaseException) -> None:
    """Give the lease back so that the retry takes it at once. A blip of our own
    infrastructure does not spend the attempt (as a backup task's ``_release``). The error may
    be the database itself going away, so this waits (bounded) for it to return."""
    blip = is_transient(exc)

    async def release() -> None:
        async with unit_of_work(runtime) as session:
            job = await job_repository.get_system(session, job_id)
            if job is None or job.status != JobStatus.running:
                return
            if blip:
                attempts = int(job.result.get("attempts", 0))
                job.result = {**job.result, "attempts": max(0, attempts - 1)}
            await job_repository.release_job_lease(session, job_id)

    await retry_transient(release, within=RELEASE_PATIENCE_SECONDS, what="release_job")


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
    settle_with: Callable[[AsyncSession], Awaitable[None]] | None = None,
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
        if won and settle_with is not None:
            await settle_with(session)
        if won and event is not None and tenant is not None:
            event_type, data = event
            await webhooks.emit(
                session,
                msp_id=tenant.msp_id,
                event_type=event_type,
                data={"tenant_id": str(tenant.id), "job_id": str(job_id), **data},
            )
