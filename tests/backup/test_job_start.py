"""Starting a backup job: the order its tasks go to the workers."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from safekeep.backup.jobs.backup import start_backup_job
from safekeep.tenants.models import Job, JobKind, JobStatus, JobTask, TaskStatus
from safekeep.tenants.models.base import utcnow
from tests.backup.harness import EngineHarness
from tests.fixtures.app import SentMessages


async def test_the_tasks_that_took_longest_last_time_go_to_the_workers_first(
    engine: EngineHarness,
) -> None:
    """A job ends when its last task does: a large mailbox started last keeps it running
    while the other workers sit idle, so the tasks that took longest in the tenant's last
    backup are sent first; those without a figure (new accounts, failed last time) follow
    in their usual order."""
    await _longest_first(engine)


async def test_scaleout_tasks_that_took_longest_last_time_go_first(
    scaleout_engine: EngineHarness,
) -> None:
    await _longest_first(scaleout_engine)


async def _longest_first(h: EngineHarness) -> None:
    await h.set_policy(services=["contacts", "calendar"])
    users = sorted((a for a in await h.accounts() if a.kind == "user"), key=lambda a: a.graph_id)
    assert len(users) >= 3
    earlier = await h.start_job(JobKind.backup)
    took = {
        (users[2].id, "calendar"): 40.0,
        (users[0].id, "contacts"): 25.0,
        (users[1].id, "calendar"): 3.0,
    }
    end = utcnow()
    async with h.runtime.db.session() as session:
        job = await session.get(Job, earlier.id)
        assert job is not None
        job.status = JobStatus.succeeded
        for (account_id, service), seconds in took.items():
            session.add(
                JobTask(
                    job_id=earlier.id,
                    tenant_id=h.tenant.id,
                    account_id=account_id,
                    service=service,
                    status=TaskStatus.succeeded,
                    started_at=end - timedelta(seconds=seconds),
                    finished_at=end,
                )
            )
        session.add(  # a failed task says nothing about how long the service takes
            JobTask(
                job_id=earlier.id,
                tenant_id=h.tenant.id,
                account_id=users[1].id,
                service="contacts",
                status=TaskStatus.failed,
                started_at=end - timedelta(seconds=100),
                finished_at=end,
            )
        )

    job = await h.start_job(JobKind.backup)
    sent = h.runtime.send
    assert isinstance(sent, SentMessages)
    sent.messages.clear()
    await start_backup_job(h.runtime, str(job.id))
    async with h.runtime.db.session() as session:
        tasks = {
            str(t.id): (t.account_id, t.service)
            for t in (await session.execute(select(JobTask).where(JobTask.job_id == job.id)))
            .scalars()
            .all()
        }
    order = [tasks[m.args[0]] for m in sent.messages if m.actor == "run_backup_task"]
    assert sorted(order, key=str) == sorted(tasks.values(), key=str)  # every task, once
    assert order[:3] == [
        (users[2].id, "calendar"),
        (users[0].id, "contacts"),
        (users[1].id, "calendar"),
    ]
    assert (users[1].id, "contacts") in order[3:]
