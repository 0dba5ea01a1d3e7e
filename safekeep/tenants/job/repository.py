from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    Update,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.db import read_rows
from safekeep.tenants.models import (
    UNFINISHED_SNAPSHOT,
    Account,
    Export,
    ExportStatus,
    Job,
    JobIssue,
    JobKind,
    JobStatus,
    JobTask,
    Policy,
    Snapshot,
    TaskStatus,
    Tenant,
    utcnow,
)
from safekeep.tenants.models.base import table_of
from safekeep.tenants.models.job import UNFINISHED_JOBS_SQL
from safekeep.tenants.pagination import Page, keyset_order, keyset_values, page_of_rows
from safekeep.tenants.scope import (
    TenantScope,
    bound_tenant_filter,
    bound_tenant_rows,
    get_scoped,
    looked_up_tenant_visible,
)


async def get(session: AsyncSession, scope: TenantScope, job_id: uuid.UUID) -> Job | None:
    return await get_scoped(session, scope, Job, job_id)


async def get_system(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    """Workers load the job they were handed by our own enqueue, then scope by its tenant."""
    return await session.get(Job, job_id)


@cache
def _page(limited: bool, equal: tuple[str, ...], after: bool) -> Select[Any]:
    """The statement of one shape of jobs page, built once (see ``keyset_order``); rows of
    every column rather than entities, as a list only reads them."""
    stmt = bound_tenant_rows(Job, Job.__table__.c, limited=limited, equal=equal)
    return keyset_order(stmt, Job, after=after)


async def list_page(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID,
    *,
    kind: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> Page[Row[Any]]:
    """A page of a tenant's jobs as rows of the job table (a list reads, it changes nothing)."""
    filters = {"kind": kind, "status": status}
    return await _read_page(session, _page, scope, {"tenant_id": tenant_id}, filters, cursor, limit)


async def _read_page(
    session: AsyncSession,
    statement: Callable[[bool, tuple[str, ...], bool], Select[Any]],
    scope: TenantScope,
    fixed: dict[str, Any],
    filters: dict[str, str | None],
    cursor: str | None,
    limit: int,
) -> Page[Row[Any]]:
    """A page of jobs from ``statement`` (built once per shape: the scope's kind, the
    ``filters`` given, a cursor or not), run with ``fixed`` and those values."""
    given = {name: value for name, value in filters.items() if value}
    stmt = statement(scope.limited, tuple(given), bool(cursor))
    values = {**fixed, **scope.bound(), **keyset_values(cursor, limit), **given}
    return page_of_rows(await read_rows(session, stmt, values), limit)


@cache
def _unfinished_page(limited: bool, equal: tuple[str, ...], after: bool) -> Select[Any]:
    """An MSP's unfinished jobs across its tenants: read first, alone, through the index of
    jobs by status and MSP; then each job's tenant looked up by its key for the scope and
    liveness; then sorted into the page. The cost is that MSP's work in progress (a few jobs
    per tenant), never the history behind it nor other MSPs' work. The read is a
    materialised step and the tenant a scalar subquery (which PostgreSQL cannot turn into a
    join) because, given a join to choose, PostgreSQL walked the jobs' time index, or the
    MSP's tenants and each one's history (``bench/msp_jobs.py``: an MSP of 1,000 tenants
    with 200 jobs each among 20,000 other jobs running paid 21 ms a poll, 355 ms with the
    prepared statement's plan, and after this 2.8 ms, as with none running)."""
    unfinished = select(*Job.__table__.c).where(
        Job.msp_id == bindparam("scope_msp_id"), text(UNFINISHED_JOBS_SQL)
    )
    for name in equal:
        unfinished = unfinished.where(getattr(Job, name) == bindparam(name))
    found = unfinished.cte("unfinished").prefix_with("MATERIALIZED")
    visible = looked_up_tenant_visible(found.c.tenant_id, limited=limited)
    return keyset_order(select(*found.c).where(visible), found.c, after=after)


async def list_unfinished_page(
    session: AsyncSession,
    scope: TenantScope,
    *,
    kind: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> Page[Row[Any]]:
    """A page of the queued and running jobs of every tenant the scope sees, newest first."""
    filters = {"kind": kind, "status": status}
    return await _read_page(session, _unfinished_page, scope, {}, filters, cursor, limit)


_FINISHED_TASK = (TaskStatus.succeeded, TaskStatus.partial, TaskStatus.failed, TaskStatus.cancelled)
_NO_PROGRESS = {
    "tasks_total": 0,
    "tasks_done": 0,
    "items": 0,
    "bytes": 0,
    "errors": 0,
    "skipped": 0,
    "graph_requests": 0,
    "throttled": 0,
}


# Constants in the SQL text, not parameters: the job poll and every task's tally count with
# them, and an ``in_()`` of values is an expanding parameter, rendered again (a regular
# expression over the statement) on each execution, as each constant was a bound value.
_ONE: ColumnElement[Any] = literal_column("1")
_ZERO: ColumnElement[Any] = literal_column("0")


def _counts_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, _ONE), else_=_ZERO))


