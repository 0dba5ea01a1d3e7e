"""Blips of our own infrastructure cost a retry, never a lease timeout: a backup task gives its
lease back at once, and the scheduler outlives a failing step (the other steps of the tick
still run, and the loop tries again within seconds)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import psycopg
import pytest
import redis
from sqlalchemy import exc as sa_exc

from safekeep.backup.catalog import SnapshotRun
from safekeep.backup.jobs import backup as jobs
from safekeep.runtime import Runtime
from safekeep.storage.errors import BlobStoreUnavailable
from safekeep.tenants.catalog import repository as catalog_repository
from safekeep.tenants.models import (
    JobStatus,
    JobTask,
    JobTrigger,
    Snapshot,
    SnapshotStatus,
    TaskStatus,
)
from safekeep.workers import context, scheduler
from tests.factories import add_job, create_account, create_msp, create_tenant
from tests.fixtures.app import SentMessages
from tests.workers.test_scheduler import due_tenant


def _database_down() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT", {}, psycopg.OperationalError("connection refused"))


async def test_a_failing_step_does_not_cost_the_others(
    worker_runtime: Runtime, sent: SentMessages, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = worker_runtime
    await due_tenant(runtime)

    async def down() -> int:
        raise _database_down()

    monkeypatch.setattr(scheduler, "recover_lost_jobs", down)
    result = await scheduler.tick()
    assert result["steps_failed"] == 1
    assert result["started"] == 1  # the step before it ran
    assert sent.actors() == ["run_backup"]


async def test_the_loop_retries_soon_after_a_failed_tick(
    worker_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks: list[float] = []

    async def tick() -> dict[str, int]:
        ticks.append(asyncio.get_running_loop().time())
        if len(ticks) == 1:
            raise _database_down()
        return {"steps_failed": 0}

    monkeypatch.setattr(scheduler, "tick", tick)
    monkeypatch.setattr(scheduler, "RETRY_AFTER_SECONDS", 0.1)
    settings = worker_runtime.settings.model_copy(update={"scheduler_interval_seconds": 60})
    stop = asyncio.Event()
    loop = asyncio.create_task(scheduler.run_forever(settings, stop=stop))
    for _ in range(100):
        if len(ticks) >= 2:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await loop
    await context.close_runtimes()  # the one run_forever built for this loop
    assert len(ticks) >= 2, "the loop died or waited a whole interval after a failed tick"
    assert ticks[1] - ticks[0] < 5


async def _running_task(runtime: Runtime) -> uuid.UUID:
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    account = await create_account(runtime, tenant)
    async with runtime.db.session() as session:
        job = await add_job(session, tenant.id, status=JobStatus.running, trigger=JobTrigger.manual)
        task = JobTask(job_id=job.id, tenant_id=tenant.id, account_id=account.id, service="mail")
        session.add(task)
    return task.id


@pytest.mark.parametrize(
    "blip",
    [
        _database_down(),
        redis.ConnectionError("Connection closed by server."),
        BlobStoreUnavailable("S3 bucket unavailable: SlowDown"),
    ],
    ids=["database", "redis", "s3"],
)
async def test_a_blip_gives_the_lease_back_at_once(
    worker_runtime: Runtime, monkeypatch: pytest.MonkeyPatch, blip: Exception
) -> None:
    """The task is queued again (not left running behind its 600 s lease), the attempt is not
    spent, and the error goes back to Dramatiq, which retries with backoff."""
    runtime = worker_runtime
    task_id = await _running_task(runtime)

    async def collect(*_args: object) -> TaskStatus:
        raise blip

    monkeypatch.setattr(jobs, "_collect", collect)
    with pytest.raises(type(blip)):
        await jobs.run_backup_task(runtime, str(task_id))
    async with runtime.db.session() as session:
        task = await session.get(JobTask, task_id)
    assert task is not None
    assert task.status == TaskStatus.queued
    assert task.attempts == 0
    assert task.error_code in ("transient_error",)
    # The retry takes the lease at once, without waiting for it to expire.
    monkeypatch.setattr(jobs, "_collect", recording([]))
    await jobs.run_backup_task(runtime, str(task_id))
    async with runtime.db.session() as session:
        task = await session.get(JobTask, task_id)
    assert task is not None and task.status == TaskStatus.succeeded


def recording(
    runs: list[SnapshotRun], ending: Exception | None = None
) -> Callable[..., Awaitable[None]]:
    """A stand-in for ``jobs._collect`` that keeps the run it is given, then raises
    ``ending`` or ends as the real collection does: completing its run settles the task."""

    async def collect(*args: object) -> None:
        run = args[-1]
        assert isinstance(run, SnapshotRun)
        runs.append(run)
        if ending is not None:
            raise ending
        await run.complete()

    return collect


async def test_the_task_names_the_snapshot_it_runs_into_and_its_retry_resumes_it(
    any_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim names the snapshot in the same statement (a new one's id, or the running
    one a retry resumes); when the run chooses another, the task is corrected to it."""
    runtime = any_runtime
    task_id = await _running_task(runtime)
    runs: list[SnapshotRun] = []

    async def named() -> uuid.UUID | None:
        async with runtime.db.session() as session:
            task = await session.get(JobTask, task_id)
        assert task is not None
        return task.snapshot_id

    newest_read: list[object] = []
    read_newest = catalog_repository.latest_snapshot

    async def counted(*args: object) -> object:
        newest_read.append(args)
        return await read_newest(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog_repository, "latest_snapshot", counted)
    monkeypatch.setattr(jobs, "_collect", recording(runs, _database_down()))
    with pytest.raises(sa_exc.OperationalError):
        await jobs.run_backup_task(runtime, str(task_id))
    assert not runs[0].resumed and newest_read == []
    assert await named() == runs[0].snapshot_id
    async with runtime.db.session() as session:  # the claim saw none running: inserted at once
        started = await session.get(Snapshot, runs[0].snapshot_id)
    assert started is not None and started.status == SnapshotStatus.running
    assert (started.seq, runs[0].seq, started.items_added, started.skipped) == (1, 1, 0, 0)

    monkeypatch.setattr(jobs, "_collect", recording(runs))
    await jobs.run_backup_task(runtime, str(task_id))
    assert runs[1].resumed and runs[1].snapshot_id == runs[0].snapshot_id
    assert await named() == runs[0].snapshot_id
    async with runtime.db.session() as session:
        snapshot = await session.get(Snapshot, runs[0].snapshot_id)
    assert snapshot is not None and snapshot.status == SnapshotStatus.complete

    # A run that chooses another snapshot than the one the task names corrects the task.
    async with runtime.db.session() as session:
        task = await session.get(JobTask, task_id)
        assert task is not None and task.account_id is not None
        account_id, tenant_id = task.account_id, task.tenant_id
    run = await SnapshotRun.begin(
        runtime,
        msp_id=uuid.uuid4(),
        tenant_id=tenant_id,
        account_id=account_id,
        service="mail",
        task_id=task_id,
        task_names=runs[0].snapshot_id,
    )
    assert run.snapshot_id != runs[0].snapshot_id and run.seq == snapshot.seq + 1
    assert await named() == run.snapshot_id
    await run.complete()

    # The account's next task, of a later job, counts its snapshot's seq after the newest.
    async with runtime.db.session() as session:
        job = await add_job(session, tenant_id, status=JobStatus.running, trigger=JobTrigger.manual)
        later = JobTask(job_id=job.id, tenant_id=tenant_id, account_id=account_id, service="mail")
        session.add(later)
    runs.clear()
    await jobs.run_backup_task(runtime, str(later.id))
    assert not runs[0].resumed and runs[0].seq == run.seq + 1
    assert len(newest_read) == 2  # only the resume and the run begun by hand read the newest
