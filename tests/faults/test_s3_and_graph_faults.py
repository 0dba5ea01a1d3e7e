"""S3 behind a fault-injecting proxy (500, SlowDown, connections dropped before and after
the write) and Microsoft Graph answering 5xx and 429s: the backup still succeeds, with every
item stored once and its bytes identical to graphsim's."""

from __future__ import annotations

import os
import time

from tests.e2e.conftest import Deployment
from tests.faults.conftest import figure
from tests.faults.s3proxy import FAULTS, FaultyS3Proxy
from tests.faults.truth import assert_catalog_matches_graphsim


def s3_fault_rate() -> float:
    return float(os.environ.get("SAFEKEEP_FAULT_S3_RATE", "0.05"))


async def test_s3_faults_lose_and_duplicate_nothing(shared_deployment: Deployment) -> None:
    deployment = shared_deployment
    assert deployment.settings.s3_endpoint_url
    rate = s3_fault_rate()
    async with FaultyS3Proxy(
        deployment.settings.s3_endpoint_url, rate=rate, seed=time.time_ns()
    ) as proxy:
        # Only the worker's writes go through the proxy; the test reads back directly.
        deployment.worker_env = {"SAFEKEEP_S3_ENDPOINT_URL": proxy.url}
        deployment.start_worker()
        tenant = await deployment.onboard(services=["onedrive"])
        proxy.script(FAULTS)  # each kind at least once, on the next writes
        started = time.monotonic()
        job = await deployment.backup(tenant["id"])
        elapsed = time.monotonic() - started
    assert job["status"] == "succeeded", job
    assert set(proxy.injected) == set(FAULTS), proxy.injected
    compared = await assert_catalog_matches_graphsim(deployment, tenant["id"])
    figure(
        "backup_under_s3_faults",
        elapsed,
        "s",
        rate=f"{rate:.0%}",
        requests=proxy.requests,
        injected=dict(proxy.injected),
        files=compared.files,
    )


async def test_graph_5xx_and_429s_lose_and_duplicate_nothing(
    shared_deployment: Deployment,
) -> None:
    deployment = shared_deployment
    deployment.start_worker()
    tenant = await deployment.onboard(services=["onedrive"])
    sim = deployment.sim
    sim.set_throttling(
        mode="custom",
        error_rate=0.12,  # 503 with Retry-After
        error_retry_after_s=0.2,
        fractional_retry_after=True,
        sharepoint_user_requests=12,  # 429s: a burst of a dozen per user per window
        sharepoint_user_window_s=1.5,
    )
    sim.reset_counters()
    started = time.monotonic()
    job = await deployment.backup(tenant["id"])
    elapsed = time.monotonic() - started
    counters = sim.counters()
    sim.set_throttling(mode="microsoft", error_rate=0.0)
    assert job["status"] == "succeeded", job
    assert counters["injected_errors"] > 0 and counters["throttled"] > 0, counters
    compared = await assert_catalog_matches_graphsim(deployment, tenant["id"])
    figure(
        "backup_under_graph_faults",
        elapsed,
        "s",
        requests=counters["total"],
        injected_5xx=counters["injected_errors"],
        throttled_429=counters["throttled"],
        files=compared.files,
    )
