"""The scale-out limiter on a real Redis: pauses and slots shared by instances and processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from graphsim import Simulator
from safekeep.graph import RedisLimiter
from tests.graph.conftest import ClientFactory, start_sim
from tests.graph.test_throttling import LATE_ARRIVAL, throttle_then_arrive_late

LimiterFactory = Callable[..., RedisLimiter]


@pytest.fixture
async def limiters(redis_url: str) -> AsyncIterator[LimiterFactory]:
    """Instances that share one key prefix, as workers of one deployment would."""
    prefix = f"test-graph-{uuid.uuid4().hex}"
    made: list[RedisLimiter] = []

    def build(**kwargs: object) -> RedisLimiter:
        limiter = RedisLimiter.from_url(redis_url, prefix=prefix, **kwargs)
        made.append(limiter)
        return limiter

    build.prefix = prefix  # type: ignore[attr-defined]
    yield build
    for limiter in made:
        await limiter.aclose()


async def elapsed(awaitable) -> float:
    started = time.monotonic()
    await awaitable
    return time.monotonic() - started


async def test_a_pause_recorded_by_one_instance_holds_another(limiters: LimiterFactory):
    first, second = limiters(), limiters()
    await first.record_retry_after("tenant:mailbox:a", 0.4)
    assert await elapsed(second.wait_for_clearance("tenant:mailbox:b")) < 0.05
    assert 0.35 <= await elapsed(second.wait_for_clearance("tenant:mailbox:a")) < 0.6
    assert await elapsed(first.wait_for_clearance("tenant:mailbox:a")) < 0.05  # it is over


async def test_a_shorter_retry_after_never_cuts_a_longer_pause(limiters: LimiterFactory):
    first, second = limiters(), limiters()
    await first.record_retry_after("k", 0.5)
    await second.record_retry_after("k", 0.05)
    assert await elapsed(second.wait_for_clearance("k")) >= 0.45


async def test_slots_are_shared_by_every_instance(limiters: LimiterFactory):
    instances = [limiters() for _ in range(3)]
    holding = 0
    peak = 0

    async def work(limiter: RedisLimiter) -> None:
        nonlocal holding, peak
        async with limiter.slot("mbx", limit=2):
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(0.03)
            holding -= 1

    took = await elapsed(asyncio.gather(*(work(instances[i % 3]) for i in range(12))))
    assert peak == 2
    assert took >= 6 * 0.03  # twelve 30 ms holds, two at a time
    assert took < 1.0  # release is announced, not discovered by polling


async def test_a_held_slot_outlives_its_lease_while_renewed(limiters: LimiterFactory):
    holder, other = limiters(lease_seconds=0.45), limiters(lease_seconds=0.45)
    async with holder.slot("mbx", limit=1):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_take(other, "mbx"), 1.0)
    assert await elapsed(_take(other, "mbx")) < 0.2


async def _take(limiter: RedisLimiter, key: str) -> None:
    async with limiter.slot(key, limit=1):
        pass


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from safekeep.graph import RedisLimiter

    async def main(url, prefix):
        limiter = RedisLimiter.from_url(url, prefix=prefix, lease_seconds=1.0)
        await limiter.record_retry_after("tenant:mailbox:m", 0.8)
        async with limiter.slot("tenant:mailbox:m", limit=1):
            print("ready", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_another_process_shares_pauses_and_its_slots_expire_when_it_dies(
    redis_url: str, limiters: LimiterFactory
):
    worker = subprocess.Popen(  # started once, read from a thread
        [sys.executable, "-c", WORKER, redis_url, limiters.prefix],  # type: ignore[attr-defined]
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 20)
        assert line.strip() == "ready"
        ready = time.monotonic()
        local = limiters()
        await local.wait_for_clearance("tenant:mailbox:m")  # the other process's Retry-After
        assert time.monotonic() - ready >= 0.5
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_take(local, "tenant:mailbox:m"), 0.3)
        worker.send_signal(signal.SIGKILL)  # no release, no cleanup: a crashed worker
        worker.wait(5)
        killed = time.monotonic()
        await asyncio.wait_for(_take(local, "tenant:mailbox:m"), 3)
        assert time.monotonic() - killed <= 1.6  # within one lease (1 s) plus a poll
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(5)


async def test_graph_workers_on_one_redis_wait_out_each_others_retry_after(
    limiters: LimiterFactory, make_client: ClientFactory
):
    sim: Simulator = start_sim(seed=5, messages=4, throttling=LATE_ARRIVAL)
    try:
        first = make_client(sim, limiter=limiters())
        second = make_client(sim, limiter=limiters())
        took = await throttle_then_arrive_late(sim, first, second)
        assert sim.counters()["retry_after_violations"] == 0
        assert second.stats.throttled == 0
        assert took >= 0.4
    finally:
        sim.stop()
