"""Jobs in the domain: create one and enqueue its actor after the commit (for the API, the
scheduler, consent and the engine alike), start a manual backup or discovery, watch, cancel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.errors import Conflict, Forbidden, UnprocessableEntity, or_404
from safekeep.tenants import outbox
from safekeep.tenants.account import repository as account_repository
from safekeep.tenants.audit import service as audit
from safekeep.tenants.job import repository
from safekeep.tenants.models import (
    Account,
    AccountState,
    ConsentState,
    Job,
    JobKind,
    JobStatus,
    JobTrigger,
    Tenant,
    utcnow,
)
from safekeep.tenants.scope import Principal, Scope, TenantScope
from safekeep.tenants.tenant import repository as tenant_repository

# The audit action of each kind of job the API starts on request.
_REQUESTED = {
    JobKind.backup: "backup.requested",
    JobKind.discover: "discovery.requested",
    JobKind.restore: "restore.requested",
}


async def _tenant(session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID) -> Tenant:
    """The tenant within the caller's scope (the tenant's service starts jobs through this
    module, so this one reads tenants through their repository)."""
    return or_404(await tenant_repository.get(session, scope, tenant_id), "No such tenant")


async def _consented_tenant(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, *, needs_it: str
) -> Tenant:
    """The tenant, when its admin consent is granted: no Graph call can work without it, so
    a backup or discovery asked for before is refused (409) rather than left to fail."""
    tenant = await _tenant(session, scope, tenant_id)
    if tenant.consent_state != ConsentState.granted:
        raise Conflict(
            f"The tenant's admin consent is {tenant.consent_state}; {needs_it} it granted",
            consent_state=str(tenant.consent_state),
        )
    return tenant


async def get(session: AsyncSession, scope: TenantScope, job_id: uuid.UUID) -> Job:
    return or_404(await repository.get(session, scope, job_id), "No such job")


list_jobs = tenant_repository.under_tenant(repository.list_page)
list_unfinished_jobs = repository.list_unfinished_page


async def get_with_progress(
    session: AsyncSession, scope: TenantScope, job_id: uuid.UUID
) -> repository.Polled:
    return or_404(await repository.get_with_progress(session, scope, job_id), "No such job")


async def progress(session: AsyncSession, job: Job | Row[Any]) -> dict[str, int]:
    return await repository.progress(session, job.id)


async def progress_many(
    session: AsyncSession, jobs: Sequence[Job | Row[Any]]
) -> dict[uuid.UUID, dict[str, int]]:
    """Each job's progress counters: a settled backup's as it was settled (its tasks no longer
    change), the others' summed over their tasks in one statement. A page of a tenant's jobs
    then reads the tasks of its unfinished jobs only, not the thousands a large tenant's
    finished backups hold."""
    found = {job.id: p for job in jobs if (p := repository.settled_progress(job)) is not None}
    found.update(await repository.progress_many(session, [j.id for j in jobs if j.id not in found]))
    return found


async def issues(session: AsyncSession, job: Row[Any], limit: int = 100) -> Sequence[Row[Any]]:
    return await repository.issues(session, job.id, limit)


async def start_backup(
    session: AsyncSession,
    principal: Principal,
    tenant_id: uuid.UUID,
    *,
    account_ids: Sequence[uuid.UUID] | None,
    services: Sequence[str] | None,
    ip: str | None = None,
) -> Job:
    """A manual backup. It never moves the tenant's schedule. Accounts it names must be
    protected seats (a 422 names each that is not): a backup of an unprotected account would
    keep data that no seat bills."""
    tenant = await _consented_tenant(session, principal.scope, tenant_id, needs_it="backups need")
    params: dict[str, Any] = {}
    if account_ids:
        wanted = set(account_ids)
        accounts = await account_repository.by_ids(session, principal.scope, tenant.id, wanted)
        found = {a.id for a in accounts}
        bad = [
            {"loc": ["body", "account_ids"], "msg": f"unknown account {a}"}
            for a in sorted(wanted - found, key=str)
        ] + [
            {"loc": ["body", "account_ids"], "msg": _not_backed_up(a)}
            for a in sorted(accounts, key=lambda a: str(a.id))
            if a.state != AccountState.active or not a.protected
        ]
        if bad:
            raise UnprocessableEntity("Some accounts cannot be backed up", errors=bad)
        params["account_ids"] = sorted(str(a) for a in wanted)
    if services:
        params["services"] = sorted(set(services))
    return await start_requested_job(
        session, principal, tenant, kind=JobKind.backup, params=params, ip=ip
    )


def _not_backed_up(account: Account) -> str:
    """Why a manual backup refuses to name ``account``: only protected seats are backed up
    (and billed); an unprotected one is protected first (PATCH protected=true)."""
    if account.state != AccountState.active:
        return f"account {account.id} is {account.state}, not active"
    return f"account {account.id} is not protected; protect the seat first (PATCH protected=true)"


async def start_discovery(
    session: AsyncSession, principal: Principal, tenant_id: uuid.UUID, *, ip: str | None = None
) -> Job:
    tenant = await _consented_tenant(
        session, principal.scope, tenant_id, needs_it="discovery needs"
    )
    return await start_requested_job(
        session, principal, tenant, kind=JobKind.discover, params={}, ip=ip
    )


# The scope a key needs to start a job of each kind, and so to cancel one.
STARTED_WITH = {
    JobKind.discover: Scope.backup,
    JobKind.backup: Scope.backup,
    JobKind.restore: Scope.restore,
    JobKind.export: Scope.export,
    JobKind.purge: Scope.admin,
}


async def cancel(
    session: AsyncSession, principal: Principal, job_id: uuid.UUID, *, ip: str | None = None
) -> Job:
    """Ask a job to stop. Workers check between pages; what is written stays consistent.
    The key needs the scope that starts jobs of its kind (``STARTED_WITH``): a backup key
    may not stop an admin's purge or someone's restore."""
    job = await get(session, principal.scope, job_id)
    needed = STARTED_WITH[job.kind]
    if not principal.has(needed):
        raise Forbidden(f"Cancelling a {job.kind} job needs an API key with the '{needed}' scope")
    if job.status.finished:
        raise Conflict(f"The job is already {job.status}")
    now = utcnow()
    job.cancel_requested_at = now
    if job.status == JobStatus.queued:
        job.status = JobStatus.cancelled
        job.finished_at = now
        await repository.fail_export_of(session, job.id)
    await session.flush()
    await audit.record_change(session, principal, "job.cancel_requested", job, ip=ip)
    return job


async def start_job(
    session: AsyncSession,
    tenant: Tenant,
    *,
    kind: JobKind,
    trigger: JobTrigger,
    requested_by: str,
    params: dict[str, Any],
) -> Job:
    """Create a job row and enqueue its actor after the surrounding commit."""
    job = Job(
        tenant_id=tenant.id,
        msp_id=tenant.msp_id,
        kind=kind,
        trigger=trigger,
        params=params,
        requested_by=requested_by,
    )
    session.add(job)
    await session.flush()
    outbox.enqueue(f"run_{kind.value}", str(job.id))
    return job


async def start_requested_job(
    session: AsyncSession,
    principal: Principal,
    tenant: Tenant,
    *,
    kind: JobKind,
    params: dict[str, Any],
    ip: str | None,
) -> Job:
    """A job someone asked for through the API: created, enqueued after commit, audited as
    the request of its kind."""
    job = await start_job(
        session,
        tenant,
        kind=kind,
        trigger=JobTrigger.manual,
        requested_by=principal.actor,
        params=params,
    )
    await audit.record_change(session, principal, _REQUESTED[kind], job, details=params, ip=ip)
    return job