def _finished() -> ColumnElement[bool]:
    """The task has ended (``_FINISHED_TASK``)."""
    return JobTask.status.in_([literal_column(f"'{s.value}'") for s in _FINISHED_TASK])


def _progress_columns() -> list[Any]:
    """The counters of ``_NO_PROGRESS``, in its order, as aggregates over ``JobTask`` rows."""
    return [
        func.count(JobTask.id),
        _counts_if(_finished()),
        func.sum(JobTask.items),
        func.sum(JobTask.bytes),
        func.sum(JobTask.errors),
        func.sum(JobTask.skipped),
        func.sum(JobTask.requests),
        func.sum(JobTask.throttled),
    ]


def _progress_of(values: Sequence[Any]) -> dict[str, int]:
    return {name: int(value or 0) for name, value in zip(_NO_PROGRESS, values, strict=True)}


@cache
def _job_with_progress(limited: bool) -> Select[Any]:
    """A job, its progress counters and whether it has issues, in one statement (what a
    poller asks for), built once per kind of scope."""
    totals = (
        select(*(c.label(name) for c, name in zip(_progress_columns(), _NO_PROGRESS, strict=True)))
        .where(JobTask.job_id == bindparam("job_id"))
        .subquery()
    )
    has_issues = exists().where(JobIssue.job_id == bindparam("job_id"))
    return (
        select(*Job.__table__.c, *totals.c, has_issues.label("has_issues"))
        .join(totals, true())
        .where(Job.id == bindparam("job_id"), bound_tenant_filter(Job.tenant_id, limited=limited))
    )


@dataclass(frozen=True)
class Polled:
    """What a poll of one job reads in one statement."""

    job: Row[Any]  # a row of the job table: a poll reads, it changes nothing
    progress: dict[str, int]
    has_issues: bool  # when false, the issues need no statement of their own


async def get_with_progress(
    session: AsyncSession, scope: TenantScope, job_id: uuid.UUID
) -> Polled | None:
    stmt = _job_with_progress(scope.limited)
    rows = await read_rows(session, stmt, {"job_id": job_id, **scope.bound()})
    if not rows:
        return None
    row = rows[0]
    counters = [row._mapping[name] for name in _NO_PROGRESS]
    return Polled(row, _progress_of(counters), bool(row.has_issues))


@cache
def _progress_many() -> Select[Any]:
    return (
        select(JobTask.job_id, *_progress_columns())
        .where(JobTask.job_id.in_(bindparam("job_ids", expanding=True)))
        .group_by(JobTask.job_id)
    )


