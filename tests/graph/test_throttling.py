"""Throttling against graphsim's Microsoft model: slots, Retry-After shared, no early return.

Two views of "never come back early": graphsim's own ``retry_after_violations`` counter
(which forgives requests arriving within its grace period after a 429, since a client with
several requests in flight cannot recall those), and, stricter, the wire as the client saw
it: nothing is sent to a mailbox between receiving a Retry-After for it and its end.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from graphsim import Simulator
from safekeep.graph import InProcessLimiter
from safekeep.graph.errors import parse_retry_after
from tests.graph.conftest import (
    ClientFactory,
    Recorder,
    mailbox_budget,
    recorder_of,
    start_sim,
)


def mailbox_users(sim: Simulator) -> list[str]:
    return [u.id for u in sorted(sim.tenant().users.values(), key=lambda u: u.upn)]


def early_requests(recorder: Recorder, key_of) -> list[str]:
    """Requests sent to a key after we had received a Retry-After for it and before its end."""
    pauses: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for received, request, status, retry_after in recorder.answers:
        seconds = parse_retry_after(retry_after)
        if status in (429, 503) and seconds:
            pauses[key_of(request)].append((received, received + seconds))
    early = []
    for sent, request in recorder.sent:
        for start, end in pauses[key_of(request)]:
            if start < sent < end - 0.002:  # 2 ms: the monotonic clock vs the sleep timer
                early.append(f"{request.url.path} sent {sent - start:.3f}s into a pause")
    return early


def mailbox_of(request) -> str:
    return request.url.path.split("/")[3]


async def test_parallel_load_on_one_mailbox_keeps_four_slots_and_obeys_retry_after(
    make_client: ClientFactory,
):
    # 20 requests per second, then ~0.9 s of Retry-After: throttled at any client speed.
    throttling = mailbox_budget(20, window_s=1.0, latency_ms=20.0)
    sim = start_sim(seed=3, users=2, messages=10, throttling=throttling)
    try:
        client = make_client(sim)
        user = mailbox_users(sim)[0]

        async def fetch() -> str:
            return (await client.get_json(f"/users/{user}/mailFolders/inbox", mailbox=user))["id"]

        results = await asyncio.gather(*(fetch() for _ in range(50)))
        assert len(results) == 50
        assert len(set(results)) == 1
        counters = sim.counters()
        assert counters["throttled"] > 0
        assert counters["retry_after_violations"] == 0
        assert client.stats.throttled == counters["throttled"]
        assert client.stats.requests == 50 + client.stats.throttled
        assert max(counters["max_concurrency"].values()) == 4  # all four slots, never a fifth
        assert early_requests(recorder_of(client), mailbox_of) == []
    finally:
        sim.stop()


async def test_parallel_load_over_many_mailboxes(make_client: ClientFactory):
    throttling = mailbox_budget(6, window_s=1.0, latency_ms=5.0)
    sim = start_sim(seed=4, users=5, messages=6, throttling=throttling)
    try:
        client = make_client(sim)
        users = mailbox_users(sim)

        async def fetch(i: int) -> None:
            user = users[i % len(users)]
            await client.get_json(f"/users/{user}/mailFolders/inbox", mailbox=user)

        await asyncio.gather(*(fetch(i) for i in range(12 * len(users))))
        counters = sim.counters()
        assert counters["throttled"] >= len(users)
        assert counters["retry_after_violations"] == 0
        assert len(counters["max_concurrency"]) == len(users)
        assert max(counters["max_concurrency"].values()) <= 4
        assert early_requests(recorder_of(client), mailbox_of) == []
    finally:
        sim.stop()


async def throttle_then_arrive_late(sim: Simulator, first, second) -> float:
    """Worker ``first`` runs into a 429; ``second``, idle until then, arrives after graphsim's
    grace period while the pause still runs. Returns how long ``second``'s request took."""
    user = mailbox_users(sim)[0]
    path = f"/users/{user}/mailFolders/inbox"

    async def busy() -> None:
        for _ in range(6):  # the budget is 5 per second: the sixth is refused for ~1 s
            await first.get_json(path, mailbox=user)

    task = asyncio.create_task(busy())
    await recorder_of(first).throttled.wait()
    await asyncio.sleep(0.35)
    started = time.monotonic()
    await second.get_json(path, mailbox=user)
    took = time.monotonic() - started
    await task
    return took


LATE_ARRIVAL = mailbox_budget(5, window_s=1.0)


async def test_a_worker_with_its_own_limiter_comes_back_early(make_client: ClientFactory):
    """The control for the shared-limiter tests: separate limiters cannot see each other."""
    sim = start_sim(seed=5, messages=4, throttling=LATE_ARRIVAL)
    try:
        first = make_client(sim, limiter=InProcessLimiter())
        second = make_client(sim, limiter=InProcessLimiter())
        await throttle_then_arrive_late(sim, first, second)
        assert sim.counters()["retry_after_violations"] == 1
        assert second.stats.throttled == 1
    finally:
        sim.stop()


async def test_workers_sharing_a_limiter_wait_out_each_others_retry_after(
    make_client: ClientFactory,
):
    sim = start_sim(seed=5, messages=4, throttling=LATE_ARRIVAL)
    try:
        shared = InProcessLimiter()
        first, second = make_client(sim, limiter=shared), make_client(sim, limiter=shared)
        took = await throttle_then_arrive_late(sim, first, second)
        assert sim.counters()["retry_after_violations"] == 0
        assert second.stats.throttled == 0
        assert took >= 0.4  # it waited out the rest of the other worker's pause
        assert second.stats.retry_after_waited_seconds >= 0.4
    finally:
        sim.stop()


async def test_a_sharepoint_pause_does_not_hold_up_mailboxes(
    fresh_sim: Simulator, make_client: ClientFactory
):
    client = make_client(fresh_sim)
    tenant = fresh_sim.tenant()
    user = next(u for u in tenant.users.values() if u.drive_id)
    # A pause long beside one request's time on a loaded machine, so the bound holds there too.
    await client.limiter.record_retry_after(f"{tenant.id}:sharepoint", 2.0)
    started = asyncio.get_running_loop().time()
    await client.get_json(f"/users/{user.id}/mailFolders/inbox")
    assert asyncio.get_running_loop().time() - started < 1.5
    await client.get_json(f"/users/{user.id}/drive/root")
    assert asyncio.get_running_loop().time() - started >= 1.95
    # A tenant-wide pause (a directory 429) holds up everything.
    await client.limiter.record_retry_after(tenant.id, 0.3)
    started = asyncio.get_running_loop().time()
    await client.get_json(f"/users/{user.id}/mailFolders/inbox")
    assert asyncio.get_running_loop().time() - started >= 0.25
