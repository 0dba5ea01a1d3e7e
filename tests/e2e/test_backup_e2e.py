"""Issue 5's end-to-end checks: a simulated tenant backed up in full and incrementally
through POST /v1/tenants/{id}/backups with real worker processes; a worker killed mid-backup
loses nothing and duplicates nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.models import Item, ItemVersion, Job, JobTask, Snapshot
from safekeep.workers.scheduler import recover_lost_jobs
from tests.e2e.conftest import Deployment

NOW = "2100-01-01T00:00:00Z"  # later than any backup: every account is "not backed up since"


async def check_last_backups(deployment: Deployment, tenant_id: str, *, since: str) -> None:
    """``last_backup_at`` of every account is the end of its last finished snapshot, its
    ``least_recent_backup_at`` the oldest of its services' last ones (the policy's services
    all have snapshots where a seat has any), and ``not_backed_up_since`` lists exactly the
    protected accounts with a service not backed up after ``since``."""
    path = f"/v1/tenants/{tenant_id}/accounts"
    snapshots = (await deployment.get(f"/v1/tenants/{tenant_id}/snapshots", limit=200))["items"]
    ended: dict[str, dict[str, datetime]] = {}
    for s in snapshots:
        if s["completed_at"] is not None:
            at = datetime.fromisoformat(s["completed_at"])
            services = ended.setdefault(s["account_id"], {})
            services[s["service"]] = max(at, services.get(s["service"], at))
    accounts = (await deployment.get(path, limit=200))["items"]

    def shown(field: str) -> dict[str, datetime]:
        return {a["id"]: datetime.fromisoformat(a[field]) for a in accounts if a[field]}

    assert ended
    assert shown("last_backup_at") == {a: max(s.values()) for a, s in ended.items()}
    assert shown("least_recent_backup_at") == {a: min(s.values()) for a, s in ended.items()}
    some = next(iter(ended))
    detail = await deployment.get(f"{path}/{some}")
    assert {k: datetime.fromisoformat(v) for k, v in detail["last_backups"].items()} == ended[some]
    stale = await deployment.get(path, protected="true", not_backed_up_since=since, limit=200)
    cutoff = datetime.fromisoformat(since)
    least = shown("least_recent_backup_at")
    assert 0 < len(stale["items"]) < len(accounts)  # some were backed up, some not
    assert {a["id"] for a in stale["items"]} == {
        a["id"] for a in accounts if a["protected"] and not (least.get(a["id"]) or cutoff) > cutoff
    }


def drive_files(deployment: Deployment) -> dict[str, int]:
    """graphsim's own truth: files per user drive."""
    tenant = deployment.sim.tenant()
    counts: dict[str, int] = {}
    for user in tenant.users.values():
        drive = tenant.drives.get(user.drive_id or "")
        if drive is None:
            continue
        counts[user.id] = sum(1 for i in drive.items.values() if not i.is_folder and not i.deleted)
    return counts


