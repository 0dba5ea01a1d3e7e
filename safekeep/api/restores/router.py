from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from safekeep.api.auth import ReadPrincipal, RestorePrincipal
from safekeep.api.deps import ClientIp, SessionDep
from safekeep.api.idempotency import IdempotencyDep
from safekeep.api.jobs.schemas import JobOut, job_out
from safekeep.api.problems import responses
from safekeep.api.restores.schemas import RestoreRequest
from safekeep.api.schemas import Cursor, Limit, Page
from safekeep.backup.jobs import service as job_requests
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import JobKind

router = APIRouter(prefix="/v1/tenants/{tenant_id}/restores", tags=["Restore"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=responses(401, 402, 403, 404, 409, 422),
)
async def create_restore(
    tenant_id: uuid.UUID,
    body: RestoreRequest,
    principal: RestorePrincipal,
    session: SessionDep,
    idempotency: IdempotencyDep,
    ip: ClientIp,
) -> object:
    """Restore items, folders, an account's service, an account or the whole tenant, as of a
    point in time, to the original account or another one. Runs as a job; its report lists
    every item not restored, with the reason."""
    if (replay := await idempotency.replay(principal)) is not None:
        return replay
    job = await job_requests.request_restore(
        session, principal, tenant_id, body.model_dump(mode="json"), ip=ip
    )
    return await idempotency.save(principal, 202, await job_out(session, job))


@router.get("", response_model=Page[JobOut], responses=responses(400, 401, 403, 404, 422))
async def list_restores(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[JobOut]:
    page = await job_service.list_jobs(
        session,
        principal.scope,
        tenant_id,
        kind=JobKind.restore,
        status=None,
        cursor=cursor,
        limit=limit,
    )
    return Page(items=[await job_out(session, j) for j in page.items], next_cursor=page.next_cursor)