async def progress_many(
    session: AsyncSession, job_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """Progress counters of several jobs in one grouped statement (a page of jobs would
    otherwise cost a query per job)."""
    if not job_ids:
        return {}
    rows = await read_rows(session, _progress_many(), {"job_ids": list(job_ids)})
    found = {row[0]: _progress_of(row[1:]) for row in rows}
    return {job_id: found.get(job_id, dict(_NO_PROGRESS)) for job_id in job_ids}


def settled_progress(job: Job | Row[Any]) -> dict[str, int] | None:
    """The progress a finished job was settled with, kept in its result when its last task
    ended (``_finish_job`` in the backup engine); None for any other job."""
    if not job.status.finished or not isinstance(job.result, dict):
        return None
    kept = job.result.get("progress")
    if not isinstance(kept, dict) or kept.keys() != _NO_PROGRESS.keys():
        return None
    if not all(type(value) is int for value in kept.values()):
        return None
    return dict(kept)


async def progress(session: AsyncSession, job_id: uuid.UUID) -> dict[str, int]:
    return (await progress_many(session, [job_id]))[job_id]


async def tasks(session: AsyncSession, job_id: uuid.UUID) -> list[JobTask]:
    stmt = select(JobTask).where(JobTask.job_id == job_id).order_by(JobTask.created_at)
    return list((await session.execute(stmt)).scalars())


async def get_task(session: AsyncSession, task_id: uuid.UUID) -> JobTask | None:
    return await session.get(JobTask, task_id)


@dataclass(frozen=True)
class TaskToRun:
    """A task with everything its run reads first (None where the row is gone)."""

    task: JobTask
    job: Job
    tenant: Tenant | None
    account: Account | None
    policy: Policy | None


@cache
def _task_to_run() -> Select[JobTask, Job, Tenant, Account, Policy]:
    return (
        select(JobTask, Job, Tenant, Account, Policy)
        .join(Job, Job.id == JobTask.job_id)
        .outerjoin(Tenant, Tenant.id == JobTask.tenant_id)
        # The account under the task's own tenant only (what a scoped load would allow).
        .outerjoin(
            Account, and_(Account.id == JobTask.account_id, Account.tenant_id == JobTask.tenant_id)
        )
        .outerjoin(Policy, Policy.tenant_id == JobTask.tenant_id)
        .where(JobTask.id == bindparam("task_id"))
    )


async def task_to_run(session: AsyncSession, task_id: uuid.UUID) -> TaskToRun | None:
    """A task, its job, tenant, account and policy in one statement: a short incremental
    task is mostly bookkeeping, and these were five loads of their own."""
    row = (await session.execute(_task_to_run(), {"task_id": task_id})).one_or_none()
    if row is None:
        return None
    task, job, tenant, account, policy = row
    return TaskToRun(task, job, tenant, account, policy)


@cache
def _issues(limit: int) -> Select[Any]:
    return (
        select(*JobIssue.__table__.c)
        .where(JobIssue.job_id == bindparam("job_id"))
        .order_by(JobIssue.created_at)
        .limit(limit)
    )


async def issues(session: AsyncSession, job_id: uuid.UUID, limit: int = 100) -> Sequence[Row[Any]]:
    """The job's first issues, as rows of the issue table."""
    return await read_rows(session, _issues(limit), {"job_id": job_id})


async def active_for_tenant(session: AsyncSession, tenant_id: uuid.UUID, kind: str) -> list[Job]:
    stmt = select(Job).where(
        Job.tenant_id == tenant_id,
        Job.kind == kind,
        Job.status.in_([JobStatus.queued, JobStatus.running]),
    )
    return list((await session.execute(stmt)).scalars())


async def unfinished_purges_of(
    session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> list[Job]:
    """The tenant's queued and running purges of one account (a tenant has few purge jobs
    unfinished at a time: their params are read here rather than indexed)."""
    wanted = str(account_id)
    return [
        job
        for job in await active_for_tenant(session, tenant_id, JobKind.purge)
        if job.params.get("account_id") == wanted
    ]


# How many of a tenant's last backups ``last_durations`` looks through.
DURATION_HISTORY = 3


async def last_durations(
    session: AsyncSession, tenant_id: uuid.UUID, *, before: uuid.UUID
) -> dict[tuple[uuid.UUID | None, str], float]:
    """How long each account's service took, in seconds, the last time it was backed up in
    one of the tenant's last few backup jobs other than ``before``."""
    recent = (
        select(Job.id)
        .where(Job.tenant_id == tenant_id, Job.kind == JobKind.backup, Job.id != before)
        .order_by(Job.created_at.desc())
        .limit(DURATION_HISTORY)
        .scalar_subquery()
    )
    stmt = (
        select(JobTask.account_id, JobTask.service, JobTask.started_at, JobTask.finished_at)
        .join(Job, Job.id == JobTask.job_id)
        .where(
            JobTask.job_id.in_(recent),
            JobTask.status.in_([TaskStatus.succeeded, TaskStatus.partial]),
        )
        .order_by(Job.created_at.desc())
    )
    found: dict[tuple[uuid.UUID | None, str], float] = {}
    for account_id, service, started, finished in await session.execute(stmt):
        if started is not None and finished is not None:
            found.setdefault((account_id, service), (finished - started).total_seconds())
    return found


async def stale_unfinished(
    session: AsyncSession, before: datetime, limit: int, *, lease_stale_before: datetime
) -> list[Job]:
    """Jobs still queued or running with no sign of life since ``before``: their message was
    lost (embedded queue restarted, a crash between commit and send) and must be sent again.
    A job whose run holds a lease renewed since ``lease_stale_before`` is alive, whatever
    ``updated_at`` says: sending it again would only meet its lease."""
    stmt = (
        select(Job)
        .where(
            Job.status.in_([JobStatus.queued, JobStatus.running]),
            Job.updated_at < before,
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < lease_stale_before),
        )
        .order_by(Job.created_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


@cache
def _touch() -> Update:
    job = table_of(Job).c
    return (
        update(table_of(Job))
        .where(job.id == bindparam("job_id"))
        .values(updated_at=bindparam("t_now", type_=job.updated_at.type))
    )


async def touch(session: AsyncSession, job_id: uuid.UUID, now: datetime) -> None:
    """The job is alive (a task's heartbeat): one cached Core statement."""
    await session.execute(_touch(), {"job_id": job_id, "t_now": now})


def _lease_free(
    status: ColumnElement[Any], heartbeat_at: ColumnElement[Any], queued: Any, running: Any
) -> ColumnElement[bool]:
    """The lease of a task or a single-step job may be taken: it is queued, or running with
    no lease (given back for a retry, or never taken) or one whose holder stopped renewing it
    before ``stale_before`` (a killed worker). One condition for both, so that they agree."""
    return or_(
        status == queued,
        and_(
            status == running,
            or_(heartbeat_at.is_(None), heartbeat_at < bindparam("stale_before")),
        ),
    )


@cache
def _claim_job() -> Update:
    job = table_of(Job).c
    now = bindparam("now", type_=job.heartbeat_at.type)
    return (
        update(table_of(Job))
        .where(
            job.id == bindparam("job_id"),
            _lease_free(job.status, job.heartbeat_at, JobStatus.queued, JobStatus.running),
        )
        .values(
            status=JobStatus.running,
            heartbeat_at=now,
            updated_at=now,
            started_at=func.coalesce(job.started_at, now),
        )
    )


async def claim_job(
    session: AsyncSession, job_id: uuid.UUID, *, now: datetime, stale_before: datetime
) -> bool:
    """Take a single-step job's lease, as ``claim_task`` takes a task's: it is queued, or
    running with no live lease. Exactly one of several deliveries wins (True); the others
    must leave the run to the holder."""
    values = {"job_id": job_id, "now": now, "stale_before": stale_before}
    return bool((await session.execute(_claim_job(), values)).rowcount)  # type: ignore[attr-defined]


@cache
def _renew_job() -> Update:
    job = table_of(Job).c
    now = bindparam("r_now", type_=job.heartbeat_at.type)
    return (
        update(table_of(Job))
        .where(
            job.id == bindparam("job_id"),
            job.status == JobStatus.running,
            job.heartbeat_at.is_not(None),
        )
        .values(heartbeat_at=now, updated_at=now)
    )


async def renew_job_lease(session: AsyncSession, job_id: uuid.UUID, now: datetime) -> bool:
    """The run is alive: its lease and ``updated_at`` move to ``now`` (False when the job
    has ended or its lease was given back meanwhile: nothing is renewed)."""
    values = {"job_id": job_id, "r_now": now}
    return bool((await session.execute(_renew_job(), values)).rowcount)  # type: ignore[attr-defined]


async def release_job_lease(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Give a running job's lease back, so that its retry takes it at once."""
    job = table_of(Job).c
    await session.execute(
        update(table_of(Job))
        .where(job.id == job_id, job.status == JobStatus.running)
        .values(heartbeat_at=None, updated_at=utcnow())
    )


@dataclass(frozen=True)
class Claimed:
    """A task's lease, taken: the attempt this is, and the snapshot the task now names."""

    attempts: int
    snapshot_id: uuid.UUID | None


@cache
def _claim(names_snapshot: bool) -> Update:
    """The claim statement, built once per shape: a task's bookkeeping is a handful of
    statements, and building and keying each anew was a fair share of its cost. On the
    Core table (``table_of``), as every hot statement here."""
    task, snapshot = table_of(JobTask).c, table_of(Snapshot).c
    now = bindparam("now", type_=task.heartbeat_at.type)
    values: dict[str, Any] = {
        "status": TaskStatus.running,
        "attempts": task.attempts + 1,
        "heartbeat_at": now,
        "started_at": func.coalesce(task.started_at, now),
    }
    if names_snapshot:
        running = (
            select(case((snapshot.status.in_(UNFINISHED_SNAPSHOT), snapshot.id), else_=None))
            .where(snapshot.account_id == task.account_id, snapshot.service == task.service)
            .order_by(snapshot.seq.desc())
            .limit(1)
            .scalar_subquery()
        )
        new_id = bindparam("new_snapshot_id", type_=task.snapshot_id.type)
        values["snapshot_id"] = func.coalesce(running, new_id)
    return (
        update(table_of(JobTask))
        .where(
            task.id == bindparam("task_id"),
            _lease_free(task.status, task.heartbeat_at, TaskStatus.queued, TaskStatus.running),
        )
        .values(**values)
        .returning(task.attempts, task.snapshot_id)
    )


async def claim_task(
    session: AsyncSession,
    task_id: uuid.UUID,
    *,
    now: datetime,
    stale_before: datetime,
    new_snapshot_id: uuid.UUID | None = None,
) -> Claimed | None:
    """Take the task's lease: it is queued, or its runner stopped beating before
    ``stale_before`` (a killed worker). Exactly one of several deliveries wins; it gets the
    attempt this is (counting it), the others None.

    With ``new_snapshot_id`` the same statement names the snapshot the run will most likely
    use: the account and service's newest one if it is still running (a retry resumes it),
    else a new one with that id (``SnapshotRun.begin`` corrects it if it chooses otherwise)."""
    values: dict[str, Any] = {"task_id": task_id, "now": now, "stale_before": stale_before}
    if new_snapshot_id is not None:
        values["new_snapshot_id"] = new_snapshot_id
    stmt = _claim(new_snapshot_id is not None)
    row = (await session.execute(stmt, values)).one_or_none()
    return None if row is None else Claimed(int(row[0]), row[1])


@cache
def _name_snapshot() -> Update:
    task = table_of(JobTask).c
    return (
        update(table_of(JobTask))
        .where(task.id == bindparam("task_id"))
        .values(snapshot_id=bindparam("n_snapshot_id"))
    )


async def name_snapshot(session: AsyncSession, task_id: uuid.UUID, snapshot_id: uuid.UUID) -> None:
    """Record which snapshot the task runs into (a statement, not the session's copy of the
    row, which the claim's own statement has made stale)."""
    await session.execute(_name_snapshot(), {"task_id": task_id, "n_snapshot_id": snapshot_id})


@cache
def _settle(figures: tuple[str, ...]) -> Update:
    """The settling statement for one set of figures, built once (see ``_claim``)."""
    task = table_of(JobTask).c
    now = bindparam("s_now", type_=task.finished_at.type)
    values: dict[str, Any] = {"status": bindparam("s_status"), "finished_at": now}
    values["heartbeat_at"] = now
    values.update({name: bindparam(f"s_{name}") for name in figures})
    return update(table_of(JobTask)).where(task.id == bindparam("task_id")).values(**values)


async def settle_task(
    session: AsyncSession, task_id: uuid.UUID, *, status: TaskStatus, now: datetime, **figures: int
) -> None:
    """End a task with its last progress figures (items, bytes, skipped, requests...), in
    one statement: whoever settles it knows them all."""
    names = tuple(sorted(figures))
    values: dict[str, Any] = {"task_id": task_id, "s_status": status, "s_now": now}
    values.update({f"s_{name}": figures[name] for name in names})
    await session.execute(_settle(names), values)


async def set_job_status(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    from_statuses: Sequence[JobStatus],
    to_status: JobStatus,
    now: datetime,
    **values: object,
) -> bool:
    """Compare-and-set on a job's status, so that of several finishers exactly one wins."""
    extra: dict[str, object] = dict(values)
    if to_status in (JobStatus.succeeded, JobStatus.partial, JobStatus.failed, JobStatus.cancelled):
        extra.setdefault("finished_at", now)
    if to_status == JobStatus.running:
        extra.setdefault("started_at", now)
    job = table_of(Job).c
    stmt = (
        update(table_of(Job))
        .where(job.id == job_id, job.status.in_(list(from_statuses)))
        .values(status=to_status, updated_at=now, **extra)
    )
    won = bool((await session.execute(stmt)).rowcount)  # type: ignore[attr-defined]
    if won and to_status in (JobStatus.failed, JobStatus.cancelled):
        await fail_export_of(session, job_id)
    return won


async def settle_cancelled(session: AsyncSession, job_id: uuid.UUID) -> bool:
    """End an unfinished job whose cancellation was asked for as cancelled (whether this call
    won, as ``set_job_status``)."""
    return await set_job_status(
        session,
        job_id,
        from_statuses=[JobStatus.queued, JobStatus.running],
        to_status=JobStatus.cancelled,
        now=utcnow(),
    )


async def fail_export_of(session: AsyncSession, job_id: uuid.UUID) -> None:
    """A job that ends without its export (failed, or cancelled) fails the export it was to
    build, so that a client polling the export sees it end instead of pending for ever."""
    export = table_of(Export).c
    await session.execute(
        update(table_of(Export))
        .where(export.job_id == job_id, export.status == ExportStatus.pending)
        .values(status=ExportStatus.failed)
    )


@dataclass(frozen=True)
class TaskTally:
    """How a job's tasks stand, counted by the database."""

    unfinished: int
    succeeded: int
    partial: int
    failed: int
    cancelled: int
    progress: dict[str, int]


def _count(status: TaskStatus) -> Any:
    return _counts_if(JobTask.status == literal_column(f"'{status.value}'"))


@cache
def _tally() -> Select[Any]:
    return select(
        _counts_if(~_finished()),
        _count(TaskStatus.succeeded),
        _count(TaskStatus.partial),
        _count(TaskStatus.failed),
        _count(TaskStatus.cancelled),
        *_progress_columns(),
    ).where(JobTask.job_id == bindparam("job_id"))


async def tally(session: AsyncSession, job_id: uuid.UUID) -> TaskTally:
    """The job's tasks counted by status, with its progress counters, in one row: every task
    that ends asks whether it was the last, and reading every task's status for that made a
    job of n tasks read n * n rows."""
    row = (await session.execute(_tally(), {"job_id": job_id})).one()
    unfinished, succeeded, partial, failed, cancelled = (int(v or 0) for v in row[:5])
    return TaskTally(unfinished, succeeded, partial, failed, cancelled, _progress_of(row[5:]))


@cache
def _lock() -> Select[JobStatus, datetime | None, uuid.UUID]:
    job = table_of(Job).c
    return (
        select(job.status, job.cancel_requested_at, job.tenant_id)
        .where(job.id == bindparam("job_id"))
        .with_for_update()
    )


async def lock(
    session: AsyncSession, job_id: uuid.UUID
) -> Row[JobStatus, datetime | None, uuid.UUID] | None:
    """Take the job row's lock for the rest of the transaction, so that the last tasks of a
    job, finishing at the same moment, settle it one after the other (each then sees the
    others' committed status). Returns what settling needs (``status``,
    ``cancel_requested_at``, ``tenant_id``) as read once the lock is held: a caller that
    waited sees what the holder committed. SQLite serialises writers and has no FOR UPDATE.
    Every task that ends takes it, so the statement is built once, on the Core table (a row,
    not an entity loaded into the session)."""
    return (await session.execute(_lock(), {"job_id": job_id})).one_or_none()