async def test_full_then_incremental_backup_through_the_api(deployment: Deployment) -> None:
    deployment.start_worker()
    tenant = await deployment.onboard(services=["onedrive"])
    accounts_path = f"/v1/tenants/{tenant['id']}/accounts"
    never = await deployment.get(accounts_path, protected="true", not_backed_up_since=NOW)
    assert never["items"] and all(a["last_backup_at"] is None for a in never["items"])
    job = await deployment.backup(tenant["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"]["tasks_total"] == job["progress"]["tasks_done"] >= 1
    snapshots = await deployment.get(f"/v1/tenants/{tenant['id']}/snapshots")
    first_total = sum(s["items_total"] for s in snapshots["items"])
    assert first_total > 0
    before = deployment.sim.counters()["total"]
    again = await deployment.backup(tenant["id"])
    assert again["status"] == "succeeded"
    requests = deployment.sim.counters()["total"] - before
    # nothing changed: a handful of requests per account, not one per file
    assert requests <= 6 * again["progress"]["tasks_total"], requests
    snapshots = await deployment.get(f"/v1/tenants/{tenant['id']}/snapshots")
    latest = {s["account_id"]: s for s in reversed(snapshots["items"])}
    assert all(
        s["items_added"] == s["items_changed"] == s["items_removed"] == 0 for s in latest.values()
    )
    usage = await deployment.get("/v1/usage")
    assert usage["stored_bytes"] > 0
    # Each account's last backup is its last snapshot's end; the seats not backed up since
    # the second job started are those it had nothing of (no OneDrive), and only those.
    await check_last_backups(deployment, tenant["id"], since=again["started_at"])
    # the engine settled both jobs with their progress: the list shows it without reading
    # their tasks, and it is what a poll of each (which sums the tasks) shows
    listed = await deployment.get(f"/v1/tenants/{tenant['id']}/jobs?kind=backup")
    shown = {j["id"]: j["progress"] for j in listed["items"]}
    for settled in (job, again):
        polled = await deployment.get(f"/v1/jobs/{settled['id']}")
        assert shown[settled["id"]] == polled["progress"] == settled["progress"]
        async with deployment.runtime.db.session() as session:
            row = await session.get(Job, uuid.UUID(settled["id"]))
            assert row is not None and job_repository.settled_progress(row) == polled["progress"]


@pytest.mark.parametrize("e2e_sim", [{"files": 200}], indirect=True)
async def test_a_killed_worker_loses_nothing_and_duplicates_nothing(deployment: Deployment) -> None:
    worker = deployment.start_worker(threads=1)  # one task at a time: the second is in flight
    tenant = await deployment.onboard(services=["onedrive"])
    deployment.sim.set_latency(80)  # slow Microsoft down so the kill lands mid-backup
    r = await deployment.client.post(
        f"/v1/tenants/{tenant['id']}/backups", headers=deployment.msp.headers
    )
    job_id = r.json()["id"]

    async def some_progress() -> bool:
        async with deployment.runtime.db.session() as session:
            stmt = select(func.coalesce(func.sum(JobTask.items), 0)).where(
                JobTask.job_id == r.json()["id"]
            )
            return bool((await session.execute(stmt)).scalar_one())

    for _ in range(600):
        if await some_progress():
            break
        await asyncio.sleep(0.05)
    deployment.kill(worker)
    deployment.sim.set_latency(0)
    detail = await deployment.get(f"/v1/jobs/{job_id}")
    assert detail["status"] == "running"
    deployment.start_worker()
    await asyncio.sleep(deployment.settings.task_lease_seconds + 1)
    assert await recover_lost_jobs(older_than=timedelta(0)) >= 1
    done = await deployment.wait_for(
        f"/v1/jobs/{job_id}",
        lambda j: j["status"] in ("succeeded", "partial", "failed"),
        timeout=180,
    )
    assert done["status"] == "succeeded", done
    async with deployment.runtime.db.session() as session:
        versions = Counter(
            (
                await session.execute(
                    select(ItemVersion.item_id).where(ItemVersion.service == "onedrive")
                )
            )
            .scalars()
            .all()
        )
        snapshots = (await session.execute(select(Snapshot))).scalars().all()
        items = (await session.execute(select(func.count()).select_from(Item))).scalar_one()
    assert versions and max(versions.values()) == 1  # every item stored once
    assert len(versions) == items
    # the interrupted snapshot was resumed, not abandoned for a new one
    assert sorted(s.seq for s in snapshots) == [1] * len(snapshots)
    assert all(s.status == "complete" for s in snapshots)
    truth = drive_files(deployment)
    async with deployment.runtime.db.session() as session:
        files = (
            await session.execute(
                select(func.count()).select_from(ItemVersion).where(ItemVersion.kind == "file")
            )
        ).scalar_one()
    assert files == sum(truth.values())


async def test_the_scheduler_process_starts_due_backups(deployment: Deployment) -> None:
    """`safekeep scheduler` as its own process (the Helm chart's scheduler pod): a due tenant
    gets one scheduled backup, which a worker process runs, and its next run moves on."""
    import os
    import signal
    import subprocess
    import sys

    from safekeep.tenants.models import Tenant, utcnow
    from tests.e2e.conftest import ROOT, settings_env

    deployment.start_worker()
    tenant = await deployment.onboard(services=["contacts"])
    async with deployment.runtime.db.session() as session:
        row = await session.get(Tenant, uuid.UUID(tenant["id"]))
        assert row is not None
        row.next_backup_at = utcnow() - timedelta(minutes=1)
    env = {**settings_env(deployment.settings), "SAFEKEEP_SCHEDULER_INTERVAL_SECONDS": "1"}
    log = (deployment.log_dir / "scheduler.log").open("wb")
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "safekeep.cli", "scheduler"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        jobs = await deployment.wait_for(
            f"/v1/tenants/{tenant['id']}/jobs",
            lambda page: any(
                j["trigger"] == "scheduled" and j["status"] == "succeeded" for j in page["items"]
            ),
            kind="backup",
        )
    finally:
        os.killpg(scheduler.pid, signal.SIGTERM)
        scheduler.wait(20)
    scheduled = [j for j in jobs["items"] if j["trigger"] == "scheduled"]
    assert len(scheduled) == 1
    after = await deployment.get(f"/v1/tenants/{tenant['id']}")
    assert after["next_backup_at"] > utcnow().isoformat()
