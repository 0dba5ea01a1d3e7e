"""The scheduler outlives a blip of its database or queue: a failing step is logged and
skipped, the other steps of the tick still run, and the loop tries again within seconds."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from safekeep.runtime import Runtime
from safekeep.workers import context, scheduler
from tests.factories import create_msp, create_tenant
from tests.fixtures.app import SentMessages
from tests.workers.test_scheduler import _due


def _database_down() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT", {}, psycopg.OperationalError("connection refused"))


async def test_a_failing_step_does_not_cost_the_others(
    worker_runtime: Runtime, sent: SentMessages, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = worker_runtime
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp, policy={"backups_per_day": 4})
    await _due(runtime, tenant)

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
