"""A seat's protection against the jobs that act on it later: a purge is carried out only
while its seat may still be purged, and a backup only covers protected (billed) seats.

A purge waits behind any backup of its tenant, so a seat can be protected again between the
purge's request and its run: protecting it withdraws the purge (the job ends cancelled,
``account_protected``), and the purge itself checks the seat again, under the account's row
lock, before deleting anything. A manual backup may name protected seats only (422 otherwise),
its fan-out skips a seat released since the request, and a task whose seat was released after
the fan-out is not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
import pytest
from sqlalchemy import func, select, update

from safekeep.backup.jobs.backup import SEAT_RELEASED, run_backup_task, start_backup_job
from safekeep.backup.jobs.lifecycle import RetryLater
from safekeep.backup.jobs.purge import purge, run_purge_job
from safekeep.runtime import Runtime
from safekeep.tenants import outbox
from safekeep.tenants.account import service as account_service
from safekeep.tenants.models import (
    Account,
    AuditEvent,
    ItemVersion,
    Job,
    JobKind,
    JobStatus,
    JobTask,
    Snapshot,
    TaskStatus,
    Tenant,
)
from safekeep.tenants.scope import system_principal
from tests.api.conftest import MspWorld, build_world
from tests.factories import add_job, create_account


def seat(w: MspWorld) -> str:
    return f"/v1/tenants/{w.tenant.id}/accounts/{w.account.id}"


async def kept(runtime: Runtime, account_id: uuid.UUID) -> tuple[int, int]:
    """The account's item versions and snapshots still in the catalog."""
    async with runtime.db.session() as session:
        counts = []
        for model in (ItemVersion, Snapshot):
            stmt = select(func.count()).select_from(model).where(model.account_id == account_id)
            counts.append(int((await session.execute(stmt)).scalar_one()))
    return counts[0], counts[1]


async def job_row(runtime: Runtime, job_id: str | uuid.UUID) -> Job:
    async with runtime.db.session() as session:
        job = await session.get(Job, uuid.UUID(str(job_id)))
        assert job is not None
        return job


async def account_row(runtime: Runtime, account_id: uuid.UUID) -> Account:
    async with runtime.db.session() as session:
        account = await session.get(Account, account_id)
        assert account is not None
        return account


async def warm_pool(runtime: Runtime, connections: int = 3) -> None:
    """Leave a few connections open in the pool, so that a session started while another
    holds a transaction reuses one instead of opening (and setting up) a new one, as in a
    process that has run for a while."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(connections):
            session = await stack.enter_async_context(runtime.db.session())
            await session.execute(select(func.count()).select_from(Tenant))


async def released_with_purge(client: httpx.AsyncClient, w: MspWorld) -> str:
    """Release the world's seat (it holds data: it becomes cancelled) and ask for its purge;
    the purge job's id (queued)."""
    h = w.msp.headers
    r = await client.patch(seat(w), json={"protected": False}, headers=h)
    assert (r.status_code, r.json()["state"]) == (200, "cancelled"), r.text
    r = await client.post(f"{seat(w)}/purge", json={"confirm": str(w.account.id)}, headers=h)
    assert (r.status_code, r.json()["status"]) == (202, "queued"), r.text
    return str(r.json()["id"])


