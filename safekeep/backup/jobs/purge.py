"""Purging data, the only way data ever leaves Safekeep: an audited request to purge one
account, or the retention sweep the policy asks for. Both end with a garbage collection of
the tenant's blobs that no remaining version names.

Safety: a purge never runs beside a backup of the same tenant (a backup's freshly written
blobs are not yet named by committed rows), each waits for the other; blobs under Object Lock
retention are left until it ends; and the mark phase reads only catalog columns (content,
document and ``refs``), which name every blob a version depends on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from safekeep.backup.context import open_repository
from safekeep.backup.jobs.lifecycle import JobFailed, JobOutcome, RetryLater, run_job
from safekeep.errors import Conflict
from safekeep.runtime import Runtime, unit_of_work
from safekeep.storage.errors import BlobLocked, BlobNotFound
from safekeep.storage.marks import ChunkMarks
from safekeep.storage.repository import ContentRef, TenantRepository
from safekeep.tenants.account import repository as account_repository
from safekeep.tenants.account import service as account_service
from safekeep.tenants.audit import service as audit
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.detection import repository as detection_repository
from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import (
    Account,
    AccountState,
    Job,
    JobKind,
    JobTrigger,
    Tenant,
    TenantStatus,
    utcnow,
)
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.tenants.tenant import service as tenant_service
from safekeep.tenants.tenant.service import system_scope

log = structlog.get_logger(__name__)

PAGE = 1000


@dataclass
class GcResult:
    referenced: int = 0
    scanned: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    locked: int = 0


async def run_purge_job(runtime: Runtime, job_id: str) -> None:
    await run_job(runtime, job_id, purge, max_attempts=50)


async def purge(runtime: Runtime, job: Job, tenant: Tenant) -> JobOutcome:
    async with unit_of_work(runtime) as session:
        running = await job_repository.active_for_tenant(session, tenant.id, JobKind.backup)
    if running:  # retried with backoff until the backup is over (max_attempts above)
        raise RetryLater("a backup of this tenant is running")
    result: dict[str, Any] = {}
    try:
        if job.params.get("account_id"):
            account_id = uuid.UUID(job.params["account_id"])
            try:
                result["account"] = await purge_account(runtime, tenant, account_id, job)
            except PurgeRefused as refused:  # nothing was deleted
                raise JobFailed(refused.code, refused.detail) from None
        if job.params.get("retention"):
            result["retention"] = await retention_sweep(runtime, tenant, job)
    except PurgeCancelled:
        # Settled as cancelled under the account's lock: the settling after this finds the
        # job finished and changes nothing.
        return JobOutcome(result=result)
    gc = await collect_garbage(runtime, tenant)
    result["gc"] = gc.__dict__
    return JobOutcome(result=result)


class PurgeCancelled(Exception):
    """The purge job was asked to stop (``POST /v1/jobs/{id}/cancel``, or its seat was
    protected again) before it deleted the account: it is settled as cancelled."""


class PurgeRefused(Exception):
    """The account's data may not be purged now (``purge_refusal``); nothing was deleted."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def purge_refusal(tenant: Tenant, account: Account) -> PurgeRefused | None:
    """None when the account's data may be purged: the seat is released (``active``, not
    protected) or ``cancelled``, or its tenant was deleted (a deleted tenant's seats are
    retained data, and cannot be released any more). A seat protected (again) or already
    purged is refused. One rule for the API's request and for the job that carries it out,
    which applies it again under the account's lock: a purge waits behind a running backup,
    and the seat may have been protected again in between."""
    if account.state == AccountState.purged:
        return PurgeRefused("account_already_purged", "This account's data was already purged")
    if (
        tenant.status != TenantStatus.deleted
        and account.state == AccountState.active
        and account.protected
    ):
        return PurgeRefused(
            "account_protected",
            "The seat is protected; a protected seat's data is not purged (nothing was deleted)",
        )
    return None


