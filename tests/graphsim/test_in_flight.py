"""Per-mailbox in-flight requests over time (issue 17): the exact integral with a fake
clock, then through the HTTP front with real concurrent clients."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from graphsim import Simulator
from graphsim.inflight import InFlight, level_shares, time_weighted_mean
from tests.clock import Clock
from tests.graphsim.conftest import graph_client


def test_the_mean_is_the_integral_over_the_span_from_first_start_to_last_end() -> None:
    clock = Clock(100.0)
    tracker = InFlight(clock)
    clock.now = 100.5
    a = tracker.begin("t|big@x")  # in flight: 1 from 100.5
    clock.now = 101.5
    b = tracker.begin("t|big@x")  # 2 from 101.5
    clock.now = 103.5
    tracker.end(a)  # 1 from 103.5
    clock.now = 104.5
    tracker.end(b)  # 0 from 104.5: 1*1 + 2*2 + 1*1 = 6 request-seconds over 4 s
    clock.now = 110.0  # idle time after the last request is not in the span
    small = tracker.begin("t|small@x")
    clock.now = 111.0
    tracker.end(small)
    report = tracker.as_dict()
    big = report["t|big@x"]
    assert big["requests"] == 2
    assert big["peak"] == 2
    assert big["now"] == 0
    assert big["busy_s"] == pytest.approx(6.0)
    assert big["span_s"] == pytest.approx(4.0)
    assert big["mean"] == pytest.approx(1.5)
    # Request-seconds per second of the window, which started at 100.0.
    assert big["timeline"]["start_s"] == 0.0
    assert big["timeline"]["values"] == pytest.approx([0.5, 1.5, 2.0, 1.5, 0.5])
    assert report["t|small@x"]["mean"] == pytest.approx(1.0)
    # Across mailboxes, weighted by how long each had work: (6 + 1) / (4 + 1).
    assert time_weighted_mean(report) == pytest.approx(7 / 5)


def test_the_span_is_split_by_how_many_requests_were_in_flight() -> None:
    """Where a mean below 4 comes from: seconds at each level, idle time between requests
    ("0") included and the time before the first and after the last left out."""
    clock = Clock(100.0)
    tracker = InFlight(clock)
    clock.now = 101.0
    a = tracker.begin("t|u@x")
    b = tracker.begin("t|u@x")  # 2 from 101
    clock.now = 102.0
    tracker.end(a)  # 1 from 102
    clock.now = 103.0
    tracker.end(b)  # idle from 103
    clock.now = 106.0
    c = tracker.begin("t|u@x")  # 1 from 106
    clock.now = 107.0
    tracker.end(c)
    other = tracker.begin("t|v@x")
    clock.now = 109.0  # after u's last request: not u's
    tracker.end(other)
    report = tracker.as_dict()
    assert report["t|u@x"]["span_s"] == pytest.approx(6.0)
    assert report["t|u@x"]["levels"] == pytest.approx({"0": 3.0, "1": 2.0, "2": 1.0})
    assert report["t|v@x"]["levels"] == pytest.approx({"0": 0.0, "1": 2.0})
    # Across mailboxes, as shares of their spans (6 + 2 seconds).
    assert level_shares(report) == pytest.approx({0: 3 / 8, 1: 4 / 8, 2: 1 / 8})
    assert level_shares({}) == {}


def test_a_reset_starts_a_new_window_and_keeps_what_is_in_flight() -> None:
    clock = Clock(100.0)
    tracker = InFlight(clock)
    first = tracker.begin("t|u")
    clock.now += 10
    tracker.reset()
    clock.now += 2
    report = tracker.as_dict()["t|u"]
    assert report["now"] == 1
    assert report["busy_s"] == pytest.approx(2.0)  # only the time since the reset
    assert report["span_s"] == pytest.approx(2.0)  # still in flight: up to now
    tracker.end(first)
    tracker.end(first)  # an unmatched end changes nothing
    assert tracker.as_dict()["t|u"]["now"] == 0
    tracker.reset()
    assert tracker.as_dict() == {}
    assert time_weighted_mean({}) is None


@pytest.fixture
def slow_sim() -> Any:
    with Simulator(seed=5, users=2, messages=8, files=4, consented=True) as running:
        running.set_latency(250)
        yield running


def test_the_simulator_reports_outlook_requests_in_flight_per_mailbox(slow_sim: Simulator) -> None:
    busy, calm = sorted(slow_sim.tenant().users.values(), key=lambda u: u.upn)
    tenant = slow_sim.tenant().id
    with graph_client(slow_sim) as client:
        client.get(f"/users/{busy.id}")  # open the connection; directory calls do not count
        slow_sim.reset_counters()
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(
                pool.map(lambda _: client.get(f"/users/{busy.id}/mailFolders/inbox"), range(4))
            )
        for _ in range(3):
            assert client.get(f"/users/{calm.id}/messages", params={"$top": "1"}).is_success
        assert client.get(f"/users/{calm.id}/drive/root/children").is_success  # OneDrive
    assert [a.status_code for a in answers] == [200] * 4
    with httpx.Client(base_url=slow_sim.base_url, verify=slow_sim.ssl_context()) as plain:
        report = plain.get("/_sim/counters").json()["in_flight"]
    assert set(report) == {f"{tenant}|{busy.upn}", f"{tenant}|{calm.upn}"}
    parallel = report[f"{tenant}|{busy.upn}"]
    one_by_one = report[f"{tenant}|{calm.upn}"]
    assert parallel["requests"] == 4
    assert parallel["peak"] >= 2
    # Four requests of >= 250 ms sent together: well above one in flight on average.
    # (Less a millisecond: a sleep's end and the counter's clock reading are not one instant.)
    assert parallel["busy_s"] >= 4 * 0.25 - 0.001
    assert parallel["mean"] > 1.5
    assert one_by_one["requests"] == 3  # the OneDrive request is not an Outlook one
    assert one_by_one["peak"] == 1
    assert 0.5 < one_by_one["mean"] <= 1.0
    assert sum(one_by_one["timeline"]["values"]) == pytest.approx(one_by_one["busy_s"], abs=0.01)
    with httpx.Client(base_url=slow_sim.base_url, verify=slow_sim.ssl_context()) as plain:
        assert plain.post("/_sim/counters/reset").status_code == 200
        assert plain.get("/_sim/counters").json()["in_flight"] == {}
