"""Retries: 503 with Retry-After, 5xx exhaustion, unreachable hosts, the throttling deadline."""

from __future__ import annotations

import socket
import time

import pytest

from graphsim import Simulator
from safekeep.graph import Throttled, TransientError
from tests.graph.conftest import ClientFactory, recorder_of


async def test_injected_503s_are_retried_after_their_fractional_retry_after(
    fresh_sim: Simulator, make_client: ClientFactory
):
    fresh_sim.set_throttling(error_rate=0.3, error_retry_after_s=0.05, fractional_retry_after=True)
    client = make_client(fresh_sim)
    user = next(iter(fresh_sim.tenant().users.values())).id
    for _ in range(30):
        assert (await client.get_json(f"/users/{user}/mailFolders/inbox"))["id"]
    injected = fresh_sim.counters()["injected_errors"]
    assert injected > 0
    assert client.stats.throttled == injected
    assert client.stats.retries == injected
    assert client.stats.requests == 30 + injected
    assert client.stats.retry_after_waited_seconds >= 0.05 * injected * 0.9


async def test_throttled_past_the_deadline_gives_up(
    fresh_sim: Simulator, make_client: ClientFactory
):
    # Waits long beside a request's own time on a loaded machine, so the bounds hold there too.
    fresh_sim.set_throttling(error_rate=1.0, error_retry_after_s=0.5, fractional_retry_after=True)
    client = make_client(fresh_sim, deadline_seconds=1.25)
    started = time.monotonic()
    with pytest.raises(Throttled) as caught:
        await client.get_json("/users")
    elapsed = time.monotonic() - started
    assert caught.value.reason == "throttled"
    assert caught.value.retry_after == pytest.approx(0.5)
    # It stops as soon as the next wait would cross the deadline (after two waits), without
    # sleeping the third one out (that would end at 1.5 s at the earliest).
    assert 1.0 <= elapsed < 1.5
    assert client.stats.requests == 3


async def test_unreachable_graph_is_a_transient_error_after_max_attempts(
    sim: Simulator, make_client: ClientFactory
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nobody listens once the probe is closed
    dead = make_client(
        sim, graph_url=f"https://127.0.0.1:{closed_port}", max_attempts=3, backoff_base=0.01
    )
    with pytest.raises(TransientError) as failure:
        await dead.request_json("POST", "/users/x/messages", json={"subject": "s"})
    assert failure.value.reason == "service_unavailable"
    assert failure.value.code == "network_error"
    assert dead.stats.requests == 3  # never sent, so even a POST is safe to resend
    assert dead.stats.retries == 2


async def test_token_is_never_sent_outside_graph(sim: Simulator, make_client: ClientFactory):
    client = make_client(sim)
    with pytest.raises(ValueError, match="refusing"):
        await client.get_json("https://example.invalid/v1.0/users")
    assert recorder_of(client).requests == []
