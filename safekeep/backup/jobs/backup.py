"""Backup jobs: fan a tenant job out into one task per account and service, run each task
under a lease, and finish the job exactly once when its last task ends.

Failure is per task: one account failing never fails the others. A task's error carries a
reason an MSP can act on (consent revoked, mailbox not found, throttled past the deadline);
transient failures are retried by Dramatiq with backoff, up to ``MAX_ATTEMPTS``. A blip of
our own infrastructure (``safekeep.transient``) gives the lease back at once and does not count
against that budget: a restart of the database or Redis costs a retry, never a lease timeout.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep import registry
from safekeep.backup import detection
from safekeep.backup.catalog import Cancelled, SnapshotRun
from safekeep.backup.collect import CollectContext, collector_for
from safekeep.backup.context import graph_client, open_repository
from safekeep.backup.jobs.lifecycle import (
    MAX_ATTEMPTS,
    RELEASE_PATIENCE_SECONDS,
    RetryLater,
    UnexpectedError,
    WorkerLost,
    load_runnable,
    lost_bound,
)
from safekeep.graph.errors import (
    AuthError,
    ConsentRequired,
    MailboxAccessDenied,
    MailboxNotEnabled,
    NotFound,
    Throttled,
)
from safekeep.runtime import Runtime, unit_of_work
from safekeep.tenants import outbox
from safekeep.tenants.account import repository as account_repository
from safekeep.tenants.catalog import repository as catalog_repository
from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.models import (
    Account,
    AccountState,
    ConsentState,
    Job,
    JobKind,
    JobStatus,
    JobTask,
    MspStatus,
    TaskStatus,
    Tenant,
    utcnow,
)
from safekeep.tenants.msp import repository as msp_repository
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.tenants.tenant import service as tenant_service
from safekeep.tenants.tenant.service import system_scope
from safekeep.tenants.webhook import service as webhooks
from safekeep.transient import is_retryable, is_transient, retry_transient

log = structlog.get_logger(__name__)

TERMINAL_TASK = frozenset(
    {TaskStatus.succeeded, TaskStatus.partial, TaskStatus.failed, TaskStatus.cancelled}
)

# Graph failures that retrying soon will not fix, by the reason we record.
PERMANENT = (
    ConsentRequired,
    AuthError,
    MailboxNotEnabled,
    MailboxAccessDenied,
    NotFound,
    Throttled,
)
# Why a task of a seat released after its job was fanned out ended (its error_code/detail).
SEAT_RELEASED = "seat_not_protected"
SEAT_RELEASED_DETAIL = "The seat was released after this backup was queued; it was not backed up"


async def start_backup_job(runtime: Runtime, job_id: str) -> None:
    async with unit_of_work(runtime) as session:
        job = await load_runnable(session, job_id)
        if job is None:
            return
        now = utcnow()
        tenant = await tenant_repository.get_system(session, job.tenant_id)
        assert tenant is not None
        msp = await msp_repository.get(session, tenant.msp_id)
        if msp is None or msp.status == MspStatus.suspended:
            await _fail_job(session, job, "msp_suspended", "The MSP account is suspended")
            return
        if tenant.consent_state != ConsentState.granted:
            await _fail_job(
                session,
                job,
                "consent_revoked",
                f"Admin consent is {tenant.consent_state}; ask the client's admin to consent",
            )
            return
        if await job_repository.active_for_tenant(session, tenant.id, JobKind.purge):
            # A purge collects unreferenced blobs: no backup writes new ones meanwhile.
            raise RetryLater("a purge of this tenant is running")
        await job_repository.set_job_status(
            session, job.id, from_statuses=[JobStatus.queued], to_status=JobStatus.running, now=now
        )
        policy = await tenant_repository.get_policy(session, tenant)
        wanted = set(job.params.get("services") or policy.services)
        scope = system_scope(tenant)
        if job.params.get("account_ids"):
            accounts = await account_repository.by_ids(
                session, scope, tenant.id, [uuid.UUID(a) for a in job.params["account_ids"]]
            )
        else:
            accounts = [
                a
                for a in await account_repository.all_for_tenant(session, scope, tenant.id)
                if a.protected
            ]
        # Protected seats only, named or not: the API refuses to name an unprotected one,
        # and a seat released since the request is not backed up (nor billed).
        accounts = [a for a in accounts if a.state == AccountState.active and a.protected]
        existing = {
            (t.account_id, t.service): t for t in await job_repository.tasks(session, job.id)
        }
        for account in accounts:
            for service in registry.covered(account.kind, account.services_found, wanted):
                if (account.id, service) not in existing:
                    task = JobTask(
                        job_id=job.id, tenant_id=tenant.id, account_id=account.id, service=service
                    )
                    session.add(task)
                    existing[(account.id, service)] = task
        try:
            await session.flush()
        except IntegrityError:  # a duplicate delivery created them first: fine
            await session.rollback()
            return
        # Queued tasks, and running ones whose worker stopped beating (it died): a resent
        # job (scheduler recovery) gets them going again; the lease stops double runs. The
        # tasks that took longest last time go first, so that the job does not end waiting
        # for a large mailbox started last while the other workers sit idle.
        stale = now - timedelta(seconds=runtime.settings.task_lease_seconds)
        took = await job_repository.last_durations(session, tenant.id, before=job.id)
        ordered = sorted(existing.values(), key=lambda t: -took.get((t.account_id, t.service), 0.0))
        for task in ordered:
            dead = task.status == TaskStatus.running and (
                task.heartbeat_at is None or task.heartbeat_at < stale
            )
            if task.status == TaskStatus.queued or dead:
                outbox.enqueue("run_backup_task", str(task.id))
        if not existing:
            await _finish_job(session, job.id)


async def _fail_job(session: Any, job: Job, code: str, detail: str) -> None:
    if await job_repository.set_job_status(
        session,
        job.id,
        from_statuses=[JobStatus.queued, JobStatus.running],
        to_status=JobStatus.failed,
        now=utcnow(),
        error_code=code,
        error_detail=detail,
    ):
        tenant = await tenant_repository.get_system(session, job.tenant_id)
        if tenant is not None:
            await webhooks.emit(
                session,
                msp_id=tenant.msp_id,
                event_type="backup.failed",
                data={"tenant_id": str(tenant.id), "job_id": str(job.id), "error_code": code},
            )


async def run_backup_task(runtime: Runtime, task_id: str) -> None:
    now = utcnow()
    async with unit_of_work(runtime) as session:
        found = await job_repository.task_to_run(session, uuid.UUID(task_id))
        if found is None:
            return
        task, job = found.task, found.job
        if task.status in TERMINAL_TASK:
            # A delivery that died between settling the task and settling the job (the
            # database went away in between) left the job for this one to finish.
            await _finish_job(session, task.job_id)
            return
        if job.cancel_requested_at is not None or job.status.finished:
            await _settle_unfinished(session, task, TaskStatus.cancelled)
            return
        account = found.account
        if account is not None and not (account.protected and account.state == AccountState.active):
            # Released (or purged) after the job was fanned out: not backed up, nor billed.
            task.error_code = SEAT_RELEASED
            task.error_detail = SEAT_RELEASED_DETAIL
            await _settle_unfinished(session, task, TaskStatus.cancelled)
            return
        lease = timedelta(seconds=runtime.settings.task_lease_seconds)
        fresh = uuid.uuid4()  # the id of the snapshot, if this run starts one
        claimed = await job_repository.claim_task(
            session, task.id, now=now, stale_before=now - lease, new_snapshot_id=fresh
        )
        if claimed is None:
            return  # another delivery holds a live lease on it
        attempts = claimed.attempts
        tenant, account = found.tenant, found.account
        assert tenant is not None
        assert account is not None
        lost = attempts > lost_bound(MAX_ATTEMPTS)  # its runs keep being lost: not again
        policy = found.policy or await tenant_repository.get_policy(session, tenant)
        # The snapshot it runs into commits with the lease: one transaction, not two.
        run = (
            None
            if lost
            else await SnapshotRun.begin(
                runtime,
                msp_id=tenant.msp_id,
                tenant_id=tenant.id,
                account_id=account.id,
                service=task.service,
                job_id=job.id,
                task_id=task.id,
                session=session,
                new_snapshot_id=fresh,
                task_names=claimed.snapshot_id,
            )
        )
    if run is None:
        log.error("backup_task_worker_lost", task_id=task_id, attempts=attempts)
        await _task_failed(runtime, tenant, task.id, WorkerLost(attempts))
        return
    try:
        # Its last transaction settles the task with its snapshot, and the job when it was
        # the last task (``backup_account_service``).
        await _collect(runtime, tenant, policy, account, task, job, run)
    except Cancelled:
        await _end_task(runtime, task.id, TaskStatus.cancelled)
        return
    except PERMANENT as exc:
        await _task_failed(runtime, tenant, task.id, exc)
        return
    except Exception as exc:
        # An error nobody expected (a bug) spends an attempt as any other: the last one fails
        # the task as ``internal_error`` (and the job with it, when it was the last task).
        failure = exc if is_retryable(exc) else UnexpectedError(exc)
        if attempts >= MAX_ATTEMPTS and not is_transient(exc):
            if failure is not exc:
                log.error("backup_task_bug", task_id=task_id, attempts=attempts, exc_info=exc)
            await _task_failed(runtime, tenant, task.id, failure)
            return
        # The snapshot stays running (it completes with its task and job or not at all): the
        # retry resumes it. The lease is given back first, so that the retry takes it at once.
        await _release(runtime, task.id, failure)
        if failure is not exc:
            log.error("backup_task_retry_after_bug", task_id=task_id, exc_info=exc)
        raise  # Dramatiq retries it with backoff


async def _collect(
    runtime: Runtime,
    tenant: Tenant,
    policy: Any,
    account: Account,
    task: JobTask,
    job: Job,
    run: SnapshotRun,
) -> None:
    run, skipped = await backup_account_service(
        runtime, tenant, policy, account, task.service, job_id=job.id, task_id=task.id, run=run
    )
    log.info(
        "backup_task_done",
        task_id=str(task.id),
        service=task.service,
        added=run.counters.added,
        changed=run.counters.changed,
        removed=run.counters.removed,
        skipped=skipped,
        resumed=run.resumed,
    )


async def backup_account_service(
    runtime: Runtime,
    tenant: Tenant,
    policy: Any,
    account: Account,
    service: str,
    *,
    job_id: uuid.UUID | None = None,
    task_id: uuid.UUID | None = None,
    run: SnapshotRun | None = None,
) -> tuple[SnapshotRun, int]:
    """Back up one account and service into a snapshot (resuming an unfinished one; ``run``:
    one the caller began already). Returns the run and how many items were skipped. Tests
    and benchmarks call this directly."""
    if run is None:
        run = await SnapshotRun.begin(
            runtime,
            msp_id=tenant.msp_id,
            tenant_id=tenant.id,
            account_id=account.id,
            service=service,
            job_id=job_id,
            task_id=task_id,
        )
    repo = await open_repository(runtime, tenant, policy)
    async with graph_client(runtime, tenant) as graph:
        ctx = CollectContext(
            runtime=runtime,
            tenant=tenant,
            policy=policy,
            account=account,
            service=service,
            graph=graph,
            repo=repo,
            run=run,
            job_id=job_id,
            task_id=task_id,
        )
        await collector_for(service)(ctx)
    stats = ctx.graph.stats

    async def settle(session: AsyncSession) -> None:
        await _assess(session, runtime, tenant, account, run)
        if task_id is not None and job_id is not None:
            await _finish_job(session, job_id)  # this may have been the job's last task

    await run.complete(
        skipped=ctx.skipped,
        requests=stats.requests,
        throttled=stats.throttled,
        errors=ctx.errors,
        then=settle,
    )
    return run, ctx.skipped


async def _assess(
    session: AsyncSession, runtime: Runtime, tenant: Tenant, account: Account, run: SnapshotRun
) -> None:
    """Detection in the run's completing transaction: it must never fail the backup it
    watches (``detection.assess`` undoes its own writes when raising a detection fails)."""
    try:
        await detection.assess(session, runtime, tenant, account, run)
    except Exception:
        log.exception("detection_failed", account_id=str(account.id), service=run.service)


async def _end_task(runtime: Runtime, task_id: uuid.UUID, status: TaskStatus) -> None:
    async with unit_of_work(runtime) as session:
        task = await job_repository.get_task(session, task_id)
        if task is None:
            return
        if task.status in TERMINAL_TASK:  # a finished snapshot already settled its task
            await _finish_job(session, task.job_id)
        else:
            await _settle_unfinished(session, task, status)


async def _settle_unfinished(session: AsyncSession, task: JobTask, status: TaskStatus) -> None:
    """End a task whose snapshot did not finish (``status``: failed or cancelled): the snapshot
    it ran into shows as interrupted until the next backup resumes it; then the job, when
    this was its last task."""
    task.status = status
    task.finished_at = utcnow()
    if task.snapshot_id is not None:
        await catalog_repository.interrupt_snapshot(session, task.snapshot_id)
    await session.flush()
    await _finish_job(session, task.job_id)


async def _release(runtime: Runtime, task_id: uuid.UUID, exc: BaseException) -> None:
    """Give the lease back so the retry can take it at once. The error may be the database
    itself going away, so this waits (bounded) for it to return rather than leave the task
    behind a lease nobody renews."""
    blip = is_transient(exc)

    async def release() -> None:
        async with unit_of_work(runtime) as session:
            task = await job_repository.get_task(session, task_id)
            if task is not None and task.status == TaskStatus.running:
                task.status = TaskStatus.queued
                if blip:
                    # Our own infrastructure failed, not the work: the attempt is not spent.
                    task.attempts = max(0, task.attempts - 1)
                task.error_code = getattr(exc, "reason", "transient_error")
                task.error_detail = str(exc)[:4000]

    await retry_transient(release, within=RELEASE_PATIENCE_SECONDS, what="release_task")
    log.info(
        "backup_task_released",
        task_id=str(task_id),
        infrastructure=blip,
        error=f"{type(exc).__name__}: {exc}"[:300],
    )


async def _task_failed(
    runtime: Runtime, tenant: Tenant, task_id: uuid.UUID, exc: BaseException
) -> None:
    reason = getattr(exc, "reason", type(exc).__name__)
    async with unit_of_work(runtime) as session:
        if isinstance(exc, ConsentRequired):
            row = await tenant_repository.get_system(session, tenant.id)
            if row is not None:
                await tenant_service.mark_consent_revoked(session, row, str(exc))
        task = await job_repository.get_task(session, task_id)
        if task is None:
            return
        task.error_code = str(reason)[:60]
        task.error_detail = _explain(exc)
        task.errors += 1
        await _settle_unfinished(session, task, TaskStatus.failed)
    log.warning("backup_task_failed", task_id=str(task_id), reason=reason, error=str(exc)[:300])


def _explain(exc: BaseException) -> str:
    hints = {
        "consent_revoked": "Admin consent was withdrawn; send the client's admin a new "
        "consent link (POST /v1/tenants/{id}/consent).",
        "mailbox_not_found": "The user has no Exchange Online mailbox (no licence, or not "
        "provisioned yet).",
        "mailbox_access_denied": "The client's Exchange application access policy (or RBAC "
        "for Applications) leaves this mailbox out of Safekeep's scope; the client's Exchange "
        "admin must add it (Test-ApplicationAccessPolicy shows the result).",
        "permission_missing": "Microsoft Graph refused a permission this needs; ask the "
        "client's admin to consent again (POST /v1/tenants/{id}/consent).",
        "throttled": "Microsoft kept throttling this account past our deadline; it is retried "
        "on the next run.",
        "not_found": "Microsoft Graph no longer has this resource.",
        "user_not_found": "The user is no longer in the client's directory (deleted in Entra "
        "ID); the next discovery cancels the seat, and its backed-up data is kept.",
    }
    reason = str(getattr(exc, "reason", ""))
    return (hints.get(reason, "") + f" ({exc})").strip()[:4000]


async def _finish_job(session: Any, job_id: uuid.UUID) -> None:
    """When every task has ended, settle the job exactly once and announce it.

    The job's row lock makes the last tasks, ending at the same moment, settle it one after
    the other (each then counts the others' committed status); the compare-and-set of its
    status makes a second settling a no-op. One aggregate counts the tasks: every task that
    ends asks this, so it must not read every task."""
    job = await job_repository.lock(session, job_id)
    if job is None or job.status.finished:
        return
    tally = await job_repository.tally(session, job_id)
    if tally.unfinished:
        return
    ok = tally.succeeded + tally.partial
    failed = tally.failed
    cancelled = tally.cancelled
    if job.cancel_requested_at is not None or (cancelled and not failed and not ok):
        final = JobStatus.cancelled
    elif failed and not ok:
        final = JobStatus.failed
    elif failed or tally.partial or cancelled:
        final = JobStatus.partial
    else:
        final = JobStatus.succeeded
    now = utcnow()
    progress = tally.progress
    error_code = None
    if final == JobStatus.failed:
        tasks = await job_repository.tasks(session, job_id)
        error_code = next((t.error_code for t in tasks if t.error_code), "backup_failed")
    if not await job_repository.set_job_status(
        session,
        job_id,
        from_statuses=[JobStatus.queued, JobStatus.running],
        to_status=final,
        now=now,
        result={
            "progress": progress,
            "tasks": {"ok": ok, "failed": failed, "cancelled": cancelled},
        },
        error_code=error_code,
    ):
        return
    tenant = await tenant_repository.get_system(session, job.tenant_id)
    if tenant is None:
        return
    tenant.last_backup_at = now
    if final == JobStatus.cancelled:
        return
    await webhooks.emit(
        session,
        msp_id=tenant.msp_id,
        event_type="backup.failed" if final == JobStatus.failed else "backup.completed",
        data={
            "tenant_id": str(tenant.id),
            "job_id": str(job_id),
            "status": str(final),
            "progress": progress,
        },
    )
