from __future__ import annotations

import asyncio
import time
import uuid
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from safekeep.api.auth import AnyWriterPrincipal, BackupPrincipal, ReadPrincipal
from safekeep.api.conditional import (
    IfNoneMatch,
    conditional,
    conditional_body,
    conditional_responses,
)
from safekeep.api.deps import ClientIp, SessionDep
from safekeep.api.idempotency import idempotent
from safekeep.api.jobs.schemas import (
    STARTS_JOB,
    BackupRequest,
    JobDetail,
    JobOut,
    job_detail,
    job_out,
    job_page,
    unfinished_job_page,
)
from safekeep.api.problems import responses
from safekeep.api.schemas import Page, Paging
from safekeep.tenants.job import service
from safekeep.tenants.models import JobKind, JobStatus

router = APIRouter(tags=["Jobs"])


@router.post("/v1/tenants/{tenant_id}/backups", **STARTS_JOB)
@idempotent(202)
async def start_backup(
    tenant_id: uuid.UUID,
    principal: BackupPrincipal,
    session: SessionDep,
    ip: ClientIp,
    body: BackupRequest | None = None,
) -> JobOut:
    """A manual backup now, of all protected accounts or of some. It never moves the schedule."""
    body = body or BackupRequest()
    job = await service.start_backup(
        session, principal, tenant_id, account_ids=body.account_ids, services=body.services, ip=ip
    )
    return await job_out(session, job)


@router.get(
    "/v1/tenants/{tenant_id}/jobs",
    response_model=Page[JobOut],
    responses={**conditional_responses(), **responses(400, 401, 403, 404, 422)},
)
async def list_jobs(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    paging: Paging,
    kind: JobKind | None = Query(None),
    status: JobStatus | None = Query(None),
    if_none_match: IfNoneMatch = None,
) -> Response:
    page = await job_page(session, principal.scope, tenant_id, paging, kind=kind, status=status)
    return conditional_body(page, if_none_match)


@router.get(
    "/v1/jobs",
    response_model=Page[JobOut],
    responses={**conditional_responses(), **responses(400, 401, 403, 422)},
)
async def list_unfinished_jobs(
    principal: ReadPrincipal,
    session: SessionDep,
    paging: Paging,
    kind: JobKind | None = Query(None),
    status: Literal["queued", "running"] | None = Query(
        None, description="One of the two unfinished states; default: both"
    ),
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The jobs not finished yet (queued or running) of every tenant the key sees, newest
    first: one poll for a portal's whole view of work in progress, instead of a list per
    tenant. With `If-None-Match`, `304` while none has moved. A job leaves this list when it
    finishes; its tenant's `/jobs` and the `backup.completed`, `restore.completed` and
    `export.ready` webhooks tell how it ended."""
    page = await unfinished_job_page(
        session,
        principal.scope,
        paging,
        kind=kind,
        status=JobStatus(status) if status else None,
    )
    return conditional_body(page, if_none_match)


# How long a poller should wait between looks at an unfinished job.
POLL_SECONDS = 5
# The most a long-poll (``wait``) holds an answer back.
MAX_WAIT_SECONDS = 30


def _poll_hint(job: JobOut) -> dict[str, str]:
    return {} if job.status.finished else {"Retry-After": str(POLL_SECONDS)}


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobDetail,
    responses={**conditional_responses(retry_after=True), **responses(401, 403, 404, 422)},
)
async def get_job(
    job_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    if_none_match: IfNoneMatch = None,
    wait: int = Query(
        0,
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="With `If-None-Match`: hold the answer up to this many seconds until the "
        "job changes (a long poll); 304 if it has not changed by then",
    ),
) -> Response:
    """Status, progress counters (summed over its accounts and services) and errors.

    Answers carry an `ETag`; polling with `If-None-Match` gets `304 Not Modified` while the job
    is unchanged, and `Retry-After` says how long to wait while it is queued or running."""
    deadline = time.monotonic() + wait
    while True:
        polled = await service.get_with_progress(session, principal.scope, job_id)
        detail = await job_detail(
            session, polled.job, polled.progress, has_issues=polled.has_issues
        )
        answer = conditional(detail, if_none_match, headers=_poll_hint(detail))
        if answer.status_code != 304 or detail.status.finished or time.monotonic() >= deadline:
            return answer
        # Hand the connection back while waiting, then read afresh.
        await session.commit()
        session.expire_all()
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


@router.post("/v1/jobs/{job_id}/cancel", **STARTS_JOB)
async def cancel_job(
    job_id: uuid.UUID, principal: AnyWriterPrincipal, session: SessionDep, ip: ClientIp
) -> JobOut:
    """Ask the job to stop; a queued job stops at once, a running one between pages. The key
    needs the scope that starts jobs of its kind: `backup` for backups and discoveries,
    `restore`, `export`, and `admin` for purges (403 otherwise). An export whose job is
    cancelled (or fails) ends `failed`."""
    return await job_out(session, await service.cancel(session, principal, job_id, ip=ip))
