from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, status

from safekeep.api.auth import BackupPrincipal, ReadPrincipal
from safekeep.api.deps import ClientIp, SessionDep
from safekeep.api.idempotency import IdempotencyDep
from safekeep.api.jobs.schemas import BackupRequest, JobDetail, JobOut, job_detail, job_out
from safekeep.api.problems import responses
from safekeep.api.schemas import Cursor, Limit, Page
from safekeep.tenants.job import service
from safekeep.tenants.models import JobKind, JobStatus

router = APIRouter(tags=["Jobs"])


@router.post(
    "/v1/tenants/{tenant_id}/backups",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=responses(401, 402, 403, 404, 409, 422),
)
async def start_backup(
    tenant_id: uuid.UUID,
    principal: BackupPrincipal,
    session: SessionDep,
    idempotency: IdempotencyDep,
    ip: ClientIp,
    body: BackupRequest | None = None,
) -> object:
    """A manual backup now, of all protected accounts or of some. It never moves the schedule."""
    if (replay := await idempotency.replay(principal)) is not None:
        return replay
    body = body or BackupRequest()
    job = await service.start_backup(
        session, principal, tenant_id, account_ids=body.account_ids, services=body.services, ip=ip
    )
    return await idempotency.save(principal, 202, await job_out(session, job))


@router.get(
    "/v1/tenants/{tenant_id}/jobs",
    response_model=Page[JobOut],
    responses=responses(400, 401, 403, 404, 422),
)
async def list_jobs(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    cursor: Cursor = None,
    limit: Limit = 50,
    kind: JobKind | None = Query(None),
    status: JobStatus | None = Query(None),
) -> Page[JobOut]:
    page = await service.list_jobs(
        session, principal.scope, tenant_id, kind=kind, status=status, cursor=cursor, limit=limit
    )
    return Page(items=[await job_out(session, j) for j in page.items], next_cursor=page.next_cursor)


@router.get("/v1/jobs/{job_id}", response_model=JobDetail, responses=responses(401, 403, 404, 422))
async def get_job(job_id: uuid.UUID, principal: ReadPrincipal, session: SessionDep) -> JobDetail:
    """Status, progress counters (summed over its accounts and services) and errors."""
    return await job_detail(session, await service.get(session, principal.scope, job_id))


@router.post(
    "/v1/jobs/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=responses(401, 402, 403, 404, 409, 422),
)
async def cancel_job(
    job_id: uuid.UUID, principal: BackupPrincipal, session: SessionDep, ip: ClientIp
) -> JobOut:
    """Ask the job to stop; a queued job stops at once, a running one between pages."""
    return await job_out(session, await service.cancel(session, principal, job_id, ip=ip))
