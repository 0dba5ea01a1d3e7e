"""A snapshot whose task ended unfinished (failed for good, or cancelled) shows as interrupted,
not running for ever; an MSP lists those by state; the account's next backup resumes it, and
a snapshot that finished is never marked so."""

from __future__ import annotations

import uuid

import httpx
import pytest

from safekeep.backup.catalog import Cancelled, SnapshotRun
from safekeep.backup.jobs import backup as jobs
from safekeep.graph.errors import NotFound
from safekeep.runtime import Runtime
from safekeep.tenants.catalog import repository as catalog_repository
from safekeep.tenants.models import (
    Account,
    JobStatus,
    JobTask,
    JobTrigger,
    Snapshot,
    SnapshotStatus,
    TaskStatus,
)
from tests.factories import add_job, create_account, create_msp, create_tenant
from tests.workers.test_blips import recording


async def _task(runtime: Runtime, account: Account) -> uuid.UUID:
    async with runtime.db.session() as session:
        job = await add_job(
            session, account.tenant_id, status=JobStatus.running, trigger=JobTrigger.manual
        )
        task = JobTask(
            job_id=job.id, tenant_id=account.tenant_id, account_id=account.id, service="mail"
        )
        session.add(task)
    return task.id


async def _state(runtime: Runtime, task_id: uuid.UUID) -> tuple[TaskStatus, SnapshotStatus]:
    async with runtime.db.session() as session:
        task = await session.get(JobTask, task_id)
        assert task is not None and task.snapshot_id is not None
        snapshot = await session.get(Snapshot, task.snapshot_id)
    assert snapshot is not None
    return task.status, snapshot.status


@pytest.mark.parametrize(
    ("ending", "task_status"),
    [
        (NotFound(404, "ErrorItemNotFound", "The mailbox is gone."), TaskStatus.failed),
        (Cancelled(), TaskStatus.cancelled),
    ],
    ids=["failed", "cancelled"],
)
async def test_an_unfinished_snapshot_is_interrupted_listed_and_resumed(
    any_runtime: Runtime,
    any_client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    ending: Exception,
    task_status: TaskStatus,
) -> None:
    runtime = any_runtime
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    account = await create_account(runtime, tenant)
    runs: list[SnapshotRun] = []
    monkeypatch.setattr(jobs, "_collect", recording(runs, ending))
    first = await _task(runtime, account)
    await jobs.run_backup_task(runtime, str(first))
    assert await _state(runtime, first) == (task_status, SnapshotStatus.interrupted)

    path = f"/v1/tenants/{tenant.id}/snapshots"

    async def listed(**params: str) -> list[tuple[str, str]]:
        r = await any_client.get(path, params=params, headers=msp.headers)
        assert r.status_code == 200, r.text
        return [(s["id"], s["status"]) for s in r.json()["items"]]

    interrupted = (str(runs[0].snapshot_id), "interrupted")
    assert await listed(status="interrupted") == [interrupted]
    assert await listed(status="running") == []
    assert await listed() == [interrupted]
    r = await any_client.get(path, params={"status": "stuck"}, headers=msp.headers)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    other = await create_msp(runtime, "Other MSP")  # another MSP's key: no such tenant
    r = await any_client.get(path, params={"status": "interrupted"}, headers=other.headers)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"

    # The account's next backup, another job's task, resumes it rather than starting seq 2.
    monkeypatch.setattr(jobs, "_collect", recording(runs))
    second = await _task(runtime, account)
    await jobs.run_backup_task(runtime, str(second))
    assert runs[1].resumed and runs[1].snapshot_id == runs[0].snapshot_id
    assert await _state(runtime, second) == (TaskStatus.succeeded, SnapshotStatus.complete)
    assert await listed(status="interrupted") == []
    assert await listed() == [(str(runs[0].snapshot_id), "complete")]

    # A finished snapshot is not marked interrupted by a late ending of its task.
    async with runtime.db.session() as session:
        await catalog_repository.interrupt_snapshot(session, runs[0].snapshot_id)
    assert await _state(runtime, second) == (TaskStatus.succeeded, SnapshotStatus.complete)
