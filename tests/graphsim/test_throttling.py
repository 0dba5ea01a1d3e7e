"""Throttling: per-mailbox concurrency and budgets, SharePoint units, Retry-After, faults."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from graphsim import Simulator
from tests.graphsim.conftest import graph_client


@pytest.fixture
def tsim():
    with Simulator(seed=11, users=2, messages=6, files=4, consented=True) as running:
        yield running


def users_of(sim: Simulator) -> list[Any]:
    return sorted(sim.tenant().users.values(), key=lambda u: u.upn)


def test_parallel_load_on_one_mailbox_gets_429_with_retry_after(tsim: Simulator) -> None:
    tsim.set_latency(80)
    user = users_of(tsim)[0]
    with graph_client(tsim) as client, ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(
            pool.map(lambda _: client.get(f"/users/{user.id}/mailFolders/inbox"), range(12))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 4
    throttled = [r for r in responses if r.status_code == 429]
    assert throttled
    for resp in throttled:
        assert int(resp.headers["Retry-After"]) >= 1
        assert resp.json()["error"]["code"] == "ApplicationThrottled"
    counters = tsim.counters()
    assert counters["throttled"] == len(throttled)
    assert max(counters["max_concurrency"].values()) <= 4
    assert counters["by_mailbox"][user.upn] == 12


def test_other_mailboxes_are_not_throttled_by_a_busy_one(tsim: Simulator) -> None:
    tsim.set_throttling(mailbox_requests=3, mailbox_window_s=60.0)
    first, second = users_of(tsim)
    with graph_client(tsim) as client:
        for _ in range(3):
            assert client.get(f"/users/{first.id}/mailFolders/inbox").status_code == 200
        over = client.get(f"/users/{first.id}/mailFolders/inbox")
        assert over.status_code == 429
        assert 55 <= int(over.headers["Retry-After"]) <= 60
        assert client.get(f"/users/{second.id}/mailFolders/inbox").status_code == 200
        assert client.get("/users").status_code == 200  # directory reads are not mailbox-bound


def test_coming_back_before_retry_after_is_a_violation(tsim: Simulator) -> None:
    tsim.set_throttling(mailbox_requests=1, mailbox_window_s=2.0)
    user = users_of(tsim)[0]
    with graph_client(tsim) as client:
        assert client.get(f"/users/{user.id}/messages").status_code == 200
        first = client.get(f"/users/{user.id}/messages")
        assert first.status_code == 429
        time.sleep(0.3)  # past the grace for requests already in flight when the 429 left
        early = client.get(f"/users/{user.id}/messages")
        assert early.status_code == 429
        assert tsim.counters()["retry_after_violations"] == 1
        time.sleep(float(first.headers["Retry-After"]) + 0.1)
        assert client.get(f"/users/{user.id}/messages").status_code == 200
        assert tsim.counters()["retry_after_violations"] == 1


def test_sharepoint_resource_units_per_tenant(tsim: Simulator) -> None:
    tsim.set_throttling(sharepoint_units_per_minute=5, sharepoint_status=503)
    user = users_of(tsim)[0]
    with graph_client(tsim) as client:
        drive = client.get(f"/users/{user.id}/drive")  # 1 unit
        assert drive.status_code == 200
        children = client.get(f"/drives/{drive.json()['id']}/root/children")  # 2 units
        assert children.status_code == 200
        client.get(f"/drives/{drive.json()['id']}/root")  # 1 unit
        over = client.get(f"/drives/{drive.json()['id']}/root/children")  # 2 more: over 5
        assert over.status_code == 503
        assert over.headers["Retry-After"]
        assert over.json()["error"]["code"] == "activityLimitReached"


def test_sharepoint_rate_limit_headers_near_the_budget(tsim: Simulator) -> None:
    tsim.set_throttling(sharepoint_units_per_minute=10)
    user = users_of(tsim)[0]
    with graph_client(tsim) as client:
        drive = client.get(f"/users/{user.id}/drive")  # 1 of 10 units: no warning yet
        assert drive.status_code == 200
        assert "RateLimit-Limit" not in drive.headers
        root = f"/drives/{drive.json()['id']}/root"
        client.get(f"{root}/children")  # 3
        client.get(f"{root}/children")  # 5
        client.get(root)  # 6
        warned = client.get(f"{root}/children")  # 8: past 80 %
        assert warned.status_code == 200
        assert warned.headers["RateLimit-Limit"] == "10"
        assert warned.headers["RateLimit-Remaining"] == "2"
        assert 1 <= int(warned.headers["RateLimit-Reset"]) <= 60
        mail = client.get(f"/users/{user.id}/mailFolders/inbox")  # Exchange: no such headers
        assert "RateLimit-Limit" not in mail.headers


def test_off_mode_and_error_injection(tsim: Simulator) -> None:
    tsim.set_throttling(mode="off", mailbox_requests=1)
    user = users_of(tsim)[0]
    with graph_client(tsim) as client:
        for _ in range(3):
            assert client.get(f"/users/{user.id}/messages").status_code == 200
        tsim.set_error_rate(1.0)
        failed = client.get(f"/users/{user.id}/messages")
        assert failed.status_code == 503
        assert failed.headers["Retry-After"] == "1"
        tsim.set_error_rate(0.0)
        assert tsim.counters()["injected_errors"] == 1


def test_control_api_sets_throttling_and_reads_counters(tsim: Simulator) -> None:
    with httpx.Client(base_url=tsim.base_url, verify=tsim.ssl_context()) as plain:
        put = plain.put("/_sim/throttling", json={"mailbox_concurrency": 2, "latency_ms": 5})
        assert put.status_code == 200
        assert put.json()["mailbox_concurrency"] == 2
        counters = plain.get("/_sim/counters").json()
        assert set(counters) >= {
            "total",
            "by_endpoint",
            "by_mailbox",
            "throttled",
            "retry_after_violations",
        }
        assert plain.post("/_sim/counters/reset").status_code == 200
        assert plain.get("/_sim/counters").json()["total"] == 0
        assert plain.put("/_sim/throttling", json={"nonsense": 1}).status_code == 400
