"""A restore job that is retried (its worker lost part-way, a blip of the blob store) ends with
each item in the target once: the retry writes into the folder the first attempt made, skips
what that attempt restored (``keep_both`` included: by the job's own stamp, or for files by
the copy the attempt left), and a blip stops the attempt instead of failing items for good.

Against graphsim, run as the worker runs a restore job (``run_restore_job``); the retry comes
minutes later, as a lost worker's job does, across a minute boundary."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from safekeep.backup.jobs import restore as restore_job
from safekeep.backup.jobs.restore import run_restore_job
from safekeep.backup.restore.report import JobRestoreReport
from safekeep.storage.errors import BlobStoreUnavailable
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import Account, Job, JobIssue, JobKind, utcnow
from tests.backup.harness import EngineHarness

KIND = {"mail": "message", "calendar": "event", "contacts": "contact"}


class WorkerLost(BaseException):
    """The worker dies part-way through an attempt (as a SIGKILL stops it: no handler of the
    restore or of the job's lifecycle sees it, and the job's lease is left to expire)."""


def params(source: Account, target: Account, service: str, folder: str, conflict: str) -> Any:
    return {
        "scope": {
            "type": "service",
            "account_id": str(source.id),
            "service": service,
            "item_ids": [],
        },
        "at": None,
        "snapshot_id": None,
        "target": {"account_id": str(target.id), "folder": folder, "channels": "import"},
        "conflict": conflict,
    }


def outlook_items(h: EngineHarness, user: str, kind: str) -> list[Any]:
    tenant = h.sim.tenant(h.sim_tenant_id)
    return [
        i
        for i in tenant.items.values()
        if i.kind == kind and i.user_id == user and not getattr(i, "deleted", False)
    ]


def restored_folders(h: EngineHarness, user: str, kind: str) -> list[str]:
    tenant = h.sim.tenant(h.sim_tenant_id)
    return sorted(
        f.display_name
        for f in tenant.user_folders(user, kind)
        if not f.deleted and f.display_name.startswith("Restored ")
    )


def drive_files(h: EngineHarness, user: str) -> list[Any]:
    tenant = h.sim.tenant(h.sim_tenant_id)
    return [
        item
        for drive in tenant.drives.values()
        if drive.owner_kind == "user" and drive.owner_id == user
        for item in drive.items.values()
        if not item.is_folder and not item.deleted
    ]


@contextmanager
def worker_lost_after(restored: int) -> Iterator[None]:
    """The attempt's worker dies once ``restored`` items were written."""
    real = JobRestoreReport.restored
    seen = {"n": 0}

    async def dying(self: JobRestoreReport, version: Any, **kw: Any) -> None:
        await real(self, version, **kw)
        seen["n"] += 1
        if seen["n"] == restored:
            raise WorkerLost("worker lost")

    JobRestoreReport.restored = dying  # type: ignore[method-assign]
    try:
        yield
    finally:
        JobRestoreReport.restored = real  # type: ignore[method-assign]


@contextmanager
def minutes_later(minutes: int) -> Iterator[None]:
    """The retry runs this much later (a lost worker's job comes back after a minute or
    more), so the clock has crossed a minute boundary."""
    later = utcnow() + timedelta(minutes=minutes)
    real = restore_job.utcnow
    restore_job.utcnow = lambda: later
    try:
        yield
    finally:
        restore_job.utcnow = real


@contextmanager
def store_unavailable(reads: range) -> Iterator[None]:
    """The blob store refuses these chunk reads (past botocore's own retries)."""
    real = TenantRepository._fetch
    seen = {"n": 0}

    async def flaky(self: TenantRepository, chunk: Any) -> bytes:
        seen["n"] += 1
        if seen["n"] in reads:
            raise BlobStoreUnavailable("S3 endpoint unreachable (simulated)")
        return await real(self, chunk)

    TenantRepository._fetch = flaky  # type: ignore[method-assign]
    try:
        yield
    finally:
        TenantRepository._fetch = real  # type: ignore[method-assign]


async def lost_then_retried(h: EngineHarness, job_id: uuid.UUID, *, after: int) -> None:
    # A task group may carry the lost worker in an exception group: unwrapped below.
    with worker_lost_after(after), pytest.raises(BaseException) as lost:  # noqa: PT011
        await run_restore_job(h.runtime, str(job_id))
    died: BaseException = lost.value
    while isinstance(died, BaseExceptionGroup):
        died = died.exceptions[0]
    assert isinstance(died, WorkerLost)
    assert (await h.job(job_id)).status == "running"
    async with h.runtime.db.session() as session:  # minutes later: the dead run's lease expired
        row = await session.get(Job, job_id)
        assert row is not None
        if hasattr(row, "heartbeat_at"):
            row.heartbeat_at = None
        await session.commit()
    with minutes_later(2):
        await run_restore_job(h.runtime, str(job_id))


async def issue_codes(h: EngineHarness, job_id: uuid.UUID) -> list[str]:
    async with h.runtime.db.session() as session:
        rows = await session.execute(select(JobIssue.code).where(JobIssue.job_id == job_id))
        return [code for (code,) in rows]