async def purge_account(
    runtime: Runtime,
    tenant: Tenant,
    account_id: uuid.UUID,
    job: Job,
    *,
    due: Callable[[Account], bool] | None = None,
) -> dict[str, Any]:
    """Delete one account's catalog and mark it purged, in one transaction that holds the
    account's row lock (and then the job's) and decides on what it reads under them: a job
    asked to stop is settled as cancelled (``PurgeCancelled``); an account no longer
    purgeable (``purge_refusal``), or for the retention sweep no longer ``due``, is left
    whole (``PurgeRefused``). Protecting a seat takes the same lock, so it either comes
    first and nothing is deleted, or after, and finds the data purged."""
    scope = system_scope(tenant)
    refused: PurgeRefused | None = None
    cancelled = False
    versions = 0
    async with unit_of_work(runtime) as session:
        account = await account_repository.get_for_update(session, scope, tenant.id, account_id)
        if account is None:
            raise JobFailed("account_not_found", "The account no longer exists")
        locked = await job_repository.lock(session, job.id)
        refused = purge_refusal(tenant, account)
        if refused is None and due is not None and not due(account):
            refused = PurgeRefused("account_not_due", "The account is no longer due for purging")
        if locked is not None and locked.cancel_requested_at is not None:
            cancelled = True
            await job_repository.settle_cancelled(session, job.id)
        elif refused is None:
            versions = await catalog.delete_account_catalog(session, account.id)
            account.state = AccountState.purged
            account.protected = False
            account.purged_at = utcnow()
            await audit.record(
                session,
                msp_id=tenant.msp_id,
                actor=job.requested_by or "system",
                action="account.purged",
                tenant_id=tenant.id,
                target_type="account",
                target_id=account.id,
                details={"versions": versions, "job_id": str(job.id)},
            )
    if cancelled:
        log.info("purge_cancelled", job_id=str(job.id), account_id=str(account_id))
        raise PurgeCancelled()
    if refused is not None:
        log.info("purge_refused", job_id=str(job.id), account_id=str(account_id), code=refused.code)
        raise refused
    backend = await runtime.search_backend()
    await backend.purge(tenant_id=str(tenant.id), account_id=str(account_id))
    return {"account_id": str(account_id), "versions": versions}


async def retention_sweep(runtime: Runtime, tenant: Tenant, job: Job) -> dict[str, Any]:
    """Versions that stopped being current more than ``retention_days`` ago go, and so do
    cancelled accounts whose data has been kept that long. Current versions always stay."""
    async with unit_of_work(runtime) as session:
        row = await tenant_repository.get_system(session, tenant.id)
        assert row is not None
        policy = await tenant_repository.get_policy(session, row)
    if policy.retention_days is None:
        return {"retention_days": None, "versions": 0, "accounts": 0}
    horizon = utcnow() - timedelta(days=policy.retention_days)
    removed = 0
    backend = await runtime.search_backend()
    async with unit_of_work(runtime) as session:
        held = await detection_repository.held_account_ids(session, tenant.id)
    after: uuid.UUID | None = None
    while True:
        async with unit_of_work(runtime) as session:
            ids = await catalog.expired_version_ids(
                session, tenant.id, horizon, PAGE, held, after=after
            )
            await catalog.delete_versions(session, ids)
        if not ids:
            break
        after = ids[-1]
        removed += len(ids)
        await backend.delete_versions(str(tenant.id), [str(i) for i in ids])

    def due(account: Account) -> bool:
        return bool(
            account.state == AccountState.cancelled
            and account.cancelled_at
            and account.cancelled_at < horizon
            and account.id not in held
        )

    async with unit_of_work(runtime) as session:
        await catalog.delete_orphan_items(session, tenant.id)
        candidates = [
            a
            for a in await account_repository.all_for_tenant(
                session, system_scope(tenant), tenant.id
            )
            if due(a)
        ]
    accounts = []
    for account in candidates:
        # Checked again under the account's lock: protected again since it was listed (or
        # no longer cancelled), it keeps its data.
        try:
            await purge_account(runtime, tenant, account.id, job, due=due)
        except (PurgeRefused, JobFailed):
            continue
        accounts.append(account)
    if removed or accounts:
        async with unit_of_work(runtime) as session:
            await audit.record_on_tenant(
                session,
                tenant,
                "retention.purged",
                actor="retention",
                details={
                    "versions": removed,
                    "accounts": [str(a.id) for a in accounts],
                    "retention_days": policy.retention_days,
                },
            )
    return {"retention_days": policy.retention_days, "versions": removed, "accounts": len(accounts)}