async def test_protecting_a_seat_withdraws_its_queued_purge(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    w = await build_world(any_runtime, "alpha")
    h = w.msp.headers
    before = await kept(any_runtime, w.account.id)
    assert before[0] > 0 and before[1] > 0
    job_id = await released_with_purge(any_client, w)

    r = await any_client.patch(seat(w), json={"protected": True}, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["protected"]) == ("active", True)
    job = (await any_client.get(f"/v1/jobs/{job_id}", headers=h)).json()
    assert (job["status"], job["error_code"]) == ("cancelled", "account_protected"), job
    assert job["cancel_requested_at"] is not None

    # The queued message still arrives: it finds the job settled and deletes nothing.
    with outbox.collect():
        await run_purge_job(any_runtime, job_id)
    assert (await job_row(any_runtime, job_id)).status == JobStatus.cancelled
    account = await account_row(any_runtime, w.account.id)
    assert (account.state, account.protected, account.purged_at) == ("active", True, None)
    assert await kept(any_runtime, w.account.id) == before
    shown = await any_client.get(seat(w), headers=h)
    assert shown.json()["last_backup_at"] is not None
    # protecting it again is the no-op it should be, not "data was purged"
    r = await any_client.patch(seat(w), json={"protected": True}, headers=h)
    assert r.status_code == 200, r.text
    async with any_runtime.db.session() as session:
        audited = (
            await session.execute(
                select(AuditEvent.action, AuditEvent.target_id).where(
                    AuditEvent.tenant_id == w.tenant.id
                )
            )
        ).all()
    assert ("job.cancel_requested", job_id) in audited
    assert ("account.purged", str(w.account.id)) not in audited


async def test_a_purge_finds_its_seat_protected_again_and_deletes_nothing(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """The job checks the seat itself: protected again by a way that withdrew nothing (a
    licence back after a purge was asked of its cancelled seat: discovery makes it active,
    and it was still protected), it fails with a reason and leaves the data whole."""
    w = await build_world(any_runtime, "alpha")
    before = await kept(any_runtime, w.account.id)
    job_id = await released_with_purge(any_client, w)
    async with any_runtime.db.session() as session:
        await session.execute(
            update(Account)
            .where(Account.id == w.account.id)
            .values(state="active", protected=True, cancelled_at=None, cancel_reason=None)
        )
    with outbox.collect():
        await run_purge_job(any_runtime, job_id)
    job = await job_row(any_runtime, job_id)
    assert (job.status, job.error_code) == (JobStatus.failed, "account_protected")
    assert "gc" not in job.result  # nothing was collected either
    account = await account_row(any_runtime, w.account.id)
    assert (account.state, account.protected) == ("active", True)
    assert await kept(any_runtime, w.account.id) == before


async def test_protecting_a_seat_stops_a_purge_waiting_behind_a_backup(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """A purge started while a backup of its tenant runs waits (``RetryLater``), running: a
    protection meanwhile asks it to stop, and once the backup is over it ends cancelled."""
    w = await build_world(any_runtime, "alpha")
    h = w.msp.headers
    before = await kept(any_runtime, w.account.id)
    job_id = await released_with_purge(any_client, w)
    async with any_runtime.db.session() as session:
        backup = await add_job(session, w.tenant.id, kind=JobKind.backup, status=JobStatus.running)
    with outbox.collect(), pytest.raises(RetryLater):
        await run_purge_job(any_runtime, job_id)
    assert (await job_row(any_runtime, job_id)).status == JobStatus.running

    r = await any_client.patch(seat(w), json={"protected": True}, headers=h)
    assert r.status_code == 200, r.text
    waiting = await job_row(any_runtime, job_id)
    assert waiting.status == JobStatus.running and waiting.cancel_requested_at is not None

    async with any_runtime.db.session() as session:
        await session.execute(
            update(Job).where(Job.id == backup.id).values(status=JobStatus.succeeded)
        )
    with outbox.collect():
        await run_purge_job(any_runtime, job_id)
    job = await job_row(any_runtime, job_id)
    assert (job.status, job.error_code) == (JobStatus.cancelled, "account_protected")
    assert (await account_row(any_runtime, w.account.id)).state == "active"
    assert await kept(any_runtime, w.account.id) == before


async def test_a_purge_asked_to_stop_while_it_runs_deletes_nothing(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """A cancellation that reaches a purge already past its start (the worker holds the job
    as it was when it began) is read again under the account's lock: nothing is deleted,
    and the job ends cancelled."""
    w = await build_world(any_runtime, "alpha")
    h = w.msp.headers
    before = await kept(any_runtime, w.account.id)
    job_id = await released_with_purge(any_client, w)
    async with any_runtime.db.session() as session:
        await session.execute(
            update(Job).where(Job.id == uuid.UUID(job_id)).values(status=JobStatus.running)
        )
        job = await session.get(Job, uuid.UUID(job_id))
        tenant = await session.get(Tenant, w.tenant.id)
    assert job is not None and tenant is not None
    r = await any_client.post(f"/v1/jobs/{job_id}/cancel", headers=h)
    assert r.status_code == 202, r.text
    with outbox.collect():
        await purge(any_runtime, job, tenant)
    settled = await job_row(any_runtime, job_id)
    assert settled.status == JobStatus.cancelled
    assert (await account_row(any_runtime, w.account.id)).state == "cancelled"
    assert await kept(any_runtime, w.account.id) == before


async def test_a_purge_waits_for_a_protection_in_progress_and_then_deletes_nothing(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """The purge reads the seat under the account's lock: while a protection's transaction
    holds it the purge waits, and once that commits it finds its job withdrawn and deletes
    nothing (it does not act on what it would have read before)."""
    w = await build_world(any_runtime, "alpha")
    before = await kept(any_runtime, w.account.id)
    job_id = await released_with_purge(any_client, w)
    async with any_runtime.db.session() as session:  # the worker's job, started
        await session.execute(
            update(Job).where(Job.id == uuid.UUID(job_id)).values(status=JobStatus.running)
        )
        job = await session.get(Job, uuid.UUID(job_id))
        tenant = await session.get(Tenant, w.tenant.id)
    assert job is not None and tenant is not None
    await warm_pool(any_runtime)
    with outbox.collect():
        async with any_runtime.db.session() as session:
            await account_service.set_protected(
                session, system_principal(w.msp.id), w.tenant.id, w.account.id, True
            )
            worker = asyncio.create_task(purge(any_runtime, job, tenant))
            await asyncio.sleep(0.5)
            assert not worker.done()  # held by the protection's lock
        await worker
    settled = await job_row(any_runtime, job_id)
    assert (settled.status, settled.error_code) == (JobStatus.cancelled, "account_protected")
    account = await account_row(any_runtime, w.account.id)
    assert (account.state, account.protected) == ("active", True)
    assert await kept(any_runtime, w.account.id) == before


async def test_protect_and_purge_racing_never_lose_a_protected_seat(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """Several rounds of a protection and the purge's run at about the same moment (the
    protection a little later each round): either the purge ran first (the data is gone and
    the protection answers 409) or the protection did (the seat is protected and holds all
    its data, the purge did nothing). On PostgreSQL the account's row lock orders them; on
    SQLite the database's write lock, taken before the account is read."""
    runtime, client = any_runtime, any_client
    outcomes = []
    for round_, delay in enumerate((0, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.3)):
        w = await build_world(runtime, f"race{round_}")
        before = await kept(runtime, w.account.id)
        job_id = await released_with_purge(client, w)

        async def protect_after(w: MspWorld = w, delay: float = delay) -> httpx.Response:
            await asyncio.sleep(delay)
            return await client.patch(seat(w), json={"protected": True}, headers=w.msp.headers)

        with outbox.collect():
            protect, _ = await asyncio.gather(protect_after(), run_purge_job(runtime, job_id))
        job = await job_row(runtime, job_id)
        account = await account_row(runtime, w.account.id)
        if protect.status_code == 200:
            assert (account.state, account.protected) == ("active", True), job.status
            assert job.status in (JobStatus.cancelled, JobStatus.failed), job.status
            assert await kept(runtime, w.account.id) == before
        else:
            assert protect.status_code == 409, protect.text
            assert "purged" in protect.json()["detail"]
            assert (account.state, job.status) == ("purged", JobStatus.succeeded)
        outcomes.append(protect.status_code)
    # Which of the two wins is the timing's affair; both are safe. The last rounds give the
    # purge a head start long enough for it to finish first.
    assert outcomes[-1] == 409, outcomes


async def test_a_manual_backup_refuses_unprotected_seats_by_name(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    w = await build_world(any_runtime, "alpha")
    h = w.msp.headers
    released = await create_account(any_runtime, w.tenant, name="Lee Gu", protected=False)
    path = f"/v1/tenants/{w.tenant.id}/backups"
    async with any_runtime.db.session() as session:
        jobs = int((await session.execute(select(func.count()).select_from(Job))).scalar_one())

    body = {"account_ids": [str(w.account.id), str(released.id)], "services": ["mail"]}
    r = await any_client.post(path, json=body, headers=h)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    messages = [e["msg"] for e in r.json()["errors"]]
    assert len(messages) == 1 and str(released.id) in messages[0], messages
    assert "not protected" in messages[0]
    assert str(w.account.id) not in " ".join(messages)
    async with any_runtime.db.session() as session:
        after = int((await session.execute(select(func.count()).select_from(Job))).scalar_one())
    assert after == jobs  # nothing started, nothing audited as requested

    # protected, it is backed up on request like any seat
    r = await any_client.patch(
        f"/v1/tenants/{w.tenant.id}/accounts/{released.id}", json={"protected": True}, headers=h
    )
    assert r.status_code == 200, r.text
    r = await any_client.post(path, json=body, headers=h)
    assert r.status_code == 202, r.text


async def test_the_fan_out_skips_a_seat_released_since_the_request(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    w = await build_world(any_runtime, "alpha")
    h = w.msp.headers
    other = await create_account(
        any_runtime, w.tenant, name="Megan Bowen", services_found={"mail": True}
    )
    body = {"account_ids": [str(w.account.id), str(other.id)], "services": ["mail"]}
    r = await any_client.post(f"/v1/tenants/{w.tenant.id}/backups", json=body, headers=h)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    # released before the job runs (no data yet: it stays active, not protected)
    r = await any_client.patch(
        f"/v1/tenants/{w.tenant.id}/accounts/{other.id}", json={"protected": False}, headers=h
    )
    assert (r.status_code, r.json()["state"], r.json()["protected"]) == (200, "active", False)

    with outbox.collect():
        await start_backup_job(any_runtime, job_id)
    async with any_runtime.db.session() as session:
        tasks = (
            await session.execute(
                select(JobTask.account_id).where(JobTask.job_id == uuid.UUID(job_id))
            )
        ).scalars()
        covered = set(tasks)
    assert covered == {w.account.id}


async def test_a_task_of_a_seat_released_after_the_fan_out_is_not_run(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """The fan-out made the seat's task; the seat is released before a worker takes it: the
    task ends cancelled with its reason, no snapshot is begun, and the job says so."""
    w = await build_world(any_runtime, "alpha")
    h = w.msp.headers
    other = await create_account(
        any_runtime, w.tenant, name="Megan Bowen", services_found={"mail": True}
    )
    body = {"account_ids": [str(other.id)], "services": ["mail"]}
    r = await any_client.post(f"/v1/tenants/{w.tenant.id}/backups", json=body, headers=h)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    with outbox.collect():
        await start_backup_job(any_runtime, job_id)
    async with any_runtime.db.session() as session:
        queued = [
            str(t)
            for t in (
                await session.execute(select(JobTask.id).where(JobTask.job_id == uuid.UUID(job_id)))
            ).scalars()
        ]
    assert len(queued) == 1

    r = await any_client.patch(
        f"/v1/tenants/{w.tenant.id}/accounts/{other.id}", json={"protected": False}, headers=h
    )
    assert (r.status_code, r.json()["protected"]) == (200, False)
    with outbox.collect():
        await run_backup_task(any_runtime, queued[0])

    async with any_runtime.db.session() as session:
        task = await session.get(JobTask, uuid.UUID(queued[0]))
    assert task is not None
    assert (task.status, task.error_code, task.snapshot_id) == (
        TaskStatus.cancelled,
        SEAT_RELEASED,
        None,
    )
    assert await kept(any_runtime, other.id) == (0, 0)
    job = await job_row(any_runtime, job_id)
    assert job.status == JobStatus.cancelled
    assert job.result["tasks"] == {"ok": 0, "failed": 0, "cancelled": 1}
