"""Workers SIGKILLed at random points of a backup, as a lost machine would be: each trial
kills the only worker once the backup has saved a random number of items, changes the drive
meanwhile (edits, a deletion, a new file), starts a new worker and lets recovery resume the
job. The catalog must then match graphsim exactly: nothing missing, duplicated or stale, and
the stored bytes identical. ``SAFEKEEP_FAULT_TRIALS`` sets how many trials run."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta

import pytest

from safekeep.workers.scheduler import recover_lost_jobs
from tests.e2e.conftest import Deployment
from tests.faults.conftest import (
    figure,
    job_progress,
    start_backup,
    trials,
    wait_for_progress,
    wait_until_finished,
)
from tests.faults.truth import assert_catalog_matches_graphsim


def change_drives(deployment: Deployment, rng: random.Random) -> None:
    """Edit two files, delete one and add one while no worker runs."""
    sim = deployment.sim
    tenant = sim.tenant()
    files = sorted(
        (item.id, user.id)
        for user in tenant.users.values()
        if user.drive_id in tenant.drives
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
    deployment.sim.set_latency(40)  # so that the kill lands mid-backup
    job_id = await start_backup(deployment, tenant["id"])
    kill_at = rng.randint(1, 40)
    await wait_for_progress(deployment, job_id, at_least=kill_at)
    saved = await job_progress(deployment, job_id)
    deployment.kill(worker)
    killed = time.monotonic()
    detail = await deployment.get(f"/v1/jobs/{job_id}")
    assert detail["status"] == "running", "the kill landed after the backup ended"
    deployment.sim.set_latency(0)
    change_drives(deployment, rng)
    deployment.start_worker()
    # The lease (4 s here) must lapse before another worker may take the task; then the
    # scheduler's recovery resends the job (what its tick does after job_recovery_seconds).
    await asyncio.sleep(deployment.settings.task_lease_seconds + 1)
    assert await recover_lost_jobs(older_than=timedelta(0)) >= 1
    done = await wait_until_finished(deployment, job_id, timeout=180, unavailable=[])
    assert done["status"] == "succeeded", done
    compared = await assert_catalog_matches_graphsim(
        deployment.runtime, deployment.sim, tenant["id"]
    )
    figure(
        "worker_kill_resume",
        time.monotonic() - killed,
        "s",
        trial=trial,
        killed_after_items=saved,
        files=compared.files,
        bytes_compared=compared.bytes_read,
    )
