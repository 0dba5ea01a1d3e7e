"""Export jobs: the same scopes as restore, written as one ZIP under the tenant's prefix
(``tenants/{id}/exports/{export_id}.zip``) that expires after ``SAFEKEEP_EXPORT_TTL_HOURS``."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.backup.context import open_repository
from safekeep.backup.export.zipper import ZipMember, safe_name, write_zip
from safekeep.backup.jobs.lifecycle import JobFailed, JobOutcome, run_job
from safekeep.backup.selection import Scope, Unit, build_selection, resolve_units
from safekeep.backup.services import module_for
from safekeep.backup.services.base import ExportContext
from safekeep.runtime import Runtime, unit_of_work
from safekeep.storage.errors import BlobLocked, BlobNotFound
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Export, ExportStatus, Job, Tenant, utcnow
from safekeep.tenants.scope import TenantScope
from safekeep.tenants.tenant.service import system_scope


def export_key(tenant: Tenant, export_id: uuid.UUID) -> str:
    return f"{tenant.storage_prefix}exports/{export_id}.zip"


async def run_export_job(runtime: Runtime, job_id: str) -> None:
    await run_job(runtime, job_id, export)


async def _members(
    runtime: Runtime,
    repo: TenantRepository,
    tenant_scope: TenantScope,
    units: list[Unit],
    scope: Scope,
    options: dict[str, object],
) -> AsyncIterator[ZipMember]:
    for unit in units:
        module = module_for(unit.service)
        selection = await build_selection(runtime, tenant_scope, unit, scope)
        ctx = ExportContext(
            runtime=runtime,
            repo=repo,
            account=unit.account,
            service=unit.service,
            options=dict(options),
        )
        top = (
            f"{safe_name(unit.account.principal_name or unit.account.display_name)}/{unit.service}"
        )
        async for entry in module.export(ctx, selection):
            parts = [safe_name(p) for p in entry.path.split("/") if p]
            meta: dict[str, object] = {"account_id": str(unit.account.id), "service": unit.service}
            if entry.version is not None:
                meta |= {"item_id": str(entry.version.item_id), "version_id": str(entry.version.id)}
            yield ZipMember("/".join([top, *parts]), entry.open(), entry.modified_at, meta)


async def export(runtime: Runtime, job: Job, tenant: Tenant) -> JobOutcome:
    tenant_scope = system_scope(tenant)
    scope = Scope.from_params(job.params)
    units = await resolve_units(runtime, tenant_scope, tenant, scope)
    if not units:
        raise JobFailed("nothing_to_export", "No backup exists for that scope and point in time")
    async with unit_of_work(runtime) as session:
        row = await session.get(Export, uuid.UUID(job.params["export_id"]))
        if row is None:
            raise JobFailed("export_missing", "The export record is gone")
        export_id = row.id
        if row.status == ExportStatus.ready and row.blob_key and row.sha256:
            # Made downloadable by an earlier run whose job was not settled with it (before
            # the two committed together): settle the job with it, never rewrite it under
            # a reader.
            return _outcome(row.id, row.size or 0, row.items or 0, row.sha256)
    repo = await open_repository(runtime, tenant)
    key = export_key(tenant, export_id)
    summary = {
        "tenant_id": str(tenant.id),
        "export_id": str(export_id),
        "created_at": utcnow().isoformat(),
        "scope": job.params.get("scope"),
        "at": job.params.get("at"),
        "snapshots": [
            {
                "account_id": str(u.account.id),
                "service": u.service,
                "snapshot_id": str(u.snapshot.id),
                "completed_at": u.snapshot.completed_at,
            }
            for u in units
        ],
    }
    result = await write_zip(
        await runtime.blobs(),
        key,
        _members(runtime, repo, tenant_scope, units, scope, job.params.get("options", {})),
        summary=summary,
    )

    async def ready(session: AsyncSession) -> None:
        row = await session.get(Export, export_id)
        if row is None:  # deleted with its tenant meanwhile: the job ends all the same
            return
        row.status = ExportStatus.ready
        row.blob_key = key
        row.size = result.size
        row.sha256 = result.sha256
        row.items = len(result.entries)
        row.expires_at = utcnow() + timedelta(hours=runtime.settings.export_ttl_hours)

    # Downloadable in the transaction that settles the job, and only if this run settles it:
    # a worker that dies in between leaves neither, and the retry writes the ZIP again
    # before anyone could read it.
    outcome = _outcome(export_id, result.size, len(result.entries), result.sha256)
    outcome.settle_with = ready
    return outcome


def _outcome(export_id: uuid.UUID, size: int, files: int, sha256: str) -> JobOutcome:
    return JobOutcome(
        result={"export_id": str(export_id), "size": size, "files": files, "sha256": sha256},
        event=("export.ready", {"export_id": str(export_id), "size": size}),
    )


async def expire_exports(runtime: Runtime) -> int:
    """Scheduler step: exports past their expiry lose their ZIP and say so."""
    store = await runtime.blobs()
    async with unit_of_work(runtime) as session:
        expired = await catalog.expired_exports(session, utcnow(), 200)
        for export in expired:
            if export.blob_key:
                with contextlib.suppress(BlobNotFound, BlobLocked):
                    await store.delete(export.blob_key)
            export.status = ExportStatus.expired
    return len(expired)
