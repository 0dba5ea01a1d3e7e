from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.api.policy.schemas import ALL, Service
from safekeep.api.problems import responses
from safekeep.api.schemas import PageWindow, RequestSchema, Schema, page_body
from safekeep.tenants.job import service
from safekeep.tenants.models import Job, JobKind, JobStatus, JobTrigger
from safekeep.tenants.pagination import Page
from safekeep.tenants.scope import TenantScope


class BackupRequest(RequestSchema):
    # An empty list is refused, not read as "not given": a client that filtered its
    # selection down to nothing must not start a backup of everything.
    account_ids: list[uuid.UUID] | None = Field(
        default=None,
        min_length=1,
        max_length=10_000,
        description="Only these accounts; default (absent or null): all protected",
    )
    services: list[Service] | None = Field(
        default=None,
        min_length=1,
        max_length=len(ALL),
        description="Only these services; default (absent or null): the policy's",
    )


class JobProgress(Schema):
    tasks_total: int
    tasks_done: int
    items: int
    bytes: int
    errors: int
    skipped: int
    graph_requests: int
    throttled: int


class RestoreTotals(Schema):
    """What a restore did with the items in its scope. A restore is ``succeeded`` when every
    item is in the target as asked (``restored`` + ``skipped_existing``), ``partial`` when
    some are not (``skipped`` + ``failed``, each listed in the job's issues with a reason)."""

    restored: int = Field(description="Items written into the target")
    skipped_existing: int = Field(
        description="Items already in the target as they were at the restore point and left "
        "alone (conflict skip or overwrite): the same Microsoft 365 item unchanged when "
        "restoring in place, or the copy an earlier restore made"
    )
    skipped: int = Field(
        description="Items not restored because a different item holds their place and the "
        "conflict rule is skip (e.g. another file under the same name)"
    )
    failed: int = Field(description="Items that could not be restored")
    noted: int = Field(
        default=0,
        description="Restored items with a caveat (such as attendees not invited, or list "
        "fields the target lacks), each in the job's issues with code restored_with_note",
    )
    bytes: int = Field(description="Bytes of the restored items")
    observed: int = Field(
        description="Things found in the target that are not in the restore point (such as "
        "ransomware-encrypted copies), reported and left alone"
    )


class JobIssueOut(Schema):
    id: uuid.UUID
    account_id: uuid.UUID | None
    service: str | None
    item_ref: str | None
    item_name: str | None
    code: str
    detail: str
    created_at: datetime


class JobOut(Schema):
    id: uuid.UUID
    tenant_id: uuid.UUID
    kind: JobKind
    trigger: JobTrigger
    status: JobStatus
    params: dict[str, Any]
    result: dict[str, Any]
    progress: JobProgress
    restore: RestoreTotals | None = Field(
        default=None, description="Restore jobs, once finished: what happened to the items"
    )
    error_code: str | None
    error_detail: str | None
    requested_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None


class JobDetail(JobOut):
    issues: list[JobIssueOut] = Field(
        description="Up to 100 issues: items not processed, with reasons, and items restored "
        "with a caveat (code restored_with_note)"
    )


# What a POST that starts a job declares: 202 with the job, and the refusals it can meet.
STARTS_JOB: dict[str, Any] = {
    "status_code": 202,
    "response_model": JobOut,
    "responses": responses(401, 402, 403, 404, 409, 422),
}


async def job_out(session: AsyncSession, job: Job | Row[Any]) -> JobOut:
    progress = await service.progress(session, job)
    return JobOut.model_validate(_plain(job, progress))


async def job_page(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID,
    paging: PageWindow,
    *,
    kind: JobKind | None,
    status: JobStatus | None,
) -> bytes:
    """A page of a tenant's jobs as the API shows it (``Page[JobOut]``, written), for the job
    list and the restore list (restores are jobs): the progress of the whole page is read in
    one statement, and the page is written from its rows without a model per job."""
    page = await paging.read(service.list_jobs, session, scope, tenant_id, kind=kind, status=status)
    return await _written(session, page)


async def unfinished_job_page(
    session: AsyncSession,
    scope: TenantScope,
    paging: PageWindow,
    *,
    kind: JobKind | None,
    status: JobStatus | None,
) -> bytes:
    """``job_page`` for the queued and running jobs of every tenant the scope sees."""
    page = await paging.read(service.list_unfinished_jobs, session, scope, kind=kind, status=status)
    return await _written(session, page)


async def _written(session: AsyncSession, page: Page[Row[Any]]) -> bytes:
    progress = await service.progress_many(session, page.items)
    items = [_plain(job, progress[job.id]) for job in page.items]
    return page_body(JobOut, items, page.next_cursor)


async def job_detail(
    session: AsyncSession, job: Row[Any], progress: dict[str, int], *, has_issues: bool
) -> JobDetail:
    """A job as its poll shows it; its issues are read only when it has some."""
    found = await service.issues(session, job) if has_issues else ()
    issues = [JobIssueOut.model_validate(i) for i in found]
    return JobDetail.model_validate({**_plain(job, progress), "issues": issues})


# JobOut's parts worked out rather than read from the job's row, in their own models' order.
_PROGRESS = tuple(JobProgress.model_fields)
_TOTALS = tuple(RestoreTotals.model_fields)


def _plain(job: Job | Row[Any], progress: dict[str, int]) -> dict[str, Any]:
    """JobOut's fields of ``job`` as plain values, in the model's order (its progress and
    restore totals as dicts in theirs), so that a page is written from them as the models
    would write it. A row's columns are read through its mapping (in C; its attributes
    cost three times as much, and a page has fifty jobs)."""
    columns: Any = job._mapping if isinstance(job, Row) else None
    totals = (job.result or {}).get("totals") if job.kind == JobKind.restore else None
    restore = {k: int(totals.get(k) or 0) for k in _TOTALS} if isinstance(totals, dict) else None
    fields: dict[str, Any] = {}
    for name in JobOut.model_fields:
        if name == "progress":
            fields[name] = {k: progress[k] for k in _PROGRESS}
        elif name == "restore":
            fields[name] = restore
        else:
            fields[name] = columns[name] if columns is not None else getattr(job, name)
    return fields
