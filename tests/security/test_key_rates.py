"""One API key past its rate, or one MSP's keys together past theirs, are refused with 429
before anything is done for the request, and nobody else is slowed (safekeep.api.rates)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx

from safekeep.api.rates import MAX_BUCKETS, RequestRates, TokenBuckets
from tests.api.conftest import World, fingerprint

PROBLEM = "application/problem+json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    clock = Clock()
    rates = TokenBuckets(rate=2.0, burst=3, clock=clock)
    key, other = uuid.uuid4(), uuid.uuid4()
    assert [rates.admit(key) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rates.admit(key) == 0.5  # one token comes back every half second
    assert rates.admit(other) == 0.0  # another key has its own bucket
    clock.now += 0.25
    assert rates.admit(key) == 0.25  # half a token: a refused request takes nothing
    clock.now += 0.25
    assert rates.admit(key) == 0.0
    assert rates.admit(key) == 0.5
    clock.now += 60  # idle: the bucket fills up to its burst, no further
    assert [rates.admit(key) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_rate_zero_admits_everything() -> None:
    rates = TokenBuckets(rate=0, burst=1)
    key = uuid.uuid4()
    assert all(rates.admit(key) == 0.0 for _ in range(10_000))


def test_buckets_of_idle_keys_are_dropped_when_there_are_too_many() -> None:
    clock = Clock()
    rates = TokenBuckets(rate=1.0, burst=2, clock=clock)
    for _ in range(MAX_BUCKETS - 1):
        rates.admit(uuid.uuid4())
    clock.now += 1.5
    busy = uuid.uuid4()
    assert rates.admit(busy) == rates.admit(busy) == 0.0  # its burst spent
    clock.now += 0.5  # the others have been idle 2 s: full again, as a new bucket would be
    rates.admit(uuid.uuid4())  # one past the bound: the full ones go
    assert len(rates._buckets) == 2  # busy and the new one
    assert rates.admit(busy) == 0.5  # busy kept its state: half a token


def test_an_msps_keys_share_its_bucket() -> None:
    clock = Clock()
    rates = RequestRates(TokenBuckets(1.0, 2, clock=clock), TokenBuckets(1.0, 3, clock=clock))
    msp, other_msp = uuid.uuid4(), uuid.uuid4()
    first, second = uuid.uuid4(), uuid.uuid4()
    assert rates.admit(first, msp) is None
    assert rates.admit(first, msp) is None
    refused = rates.admit(first, msp)
    assert refused is not None and refused.whose == "API key" and refused.seconds == 1
    assert rates.admit(second, msp) is None  # the MSP's third
    refused = rates.admit(second, msp)  # the second key has a token; the MSP has none
    assert refused is not None and refused.whose == "MSP"
    assert refused.detail.startswith("This MSP sent more than 1 requests a second")
    assert rates.admit(uuid.uuid4(), other_msp) is None
    clock.now += 1.0
    assert rates.admit(second, msp) is None


def test_a_request_the_msp_refuses_costs_its_key_nothing() -> None:
    clock = Clock()
    rates = RequestRates(TokenBuckets(1.0, 2, clock=clock), TokenBuckets(1.0, 2, clock=clock))
    msp, busy, quiet = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert rates.admit(busy, msp) is None
    assert rates.admit(busy, msp) is None  # the MSP's burst spent by one of its keys
    for _ in range(5):  # the quiet key is refused for the MSP, again and again
        refused = rates.admit(quiet, msp)
        assert refused is not None and refused.whose == "MSP"
    clock.now += 1.0  # one MSP token back
    assert rates.admit(quiet, msp) is None  # the quiet key still had both of its own
    clock.now += 1.0
    assert rates.admit(quiet, msp) is None
    assert rates.keys.admit(quiet) == 0.0  # and one left: nothing went to the refusals

    full = TokenBuckets(1.0, 2, clock=clock)
    full.give_back(uuid.uuid4())  # no bucket yet: nothing to give back
    key = uuid.uuid4()
    full.admit(key)
    full.give_back(key)
    full.give_back(key)  # never past the burst
    assert [full.admit(key) for _ in range(3)] == [0.0, 0.0, 1.0]


async def test_a_key_past_its_rate_gets_429_and_changes_nothing(
    world: World, start_server: Callable[..., str]
) -> None:
    base = start_server(api_key_rate_per_second=0.5, api_key_burst=3)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        a = world.a.msp.headers
        for _ in range(3):
            assert (await client.get("/v1/tenants", headers=a)).status_code == 200
        refused = await client.get("/v1/tenants", headers=a)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith(PROBLEM)
        assert refused.json()["type"].endswith("/rate-limited")
        assert refused.headers["Retry-After"] in ("1", "2")  # a token every 2 s
        assert "0.5 requests a second" in refused.json()["detail"]

        # A write past the rate is refused before it does anything.
        before = await fingerprint(world.runtime)
        created = await client.post("/v1/tenants", headers=a, json={"name": "Past the rate"})
        assert created.status_code == 429
        assert await fingerprint(world.runtime) == before

        # Nobody else is slowed: another MSP's key, and another key of the same MSP.
        assert (await client.get("/v1/tenants", headers=world.b.msp.headers)).status_code == 200
        other_key = await world.key(["read"])
        assert (await client.get("/v1/tenants", headers=other_key)).status_code == 200
        limited = await world.key(["read"], [world.a.tenant.id])  # one limited to a tenant
        served = await client.get("/v1/tenants", headers=limited)
        assert served.status_code == 200
        assert [t["id"] for t in served.json()["items"]] == [str(world.a.tenant.id)]

        # A key nobody issued is refused as unknown (401), however often: it gets no bucket.
        bogus = {"Authorization": "Bearer sk_" + "x" * 43}
        for _ in range(5):
            assert (await client.get("/v1/tenants", headers=bogus)).status_code == 401

        await asyncio.sleep(int(refused.headers["Retry-After"]) + 0.2)
        assert (await client.get("/v1/tenants", headers=a)).status_code == 200


async def test_an_msps_keys_together_get_429_past_its_rate(
    world: World, start_server: Callable[..., str]
) -> None:
    base = start_server(api_msp_rate_per_second=0.1, api_msp_burst=3)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        first, second = world.a.msp.headers, await world.key(["read"])
        for headers in (first, first, second):
            assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
        # Each key is far inside its own rate; together they have spent the MSP's burst.
        for headers in (second, await world.key(["read"])):
            refused = await client.get("/v1/tenants", headers=headers)
            assert refused.status_code == 429
            assert refused.json()["type"].endswith("/rate-limited")
            assert refused.json()["detail"].startswith("This MSP sent more than 0.1 requests")
            assert int(refused.headers["Retry-After"]) >= 1
        assert (await client.get("/v1/tenants", headers=world.b.msp.headers)).status_code == 200
