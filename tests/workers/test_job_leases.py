"""Single-step jobs (restore, export, discovery, purge) run under a lease as backup tasks do:
a second delivery while the first run lives leaves it alone, the scheduler sends again only a
job whose lease expired, and an error nobody expected (a bug) spends the job's (or the task's)
attempts and then fails it as ``internal_error`` instead of leaving it running for ever."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from safekeep.backup.jobs import backup as backup_jobs
from safekeep.backup.jobs import lifecycle
from safekeep.backup.jobs.export import run_export_job
from safekeep.backup.jobs.lifecycle import MAX_ATTEMPTS, JobOutcome, run_job
from safekeep.backup.jobs.restore import run_restore_job
from safekeep.backup.services.mail.restore import MailRestorer
from safekeep.runtime import Runtime
from safekeep.storage.errors import BlobStoreUnavailable
from safekeep.tenants.models import (
    Account,
    Export,
    ExportStatus,
    Job,
    JobKind,
    JobStatus,
    JobTask,
    JobTrigger,
    TaskStatus,
    Tenant,
    WebhookDelivery,
    utcnow,
)
from safekeep.workers import context
from safekeep.workers.scheduler import recover_lost_jobs
from tests.backup.harness import EngineHarness
from tests.factories import add_job, create_account, create_msp, create_tenant, create_webhook

# A short lease, so that a test can outlive it: renewed every quarter of it.
LEASE_SECONDS = 1.0


@pytest.fixture
def any_worker_runtime(any_runtime: Runtime) -> Iterator[Runtime]:
    """``any_runtime`` (PostgreSQL, then SQLite) as ``current_runtime()`` (the scheduler's)."""
    context.configure(any_runtime.settings, factory=lambda _settings: any_runtime)
    context.forget_runtimes()
    yield any_runtime
    context.forget_runtimes()


def _short_lease(runtime: Runtime) -> None:
    runtime.settings = runtime.settings.model_copy(update={"task_lease_seconds": LEASE_SECONDS})


async def _job(runtime: Runtime, job_id: uuid.UUID) -> Job:
    async with runtime.db.session() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return job


# --- a restore, paused in the middle ------------------------------------------------------


def _restore_params(source: Account, target: Account) -> dict[str, Any]:
    return {
        "scope": {
            "type": "service",
            "account_id": str(source.id),
            "service": "mail",
            "item_ids": [],
        },
        "at": None,
        "snapshot_id": None,
        "target": {"account_id": str(target.id), "folder": "original", "channels": "import"},
        "conflict": "skip",
    }


def _messages_of(h: EngineHarness, user_graph_id: str) -> int:
    tenant = h.sim.tenant(h.sim_tenant_id)
    return sum(
        1
        for item in tenant.items.values()
        if item.kind == "message"
        and item.user_id == user_graph_id
        and not getattr(item, "deleted", False)
    )


async def _recovered(
    h: EngineHarness, *, older_than: timedelta | None = None
) -> list[tuple[str, tuple[Any, ...]]]:
    """The restores the scheduler's recovery sends again (the discovery job that onboarding
    queued, and nobody ran, is left out)."""
    sent = h.runtime.send.messages  # type: ignore[attr-defined]
    already = len(sent)
    await recover_lost_jobs(older_than=older_than)
    return [(m.actor, m.args) for m in sent[already:] if m.actor != "run_discover"]


@dataclass
class PausedRestore:
    """A restore's first run (A), stopped in Graph's create call of its second message (its
    first is written): a large mailbox that takes longer than the recovery window."""

    job: Job
    before: int
    run: asyncio.Task[None] | None = None
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    creates: int = 0
    paused: bool = False
    # Set while another run than A restores: it must not wait (on the old code a duplicate
    # delivery ran the whole restore).
    bypass: bool = False


@contextlib.asynccontextmanager
async def _paused_restore(
    h: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[PausedRestore]:
    source, target = await h.user(0), await h.user(1)
    await h.backup(source, "mail")
    job = await h.start_job(JobKind.restore, _restore_params(source, target))
    paused = PausedRestore(job, before=_messages_of(h, target.graph_id))
    create = MailRestorer._create

    async def slow(self: MailRestorer, *args: Any, **kwargs: Any) -> Any:
        paused.creates += 1
        if paused.creates >= 2 and not paused.bypass:
            paused.paused = True
            await paused.gate.wait()
        return await create(self, *args, **kwargs)

    monkeypatch.setattr(MailRestorer, "_create", slow)
    paused.run = asyncio.create_task(run_restore_job(h.runtime, str(job.id)))
    for _ in range(600):
        if paused.paused or paused.run.done():
            break
        await asyncio.sleep(0.05)
    assert paused.paused, "the restore never reached its second message"
    await asyncio.sleep(0.3)  # the messages restored side by side reach their pause too
    try:
        yield paused
    finally:
        paused.gate.set()
        if not paused.run.done():
            paused.run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await paused.run


async def test_a_restore_sent_again_while_its_first_run_lives_runs_once(
    any_engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit's double run: the job row aged past the recovery window while run A works.
    A's lease, renewed in the background, keeps recovery from sending it again, and a
    duplicate delivery finds the lease held and returns: every message is restored once."""
    h = any_engine
    _short_lease(h.runtime)
    async with _paused_restore(h, monkeypatch) as paused:
        job_id = paused.job.id
        async with h.runtime.db.session() as session:
            aged = utcnow() - timedelta(minutes=21)
            await session.execute(update(Job).where(Job.id == job_id).values(updated_at=aged))
        await asyncio.sleep(LEASE_SECONDS * 1.5)  # a lease's length: renewed meanwhile
        alive = await _job(h.runtime, job_id)
        assert alive.status == JobStatus.running
        assert alive.updated_at > aged  # the renewal is the scheduler's sign of life
        assert alive.heartbeat_at is not None
        assert alive.heartbeat_at > utcnow() - timedelta(seconds=LEASE_SECONDS)

        assert await _recovered(h) == []
        assert await _recovered(h, older_than=timedelta(0)) == []
        creates = paused.creates
        paused.bypass = True
        await run_restore_job(h.runtime, str(job_id))  # a duplicate delivery (another worker)
        assert paused.creates == creates, "the duplicate delivery ran the restore"
        assert (await _job(h.runtime, job_id)).status == JobStatus.running

        paused.gate.set()
        assert paused.run is not None
        await paused.run
    done = await _job(h.runtime, job_id)
    assert done.status == JobStatus.succeeded, (done.error_code, done.error_detail)
    assert done.result["attempts"] == 1
    target = await h.user(1)
    added = _messages_of(h, target.graph_id) - paused.before
    assert added > 0
    assert added == done.result["totals"]["restored"]


async def test_a_restore_whose_worker_died_is_sent_again_once_its_lease_expires_and_resumes(
    any_engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery while the lease lives leaves the run alone, even when its worker is gone
    (nobody can tell yet); once the lease has expired, recovery sends the job again and the
    new run takes the lease over and resumes: what the dead run wrote is found, not repeated."""
    h = any_engine
    _short_lease(h.runtime)
    async with _paused_restore(h, monkeypatch) as paused:
        job_id = paused.job.id
        creates = paused.creates
        paused.bypass = True
        await run_restore_job(h.runtime, str(job_id))  # Dramatiq redelivers it
        assert paused.creates == creates, "the redelivery ran the restore"
        assert (await _job(h.runtime, job_id)).status == JobStatus.running
        assert paused.run is not None
        paused.run.cancel()  # the worker is killed: no settling, no lease given back
        with contextlib.suppress(asyncio.CancelledError):
            await paused.run
    died = await _job(h.runtime, job_id)
    assert died.status == JobStatus.running and died.heartbeat_at is not None

    await asyncio.sleep(LEASE_SECONDS * 1.3)  # nobody renews it: the lease expires
    recovered = await _recovered(h, older_than=timedelta(seconds=LEASE_SECONDS / 2))
    assert recovered == [("run_restore", (str(job_id),))]

    await run_restore_job(h.runtime, str(job_id))
    done = await _job(h.runtime, job_id)
    assert done.status == JobStatus.succeeded, (done.error_code, done.error_detail)
    assert done.result["attempts"] == 2
    totals = done.result["totals"]
    assert totals["skipped_existing"] >= 1  # the dead run's message, found in the target
    target = await h.user(1)
    added = _messages_of(h, target.graph_id) - paused.before
    assert added == totals["restored"] + totals["skipped_existing"]


# --- bugs spend the attempts ----------------------------------------------------------------


async def _queued_job(runtime: Runtime, kind: JobKind = JobKind.restore) -> Job:
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    async with runtime.db.session() as session:
        return await add_job(session, tenant.id, kind=kind, status=JobStatus.queued)


async def test_a_job_that_hits_a_bug_every_time_fails_as_internal_error_after_its_attempts(
    any_worker_runtime: Runtime,
) -> None:
    """Retried like the rest (each failure gives the lease back, so the next delivery runs at
    once), then settled failed with the error's type and message; recovery leaves it be."""
    runtime = any_worker_runtime
    job = await _queued_job(runtime)
    calls: list[int] = []

    async def buggy(_runtime: Runtime, _job: Job, _tenant: Tenant) -> JobOutcome:
        calls.append(1)
        raise KeyError("an unexpected field in a stored document")

    raised = 0
    for _ in range(MAX_ATTEMPTS + 1):  # what Dramatiq delivers (max_retries = MAX_ATTEMPTS)
        try:
            await run_job(runtime, str(job.id), buggy)
        except KeyError:
            raised += 1
            released = await _job(runtime, job.id)
            assert released.status == JobStatus.running and released.heartbeat_at is None
    assert (len(calls), raised) == (MAX_ATTEMPTS, MAX_ATTEMPTS - 1)
    failed = await _job(runtime, job.id)
    assert failed.status == JobStatus.failed
    assert failed.error_code == "internal_error"
    assert failed.error_detail is not None
    assert failed.error_detail.startswith("KeyError: ")
    assert "unexpected field" in failed.error_detail
    assert failed.result["attempts"] == MAX_ATTEMPTS
    async with runtime.db.session() as session:
        aged = utcnow() - timedelta(hours=1)
        await session.execute(update(Job).where(Job.id == job.id).values(updated_at=aged))
    assert await recover_lost_jobs() == 0


async def _lose(run: asyncio.Task[None], began: asyncio.Event) -> None:
    """The worker running ``run`` dies once its body began: nothing it could catch, no lease
    given back (a cancelled task, as a SIGKILL leaves it)."""
    await asyncio.wait_for(began.wait(), 30)
    began.clear()
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run


async def test_a_job_whose_worker_is_lost_every_time_ends_as_worker_lost(
    any_worker_runtime: Runtime,
) -> None:
    """A job that takes its worker down each time (out of memory on it) is not started for
    ever: past twice its attempts, the next claim settles it failed, ``worker_lost``,
    without running it; recovery then leaves it be."""
    runtime = any_worker_runtime
    job = await _queued_job(runtime)
    started: list[int] = []
    began = asyncio.Event()

    async def takes_the_worker_down(_runtime: Runtime, _job: Job, _tenant: Tenant) -> JobOutcome:
        started.append(1)
        began.set()
        await asyncio.Event().wait()
        raise AssertionError("never ends")

    bound = lifecycle.lost_bound(MAX_ATTEMPTS)
    for _ in range(bound):
        await _lose(
            asyncio.create_task(run_job(runtime, str(job.id), takes_the_worker_down)), began
        )
        assert (await _job(runtime, job.id)).status == JobStatus.running
        async with runtime.db.session() as session:  # its lease expires
            aged = utcnow() - timedelta(hours=1)
            await session.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=aged))
    # one claim more: settled without running (a run now would never end: wait_for says so)
    await asyncio.wait_for(run_job(runtime, str(job.id), takes_the_worker_down), 30)
    assert len(started) == bound  # the claim past the bound did not start it
    lost = await _job(runtime, job.id)
    assert (lost.status, lost.error_code) == (JobStatus.failed, "worker_lost")
    assert lost.error_detail is not None and f"lost {bound} times" in lost.error_detail
    assert await recover_lost_jobs(older_than=timedelta(0)) == 0


async def test_a_backup_task_whose_worker_is_lost_every_time_ends_as_worker_lost(
    any_worker_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = any_worker_runtime
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    account = await create_account(runtime, tenant)
    async with runtime.db.session() as session:
        job = await add_job(session, tenant.id, status=JobStatus.running, trigger=JobTrigger.manual)
        task = JobTask(job_id=job.id, tenant_id=tenant.id, account_id=account.id, service="mail")
        session.add(task)
    started: list[int] = []
    began = asyncio.Event()

    async def takes_the_worker_down(*_args: object) -> None:
        started.append(1)
        began.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(backup_jobs, "_collect", takes_the_worker_down)
    bound = lifecycle.lost_bound(MAX_ATTEMPTS)
    for _ in range(bound):
        await _lose(asyncio.create_task(backup_jobs.run_backup_task(runtime, str(task.id))), began)
        async with runtime.db.session() as session:  # its lease expires
            aged = utcnow() - timedelta(hours=1)
            await session.execute(
                update(JobTask).where(JobTask.id == task.id).values(heartbeat_at=aged)
            )
    await asyncio.wait_for(backup_jobs.run_backup_task(runtime, str(task.id)), 30)
    assert len(started) == bound
    async with runtime.db.session() as session:
        ended = await session.get(JobTask, task.id)
    assert ended is not None
    assert (ended.status, ended.error_code) == (TaskStatus.failed, "worker_lost")
    failed = await _job(runtime, job.id)
    assert (failed.status, failed.error_code) == (JobStatus.failed, "worker_lost")


async def test_a_blip_gives_a_jobs_lease_back_without_spending_an_attempt(
    any_worker_runtime: Runtime,
) -> None:
    runtime = any_worker_runtime
    job = await _queued_job(runtime, JobKind.export)
    blips = [BlobStoreUnavailable("S3 bucket unavailable: SlowDown")]

    async def body(_runtime: Runtime, _job: Job, _tenant: Tenant) -> JobOutcome:
        if blips:
            raise blips.pop()
        return JobOutcome(result={"done": True})

    with pytest.raises(BlobStoreUnavailable):
        await run_job(runtime, str(job.id), body)
    released = await _job(runtime, job.id)
    assert released.status == JobStatus.running and released.heartbeat_at is None
    assert released.result["attempts"] == 0
    await run_job(runtime, str(job.id), body)  # the retry takes the lease at once
    done = await _job(runtime, job.id)
    assert done.status == JobStatus.succeeded
    assert done.result == {"attempts": 1, "done": True}


async def test_a_backup_task_that_hits_a_bug_every_time_fails_its_job_as_internal_error(
    any_worker_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each failure gives the task's lease back (the retry runs at once rather than find it
    held); the last attempt fails the task, and with it the job, with ``backup.failed``."""
    runtime = any_worker_runtime
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    await create_webhook(
        runtime, msp.id, "https://hooks.example.com/jobs", ["backup.completed", "backup.failed"]
    )
    account = await create_account(runtime, tenant)
    async with runtime.db.session() as session:
        job = await add_job(session, tenant.id, status=JobStatus.running, trigger=JobTrigger.manual)
        task = JobTask(job_id=job.id, tenant_id=tenant.id, account_id=account.id, service="mail")
        session.add(task)
    calls: list[int] = []

    async def collect(*_args: object) -> None:
        calls.append(1)
        raise ValueError("a value the collector never expected")

    monkeypatch.setattr(backup_jobs, "_collect", collect)
    raised = 0
    for _ in range(MAX_ATTEMPTS + 1):
        try:
            await backup_jobs.run_backup_task(runtime, str(task.id))
        except ValueError:
            raised += 1
            async with runtime.db.session() as session:
                released = await session.get(JobTask, task.id)
            assert released is not None and released.status == TaskStatus.queued
    assert (len(calls), raised) == (MAX_ATTEMPTS, MAX_ATTEMPTS - 1)
    async with runtime.db.session() as session:
        ended = await session.get(JobTask, task.id)
        events = (await session.execute(select(WebhookDelivery.event_type))).scalars().all()
    assert ended is not None
    assert (ended.status, ended.error_code) == (TaskStatus.failed, "internal_error")
    assert ended.error_detail is not None and "ValueError: a value" in ended.error_detail
    failed = await _job(runtime, job.id)
    assert (failed.status, failed.error_code) == (JobStatus.failed, "internal_error")
    assert list(events) == ["backup.failed"]
    assert await recover_lost_jobs(older_than=timedelta(0)) == 0


# --- an export is ready with its job, never before ------------------------------------------


async def test_an_export_becomes_downloadable_in_the_transaction_that_settles_its_job(
    any_engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker dying between the ZIP's upload and the job's settling leaves the export
    pending (not downloadable under a running job); the retry settles both together."""
    h = any_engine
    source = await h.user(0)
    await h.backup(source, "mail")
    export_id = uuid.uuid4()
    params = {
        "scope": {"type": "service", "account_id": str(source.id), "service": "mail"},
        "at": None,
        "options": {},
        "export_id": str(export_id),
    }
    job = await h.start_job(JobKind.export, params)
    async with h.runtime.db.session() as session:
        session.add(Export(id=export_id, tenant_id=h.tenant.id, job_id=job.id, options={}))
    emit = lifecycle.webhooks.emit
    deaths = [RuntimeError("the worker died while settling the job")]

    async def dying(*args: Any, **kwargs: Any) -> Any:
        if deaths:
            raise deaths.pop()
        return await emit(*args, **kwargs)

    monkeypatch.setattr(lifecycle.webhooks, "emit", dying)
    with pytest.raises(RuntimeError):
        await run_export_job(h.runtime, str(job.id))
    async with h.runtime.db.session() as session:
        pending = await session.get(Export, export_id)
    assert pending is not None
    assert (await _job(h.runtime, job.id)).status == JobStatus.running
    assert pending.status == ExportStatus.pending and pending.blob_key is None

    await run_export_job(h.runtime, str(job.id))
    done = await _job(h.runtime, job.id)
    assert done.status == JobStatus.succeeded, (done.error_code, done.error_detail)
    async with h.runtime.db.session() as session:
        ready = await session.get(Export, export_id)
    assert ready is not None and ready.status == ExportStatus.ready and ready.blob_key
    data = await (await h.runtime.blobs()).get(ready.blob_key)
    assert hashlib.sha256(data).hexdigest() == ready.sha256 == done.result["sha256"]
