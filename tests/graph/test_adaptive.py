"""Adaptive concurrency (AIMD) on a real Redis, and the client learning a tenant's real limit.

The windows are shared state: what one worker's 429 teaches, every other worker obeys.
Each limiter test runs on both implementations (Redis for scale-out, in-process for the
embedded mode), so they keep one meaning.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from safekeep.graph import BatchRequest, InProcessLimiter, Limiter, RedisLimiter
from safekeep.graph.throttle import Aimd
from tests.graph.conftest import ClientFactory, one_slot_mailbox, recorder_of, start_sim
from tests.graph.test_throttling import early_requests, mailbox_of, mailbox_users

LimiterPair = Callable[[Aimd], AbstractAsyncContextManager[tuple[Limiter, Limiter]]]


@pytest.fixture(params=["redis", "in-process"])
def pair(request: pytest.FixtureRequest, redis_url: str) -> LimiterPair:
    """Two limiters that share their state, as two workers of one deployment do (closed
    by the test itself, inside its own event loop)."""

    @asynccontextmanager
    async def build(aimd: Aimd) -> AsyncIterator[tuple[Limiter, Limiter]]:
        if request.param == "in-process":
            one = InProcessLimiter(aimd)
            yield one, one
            return
        prefix = f"test-aimd-{uuid.uuid4().hex}"
        first = RedisLimiter.from_url(redis_url, prefix=prefix, aimd=aimd)
        second = RedisLimiter.from_url(redis_url, prefix=prefix, aimd=aimd)
        try:
            yield first, second
        finally:
            await first.aclose()
            await second.aclose()

    return build


async def test_a_new_key_starts_at_one_slot_and_doubles_to_the_ceiling(pair: LimiterPair):
    async with pair(Aimd(hold_seconds=0)) as (first, second):
        assert await second.window("m", ceiling=4) == 1  # nothing known: one slot
        for expected in (2.0, 3.0, 4.0, 4.0):  # slow start: a slot more per answer
            assert await first.record_outcome("m", throttled=False, ceiling=4) == expected
        assert await second.window("m", ceiling=4) == 4
        assert await second.window("other", ceiling=4) == 1  # windows are per key
        async with second.slot("other", limit=4, count=4, adaptive=True) as held:
            assert held == 1
        async with first.slot("plain", limit=4, count=4) as held:
            assert held == 4  # a key nobody teaches keeps its fixed limit


async def test_a_429_halves_the_window_down_to_one_slot(pair: LimiterPair):
    async with pair(Aimd(hold_seconds=0)) as (first, second):
        for _ in range(3):
            await first.record_outcome("m", throttled=False, ceiling=4)
        assert await first.record_outcome("m", throttled=True, ceiling=4) == pytest.approx(2.0)
        assert await second.window("m", ceiling=4) == 2
        assert await second.record_outcome("m", throttled=True, ceiling=4) == pytest.approx(1.0)
        assert await first.record_outcome("m", throttled=True, ceiling=4) == pytest.approx(1.0)
        assert await first.window("m", ceiling=4) == 1


async def test_after_a_429_answers_grow_the_window_additively_up_to_the_ceiling(
    pair: LimiterPair,
):
    async with pair(Aimd(increase=0.5, hold_seconds=0)) as (first, second):
        await first.record_outcome("m", throttled=True, ceiling=4)  # 1.0, slow start over
        grown = [await second.record_outcome("m", throttled=False, ceiling=4) for _ in range(3)]
        assert grown == pytest.approx(
            [1.5, 1.5 + 0.5 / 1.5, 1.5 + 0.5 / 1.5 + 0.5 / (1.5 + 0.5 / 1.5)]
        )
        assert await first.window("m", ceiling=4) == 2
        for _ in range(40):
            await first.record_outcome("m", throttled=False, ceiling=4)
        assert await second.record_outcome("m", throttled=False, ceiling=4) == pytest.approx(4.0)
        assert await second.window("m", ceiling=4) == 4


async def test_answers_just_after_a_cut_do_not_grow_the_window(pair: LimiterPair):
    # They answer requests sent before the cut: they say nothing about the new window.
    async with pair(Aimd(increase=1.0, hold_seconds=3600)) as (first, second):
        for _ in range(3):
            await first.record_outcome("m", throttled=False, ceiling=4)
        await first.record_outcome("m", throttled=True, ceiling=4)
        for _ in range(5):
            grown = await second.record_outcome("m", throttled=False, ceiling=4)
            assert grown == pytest.approx(2.0)


async def test_slots_follow_the_shared_window(pair: LimiterPair):
    async with pair(Aimd(hold_seconds=0)) as (first, second):
        await first.record_outcome("m", throttled=True, ceiling=4)  # one slot of four
        async with second.slot("m", limit=4) as held:
            assert held == 1
            waiting = asyncio.create_task(_take(first, "m", 4))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # the only slot is taken, in the other worker
        assert await asyncio.wait_for(waiting, 10) == 1


async def test_a_multi_slot_holder_gets_no_more_than_the_window(pair: LimiterPair):
    # A batch asking for 4 slots while the window is 2 must not wait for ever.
    async with pair(Aimd(hold_seconds=0)) as (first, second):
        await first.record_outcome("m", throttled=False, ceiling=4)  # 2
        async with second.slot("m", limit=4, count=4) as held:
            assert held == 2
        for _ in range(2):
            await first.record_outcome("m", throttled=False, ceiling=4)  # 4
        async with first.slot("m", limit=4, count=3) as held:
            assert held == 3


async def _take(limiter: Limiter, key: str, limit: int) -> int:
    async with limiter.slot(key, limit=limit) as held:
        return held


async def test_workers_learn_a_mailbox_limit_below_microsofts(
    pair: LimiterPair, make_client: ClientFactory
):
    # The tenant's real limit is 1 concurrent request per mailbox, not the documented 4; two
    # workers share what they learn through their limiters.
    sim = start_sim(seed=12, messages=4, throttling=one_slot_mailbox(latency_ms=5.0))
    try:
        async with pair(Aimd(hold_seconds=0.5)) as (first, second):
            workers = [make_client(sim, limiter=first), make_client(sim, limiter=second)]
            user = mailbox_users(sim)[0]

            async def fetch(i: int) -> str:
                path = f"/users/{user}/mailFolders/inbox"
                return (await workers[i % 2].get_json(path, mailbox=user))["id"]

            assert len(await asyncio.gather(*(fetch(i) for i in range(40)))) == 40
            counters = sim.counters()
            # The first burst (4 at once) is refused up to 3 times and cuts the window to one
            # slot; from there it grows by 0.05 per answer, so 40 answers reopen a second
            # slot at most once. Without the window every pause would end in a burst of 4.
            assert 1 <= counters["throttled"] <= 4
            assert sum(w.stats.throttled for w in workers) == counters["throttled"]
            assert counters["retry_after_violations"] == 0
            for worker in workers:
                assert early_requests(recorder_of(worker), mailbox_of) == []
            key = f"{sim.tenant().id}:mailbox:{user.lower()}"
            assert await second.window(key, ceiling=4) <= 2
    finally:
        sim.stop()


async def test_batches_shrink_to_the_window_and_honour_inner_retry_after(
    make_client: ClientFactory,
):
    # Exchange runs 4 requests of a batch at once: against a limit of 1, a 20-request
    # envelope would be refused 19 times. Envelopes carry no more than the window.
    sim = start_sim(seed=13, messages=30, throttling=one_slot_mailbox(latency_ms=2.0))
    try:
        client = make_client(sim, limiter=InProcessLimiter(Aimd(hold_seconds=60)))
        user = mailbox_users(sim)[0]
        ids = [
            m["id"]
            async for page in client.paginate(f"/users/{user}/messages", params={"$top": 50})
            for m in page
        ][:20]
        sim.reset_counters()
        requests = [
            BatchRequest(id=str(i), method="GET", url=f"/users/{user}/messages/{mid}")
            for i, mid in enumerate(ids)
        ]
        responses = await client.batch(requests)
        assert [r.status for r in responses] == [200] * 20
        posts = [
            json.loads(r.content)["requests"]
            for r in recorder_of(client).requests
            if r.url.path.endswith("/$batch")
        ]
        # Slow start: one answer so far (the listing), so the first envelope carries two
        # requests; Exchange runs them at once and refuses one, which cuts the window to
        # one slot; from then on one request per envelope, and none refused.
        sizes = [len(p) for p in posts]
        assert sizes[0] == 2
        assert all(n == 1 for n in sizes[1:])
        assert sum(sizes) == 21  # the refused one was sent again, once
        counters = sim.counters()
        assert counters["retry_after_violations"] == 0
        refused = counters["batch_by_status"]["429"]
        assert refused == 1
        assert client.stats.throttled == refused
    finally:
        sim.stop()


async def test_sharepoint_pauses_near_its_budget_before_any_429(make_client: ClientFactory):
    # SharePoint announces its budget (RateLimit-*) once 50% of it is used here; the client
    # stops short of the last units instead of spending them and collecting 429s.
    sim = start_sim(
        seed=14,
        files=2,
        throttling={"mode": "custom", "sharepoint_units_per_minute": 10, "rate_limit_warning": 0.5},
    )
    try:
        limiter = InProcessLimiter()
        client = make_client(sim, limiter=limiter)
        drive = next(u.drive_id for u in sim.tenant().users.values() if u.drive_id)
        key = f"{sim.tenant().id}:sharepoint"
        sent = 0
        while sent < 10:
            await client.get_json(f"/drives/{drive}/root")
            sent += 1
            try:
                await asyncio.wait_for(limiter.wait_for_clearance(key), 0.05)
            except TimeoutError:
                break  # paused: the next request would wait for RateLimit-Reset
        assert sent == 7  # 10 units, 4 kept in reserve: the 7th answer said 3 remain
        assert sim.counters()["throttled"] == 0
    finally:
        sim.stop()
