"""Workers SIGKILLed at random points of a backup, as a lost machine would be: each trial
kills the only worker at a random moment of the backup, changes the drive
meanwhile (edits, a deletion, a new file), starts a new worker and lets recovery resume the
job. The catalog must then match graphsim exactly: nothing missing, duplicated or stale, and
the stored bytes identical. ``SAFEKEEP_FAULT_TRIALS`` sets how many trials run."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from safekeep.tenants.models import Account, JobTask, TaskStatus
from safekeep.workers.scheduler import recover_lost_jobs
from tests.e2e.conftest import Deployment
from tests.faults.conftest import (
    figure,
    job_progress,
    start_backup,
    trials,
    wait_for_progress,
    wait_for_status,
    wait_until_finished,
)
from tests.faults.truth import assert_catalog_matches_graphsim


async def unfinished_users(deployment: Deployment, job_id: str) -> set[str]:
    """Graph ids of the users whose task of this job has not ended."""
    async with deployment.runtime.db.session() as session:
        rows = await session.execute(
            select(Account.graph_id)
            .join(JobTask, JobTask.account_id == Account.id)
            .where(
                JobTask.job_id == uuid.UUID(job_id),
                JobTask.status.in_([TaskStatus.queued, TaskStatus.running]),
            )
        )
        return set(rows.scalars())


def change_drives(deployment: Deployment, users: set[str], rng: random.Random) -> None:
    """Edit two files, delete one and add one, in drives whose backup has not finished (a
    drive already backed up by this job would rightly keep its earlier state until the next)."""
    sim = deployment.sim
    tenant = sim.tenant()
    files = sorted(
        (item.id, user.id)
        for user in tenant.users.values()
        if user.id in users and user.drive_id in tenant.drives
        for item in tenant.drives[user.drive_id].items.values()
        if not item.is_folder and not item.deleted and item.parent_id is not None
    )
    edited, deleted = rng.sample(files, 2), rng.choice(files)
    for item_id, _user in edited:
        sim.edit_item(tenant.id, item_id, {"content": f"edited {rng.random()}\n".encode() * 40})
    if deleted not in edited:
        sim.delete_item(tenant.id, deleted[0])
    sim.add_file(tenant.id, f"after-the-crash-{rng.randrange(10**6)}.txt", user=files[0][1])


@pytest.mark.parametrize("trial", range(trials()))
async def test_a_worker_killed_at_a_random_point_loses_nothing(
    trial: int, shared_deployment: Deployment
) -> None:
    deployment = shared_deployment
    rng = random.Random(f"kill-trial-{trial}-{time.time_ns()}")
    worker = deployment.start_worker(threads=1)
    tenant = await deployment.onboard(services=["onedrive"])
    # Slow Graph down (an account's first page then takes about 3 s) and kill at a random
    # moment: even trials while the first page is being fetched (nothing saved yet), odd ones
    # just after it was saved (between pages, or as the next account's task starts).
    deployment.sim.set_latency(250)
    job_id = await start_backup(deployment, tenant["id"])
    if trial % 2:
        await wait_for_progress(deployment, job_id)
        delay = rng.uniform(0.0, 0.5)
    else:
        # The job is running once the worker has claimed its first task; on a loaded machine
        # that can take longer than the delay below, and a kill before it proves nothing.
        await wait_for_status(deployment, job_id, "running")
        delay = rng.uniform(0.3, 1.5)
    await asyncio.sleep(delay)
    saved = await job_progress(deployment, job_id)
    deployment.kill(worker)
    killed = time.monotonic()
    detail = await deployment.get(f"/v1/jobs/{job_id}")
    assert detail["status"] == "running", "the kill landed after the backup ended"
    deployment.sim.set_latency(0)
    change_drives(deployment, await unfinished_users(deployment, job_id), rng)
    deployment.start_worker()
    # The lease (4 s here) must lapse before another worker may take the task; then the
    # scheduler's recovery resends the job (what its tick does after job_recovery_seconds).
    await asyncio.sleep(deployment.settings.task_lease_seconds + 1)
    assert await recover_lost_jobs(older_than=timedelta(0)) >= 1
    done = await wait_until_finished(deployment, job_id, timeout=180, unavailable=[])
    assert done["status"] == "succeeded", done
    compared = await assert_catalog_matches_graphsim(deployment, tenant["id"])
    figure(
        "worker_kill_resume",
        time.monotonic() - killed,
        "s",
        trial=trial,
        killed_after=f"{delay:.2f}s",
        items_saved_before_kill=saved,
        files=compared.files,
        bytes_compared=compared.bytes_read,
    )