@pytest.mark.parametrize("service", ["mail", "contacts"])
async def test_a_restore_into_a_new_folder_retried_minutes_later_restores_each_item_once(
    engine: EngineHarness, service: str
) -> None:
    h = engine
    source, target = await h.user(0), await h.user(1)
    await h.backup(source, service)
    kind = KIND[service]
    folder_kind = "mail" if service == "mail" else "contact"
    expected = len(outlook_items(h, source.graph_id, kind))
    assert expected >= 2
    before = len(outlook_items(h, target.graph_id, kind))
    job = await h.start_job(JobKind.restore, params(source, target, service, "new", "skip"))

    await lost_then_retried(h, job.id, after=expected // 2)

    done = await h.job(job.id)
    assert done.status == "succeeded", (done.error_code, done.error_detail)
    assert len(outlook_items(h, target.graph_id, kind)) - before == expected
    folders = restored_folders(h, target.graph_id, folder_kind)
    assert folders == [done.result["folder_name"]]
    totals = done.result["totals"]
    assert totals["restored"] + totals["skipped_existing"] == expected
    assert totals["failed"] == 0


@pytest.mark.parametrize("service", ["mail", "contacts", "calendar"])
async def test_a_keep_both_restore_retried_does_not_restore_again_what_it_restored(
    engine: EngineHarness, service: str
) -> None:
    h = engine
    source, target = await h.user(0), await h.user(1)
    await h.backup(source, service)
    kind = KIND[service]
    expected = len(outlook_items(h, source.graph_id, kind))
    assert expected >= 2
    before = len(outlook_items(h, target.graph_id, kind))
    job = await h.start_job(
        JobKind.restore, params(source, target, service, "original", "keep_both")
    )

    await lost_then_retried(h, job.id, after=expected // 2)

    done = await h.job(job.id)
    assert done.status == "succeeded", (done.error_code, done.error_detail)
    assert len(outlook_items(h, target.graph_id, kind)) - before == expected
    assert done.result["totals"]["restored"] == expected

    # keep_both is still keep_both for another restore: it adds its own copy of each item.
    again = await h.start_job(
        JobKind.restore, params(source, target, service, "original", "keep_both")
    )
    await run_restore_job(h.runtime, str(again.id))
    assert len(outlook_items(h, target.graph_id, kind)) - before == 2 * expected


async def test_a_keep_both_drive_restore_in_place_retried_keeps_one_copy_of_each_file(
    engine: EngineHarness,
) -> None:
    h = engine
    source = await h.user(0)
    await h.backup(source, "onedrive")
    originals = drive_files(h, source.graph_id)
    assert len(originals) >= 4
    job = await h.start_job(
        JobKind.restore, params(source, source, "onedrive", "original", "keep_both")
    )

    await lost_then_retried(h, job.id, after=len(originals) // 2)

    done = await h.job(job.id)
    assert done.status == "succeeded", (done.error_code, done.error_detail)
    after = drive_files(h, source.graph_id)
    # Every file is there twice: the original and the one copy keep_both put beside it.
    assert len(after) == 2 * len(originals)
    contents = Counter(bytes(f.content.data) if f.content else b"" for f in after)
    assert all(count % 2 == 0 for count in contents.values())
    assert done.result["totals"]["restored"] == len(originals)


async def test_a_keep_both_drive_restore_elsewhere_retried_writes_each_file_once(
    engine: EngineHarness,
) -> None:
    h = engine
    source, target = await h.user(0), await h.user(1)
    await h.backup(source, "onedrive")
    originals = drive_files(h, source.graph_id)
    before = len(drive_files(h, target.graph_id))
    job = await h.start_job(JobKind.restore, params(source, target, "onedrive", "new", "keep_both"))

    await lost_then_retried(h, job.id, after=len(originals) // 2)

    done = await h.job(job.id)
    assert done.status == "succeeded", (done.error_code, done.error_detail)
    assert len(drive_files(h, target.graph_id)) - before == len(originals)


@pytest.mark.parametrize(("service", "reads"), [("mail", range(3, 6)), ("onedrive", range(2, 5))])
async def test_a_blob_store_blip_retries_the_restore_instead_of_failing_items(
    engine: EngineHarness, service: str, reads: range
) -> None:
    h = engine
    source, target = await h.user(0), await h.user(1)
    await h.backup(source, service)
    if service == "mail":
        expected = len(outlook_items(h, source.graph_id, "message"))
        before = len(outlook_items(h, target.graph_id, "message"))
    else:
        expected = len(drive_files(h, source.graph_id))
        before = len(drive_files(h, target.graph_id))
    job = await h.start_job(JobKind.restore, params(source, target, service, "new", "skip"))

    with store_unavailable(reads), pytest.raises(BlobStoreUnavailable):
        await run_restore_job(h.runtime, str(job.id))
    assert (await h.job(job.id)).status == "running"  # to be retried, nothing failed
    assert await issue_codes(h, job.id) == []
    with minutes_later(1):
        await run_restore_job(h.runtime, str(job.id))

    done = await h.job(job.id)
    assert done.status == "succeeded", (done.error_code, done.error_detail)
    assert done.result["totals"]["failed"] == 0
    assert await issue_codes(h, job.id) == []
    if service == "mail":
        now = len(outlook_items(h, target.graph_id, "message"))
    else:
        now = len(drive_files(h, target.graph_id))
    assert now - before == expected
