"""Graph throttling reaches Prometheus: every throttled answer and every second waited."""

from __future__ import annotations

from prometheus_client import REGISTRY

from graphsim import Simulator
from tests.graph.conftest import ClientFactory


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_throttled_answers_and_waits_are_counted(
    fresh_sim: Simulator, make_client: ClientFactory
):
    fresh_sim.set_throttling(error_rate=0.3, error_retry_after_s=0.05, fractional_retry_after=True)
    client = make_client(fresh_sim)
    throttled_before = sample("safekeep_graph_throttled_responses_total", status="503")
    waited_before = sample("safekeep_graph_retry_after_wait_seconds_total")
    user = next(iter(fresh_sim.tenant().users.values())).id
    for _ in range(30):
        assert (await client.get_json(f"/users/{user}/mailFolders/inbox"))["id"]
    injected = fresh_sim.counters()["injected_errors"]
    assert injected > 0
    throttled = sample("safekeep_graph_throttled_responses_total", status="503")
    assert throttled - throttled_before == injected == client.stats.throttled
    waited = sample("safekeep_graph_retry_after_wait_seconds_total") - waited_before
    assert waited >= 0.05 * injected * 0.9
    assert abs(waited - client.stats.retry_after_waited_seconds) < 1e-6