async def collect_garbage(runtime: Runtime, tenant: Tenant) -> GcResult:
    """Mark every chunk a version names, then delete the tenant's chunks nobody names. The
    marks are kept on disk past a small cache (``ChunkMarks``), so the sweep's memory does not
    grow with the tenant's data."""
    result = GcResult()
    async with aclosing(ChunkMarks()) as marks:
        after: uuid.UUID | None = None
        while True:
            async with unit_of_work(runtime) as session:
                rows = await catalog.blob_refs(session, tenant.id, after=after, limit=PAGE)
            if not rows:
                break
            await marks.add(
                c.name for _, refs in rows for ref in refs for c in ContentRef.from_json(ref).chunks
            )
            after = rows[-1][0]
        result.referenced = await marks.count()
        repo = await open_repository(runtime, tenant)
        listed: list[str] = []
        async for name in repo.list_chunk_names():
            listed.append(name)
            if len(listed) == PAGE:
                await _sweep(repo, listed, marks, result)
                listed = []
        await _sweep(repo, listed, marks, result)
    log.info("blob_gc", tenant_id=str(tenant.id), **result.__dict__)
    return result


async def _sweep(
    repo: TenantRepository, names: list[str], marks: ChunkMarks, result: GcResult
) -> None:
    """Delete those of ``names`` (listed chunks) that no version names."""
    result.scanned += len(names)
    kept = await marks.marked(names) if names else set()
    for name in names:
        if name in kept:
            continue
        try:
            size = await repo.store.size(repo.chunk_key(name))
            await repo.delete_chunk(name)
        except BlobLocked:
            result.locked += 1  # Object Lock keeps it until its retention date
            continue
        except BlobNotFound:
            continue
        result.deleted += 1
        result.deleted_bytes += size


async def request_account_purge(
    session: Any, principal: Any, tenant_id: uuid.UUID, account_id: uuid.UUID, *, ip: str | None
) -> Job:
    """The API's entry: an audited, explicit request to delete one account's data."""
    # The scoped row first: reached only through it, the tenant (which may be offboarded)
    # cannot tell a caller outside its scope whether it exists.
    # The row locked (as protecting the seat and the purge job lock it), so that a purge
    # asked for while the seat is being protected is either refused here or withdrawn there.
    account = await account_service.get_for_update(session, principal.scope, tenant_id, account_id)
    tenant = await tenant_service.get_including_deleted(session, tenant_id)
    refused = purge_refusal(tenant, account)
    if refused is not None and refused.code == "account_already_purged":
        raise Conflict("This account's data was already purged")
    if refused is not None:
        raise Conflict(
            "Release the seat first (PATCH protected=false); a protected seat is not purged"
        )
    job = await job_service.start_job(
        session,
        tenant,
        kind=JobKind.purge,
        trigger=JobTrigger.manual,
        requested_by=principal.actor,
        params={"account_id": str(account.id)},
    )
    await audit.record_for(
        session,
        principal,
        "purge.requested",
        tenant_id=tenant.id,
        target_type="account",
        target_id=account.id,
        details={"job_id": str(job.id), "display_name": account.display_name},
        ip=ip,
    )
    return job


async def enqueue_retention(session: Any) -> list[uuid.UUID]:
    """Scheduler step: once a day per tenant with a retention period, a retention purge."""
    started = []
    for tenant in await tenant_repository.due_retention(session, utcnow() - timedelta(days=1)):
        job = await job_service.start_job(
            session,
            tenant,
            kind=JobKind.purge,
            trigger=JobTrigger.scheduled,
            requested_by="retention",
            params={"retention": True},
        )
        started.append(job.id)
    return started
