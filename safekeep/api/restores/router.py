from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import Response

from safekeep.api.auth import ReadPrincipal, RestorePrincipal
from safekeep.api.deps import ClientIp, SessionDep
from safekeep.api.idempotency import idempotent
from safekeep.api.jobs.schemas import STARTS_JOB, JobOut, job_out, job_page
from safekeep.api.problems import responses
from safekeep.api.restores.schemas import RestoreRequest
from safekeep.api.schemas import Page, Paging
from safekeep.backup.jobs import service as job_requests
from safekeep.tenants.models import JobKind

router = APIRouter(prefix="/v1/tenants/{tenant_id}/restores", tags=["Restore"])


@router.post("", **STARTS_JOB)
@idempotent(202)
async def create_restore(
    tenant_id: uuid.UUID,
    body: RestoreRequest,
    principal: RestorePrincipal,
    session: SessionDep,
    ip: ClientIp,
) -> JobOut:
    """Restore items, folders, an account's service, an account or the whole tenant, as of a
    point in time, to the original account or another one. Runs as a job; its report lists
    every item not restored, with the reason."""
    job = await job_requests.request_restore(
        session, principal, tenant_id, body.model_dump(mode="json"), ip=ip
    )
    return await job_out(session, job)


@router.get("", response_model=Page[JobOut], responses=responses(400, 401, 403, 404, 422))
async def list_restores(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    paging: Paging,
) -> Response:
    page = await job_page(
        session, principal.scope, tenant_id, paging, kind=JobKind.restore, status=None
    )
    return Response(page, media_type="application/json")
