"""Cancelling a job needs the scope that starts jobs of its kind; an export whose job ends
without it fails instead of staying pending."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from safekeep.tenants.models import Export, ExportStatus, Job, JobKind, JobStatus
from tests.api.conftest import World
from tests.factories import add_job


async def queued_jobs(world: World) -> tuple[dict[JobKind, uuid.UUID], uuid.UUID]:
    """One queued job of each kind in MSP A's tenant, and the export the export job builds."""
    tenant_id = world.a.tenant.id
    async with world.runtime.db.session() as session:
        jobs = {
            kind: (await add_job(session, tenant_id, kind=kind, status=JobStatus.queued)).id
            for kind in JobKind
        }
        export = Export(tenant_id=tenant_id, job_id=jobs[JobKind.export])
        session.add(export)
        await session.flush()
        export_id = export.id
    return jobs, export_id


async def statuses(world: World) -> dict[uuid.UUID, JobStatus]:
    async with world.runtime.db.session() as session:
        return {j.id: j.status for j in (await session.scalars(select(Job))).all()}


async def test_a_key_cancels_only_the_kinds_of_job_its_scope_starts(
    client: httpx.AsyncClient, world: World
) -> None:
    jobs, export_id = await queued_jobs(world)
    backup_key = await world.key(["backup"])
    before = await statuses(world)
    for kind in (JobKind.purge, JobKind.restore, JobKind.export):
        r = await client.post(f"/v1/jobs/{jobs[kind]}/cancel", headers=backup_key)
        assert r.status_code == 403, (kind, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert f"'{'admin' if kind == JobKind.purge else kind.value}' scope" in r.json()["detail"]
    assert await statuses(world) == before  # refused: nothing changed
    readers = await world.key(["read"])
    r = await client.post(f"/v1/jobs/{jobs[JobKind.backup]}/cancel", headers=readers)
    assert r.status_code == 403
    allowed = {
        JobKind.backup: backup_key,
        JobKind.discover: backup_key,
        JobKind.restore: await world.key(["restore"]),
        JobKind.export: await world.key(["export"]),
        JobKind.purge: await world.key(["admin"]),
    }
    for kind, key in allowed.items():
        r = await client.post(f"/v1/jobs/{jobs[kind]}/cancel", headers=key)
        assert (r.status_code, r.json()["status"]) == (202, "cancelled"), kind
    export = await client.get(f"/v1/exports/{export_id}", headers=world.a.msp.headers)
    assert export.json()["status"] == ExportStatus.failed


async def test_an_export_whose_job_fails_is_failed_not_pending(world: World) -> None:
    from safekeep.backup.jobs.lifecycle import JobFailed, run_job

    jobs, export_id = await queued_jobs(world)

    async def failing(*_args: object) -> None:
        raise JobFailed("nothing_to_export", "No backup exists for that scope")

    await run_job(world.runtime, str(jobs[JobKind.export]), failing)  # type: ignore[arg-type]
    async with world.runtime.db.session() as session:
        export = await session.get(Export, export_id)
        job = await session.get(Job, jobs[JobKind.export])
    assert export is not None and job is not None
    assert (job.status, export.status) == (JobStatus.failed, ExportStatus.failed)
