"""A backup job settles exactly once, when its last task ends, with the status its tasks'
outcomes give (counted by one aggregate over the tasks) and one webhook."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from safekeep.backup.jobs import backup as jobs
from safekeep.runtime import Runtime
from safekeep.tenants import outbox
from safekeep.tenants.models import Job, JobStatus, JobTask, JobTrigger, TaskStatus, WebhookDelivery
from tests.factories import add_job, create_account, create_msp, create_tenant, create_webhook


async def _job_with(runtime: Runtime, statuses: list[TaskStatus]) -> tuple[Job, list[JobTask]]:
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    await create_webhook(
        runtime, msp.id, "https://hooks.example.com/jobs", ["backup.completed", "backup.failed"]
    )
    account = await create_account(runtime, tenant)
    async with runtime.db.session() as session:
        job = await add_job(session, tenant.id, status=JobStatus.running, trigger=JobTrigger.manual)
        tasks = [
            JobTask(
                job_id=job.id,
                tenant_id=tenant.id,
                account_id=account.id,
                service=service,
                status=status,
                items=3,
                error_code="mailbox_not_found" if status == TaskStatus.failed else None,
            )
            for service, status in zip(["mail", "contacts", "calendar"], statuses, strict=False)
        ]
        session.add_all(tasks)
    return job, tasks


async def _settle(runtime: Runtime, job: Job) -> tuple[Job, list[str]]:
    with outbox.collect():
        async with runtime.db.session() as session:
            await jobs._finish_job(session, job.id)
    async with runtime.db.session() as session:
        row = await session.get(Job, job.id)
        events = (await session.execute(select(WebhookDelivery.event_type))).scalars().all()
    assert row is not None
    return row, list(events)


@pytest.mark.parametrize(
    ("statuses", "final", "event"),
    [
        ([TaskStatus.succeeded] * 3, JobStatus.succeeded, "backup.completed"),
        ([TaskStatus.succeeded, TaskStatus.partial], JobStatus.partial, "backup.completed"),
        ([TaskStatus.succeeded, TaskStatus.failed], JobStatus.partial, "backup.completed"),
        ([TaskStatus.failed, TaskStatus.failed], JobStatus.failed, "backup.failed"),
        ([TaskStatus.succeeded, TaskStatus.cancelled], JobStatus.partial, "backup.completed"),
        ([TaskStatus.cancelled, TaskStatus.cancelled], JobStatus.cancelled, None),
    ],
)
async def test_the_last_task_settles_the_job_once_with_the_status_its_tasks_give(
    any_runtime: Runtime,
    statuses: list[TaskStatus],
    final: JobStatus,
    event: str | None,
) -> None:
    runtime = any_runtime
    job, _tasks = await _job_with(runtime, statuses)
    row, events = await _settle(runtime, job)
    assert row.status == final
    ok = sum(s in (TaskStatus.succeeded, TaskStatus.partial) for s in statuses)
    failed = statuses.count(TaskStatus.failed)
    cancelled = statuses.count(TaskStatus.cancelled)
    assert row.result["tasks"] == {"ok": ok, "failed": failed, "cancelled": cancelled}
    assert row.result["progress"]["tasks_done"] == len(statuses)
    assert row.result["progress"]["items"] == 3 * len(statuses)
    if final == JobStatus.failed:
        assert row.error_code == "mailbox_not_found"
    assert events == ([event] if event else [])
    # Settling again (a redelivered task) changes nothing and announces nothing.
    again, events_again = await _settle(runtime, job)
    assert again.status == final and again.finished_at == row.finished_at
    assert events_again == events


async def test_a_job_with_a_task_still_running_is_not_settled(any_runtime: Runtime) -> None:
    job, _tasks = await _job_with(any_runtime, [TaskStatus.succeeded, TaskStatus.running])
    row, events = await _settle(any_runtime, job)
    assert row.status == JobStatus.running and row.finished_at is None
    assert events == []
