"""Prometheus metrics: the fleet's figures read from the database, and the chart's dashboard
and alert rules querying nothing the app does not export."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from safekeep.api import metrics
from safekeep.runtime import Runtime
from safekeep.tenants.models import Job, JobKind, JobStatus, Tenant, utcnow
from tests.factories import add_job, create_msp, create_tenant

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "helm" / "safekeep" / "files"
METRIC_NAME = re.compile(r"\bsafekeep_[a-z0-9_]+\b")


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def queried_metrics() -> dict[str, set[str]]:
    """Every safekeep_* name the dashboard's panels and the alert rules query, by source."""
    dashboard = json.loads((FILES / "dashboard.json").read_text())
    panel_exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((FILES / "alerts.yaml").read_text())
    rule_exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert panel_exprs and rule_exprs
    return {
        "dashboard": {m for e in panel_exprs for m in METRIC_NAME.findall(e)},
        "alerts": {m for e in rule_exprs for m in METRIC_NAME.findall(e)},
    }


@pytest.fixture(autouse=True)
def fresh_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scrape reads the database (the process-wide cache would serve another test's)."""
    monkeypatch.setattr(metrics, "FLEET_MAX_AGE_SECONDS", 0.0)


async def test_dashboard_and_alerts_query_only_exported_metrics(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/healthz")  # so that the request counters have a sample
    exported = {name for name, _labels in await scrape(client)}
    queried = queried_metrics()
    # The list: backups overdue, job failures, queue depth and age, throttling (429s
    # and waits), blob store errors, search lag.
    for needed in (
        "safekeep_tenants_without_recent_backup",
        "safekeep_jobs_finished_total",
        "safekeep_jobs",
        "safekeep_jobs_oldest_age_seconds",
        "safekeep_graph_throttled_responses_total",
        "safekeep_graph_retry_after_wait_seconds_total",
        "safekeep_blobstore_errors_total",
        "safekeep_search_lag_seconds",
    ):
        assert needed in queried["dashboard"] and needed in queried["alerts"], needed
    for source, names in queried.items():
        assert names <= exported, f"{source} queries {sorted(names - exported)}, not exported"


async def test_fleet_figures_follow_the_database(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    msp = await create_msp(runtime)
    overdue = await create_tenant(runtime, msp, name="Overdue")
    fresh = await create_tenant(runtime, msp, name="Backed up")
    await create_tenant(runtime, msp, name="Too new to be due")
    await create_tenant(runtime, msp, name="Not connected", consented=False)
    now = utcnow()
    async with runtime.db.session() as session:
        for tenant_id in (overdue.id, fresh.id):
            row = await session.get(Tenant, tenant_id)
            assert row is not None
            row.created_at = now - timedelta(days=3)
        # A failed backup does not count; an old success neither.
        backups = [
            (overdue, JobStatus.failed, timedelta(hours=1)),
            (overdue, JobStatus.succeeded, timedelta(hours=30)),
            (fresh, JobStatus.partial, timedelta(hours=2)),
        ]
        session.add_all(
            [
                Job(
                    tenant_id=t.id,
                    msp_id=t.msp_id,
                    kind=JobKind.backup,
                    status=status,
                    finished_at=now - ago,
                )
                for t, status, ago in backups
            ]
        )
        session.add_all(
            [
                Job(
                    tenant_id=fresh.id,
                    msp_id=fresh.msp_id,
                    kind=JobKind.export,
                    status=JobStatus.queued,
                    created_at=now - timedelta(minutes=10),
                ),
                Job(
                    tenant_id=fresh.id,
                    msp_id=fresh.msp_id,
                    kind=JobKind.export,
                    status=JobStatus.queued,
                ),
                Job(
                    tenant_id=fresh.id,
                    msp_id=fresh.msp_id,
                    kind=JobKind.restore,
                    status=JobStatus.running,
                ),
            ]
        )
    samples = await scrape(client)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("safekeep_fleet_metrics_up") == 1
    assert value("safekeep_tenants_without_recent_backup") == 1
    assert value("safekeep_jobs_finished_total", kind="backup", status="failed") == 1
    assert value("safekeep_jobs_finished_total", kind="backup", status="succeeded") == 1
    assert value("safekeep_jobs_finished_total", kind="backup", status="partial") == 1
    assert value("safekeep_jobs_finished_total", kind="export", status="failed") == 0
    assert value("safekeep_jobs", kind="export", status="queued") == 2
    assert value("safekeep_jobs", kind="restore", status="running") == 1
    assert value("safekeep_jobs", kind="backup", status="queued") == 0
    assert 590 <= value("safekeep_jobs_oldest_age_seconds", kind="export", status="queued") < 900
    assert value("safekeep_jobs_oldest_age_seconds", kind="backup", status="queued") == 0
    assert value("safekeep_search_unindexed_versions") == 0
    assert value("safekeep_search_lag_seconds") == 0


async def test_a_process_reports_its_requests_in_flight_and_database_connections(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """An operator sees a process's load: the requests it is answering (a long poll held
    open counts until it answers) and its database pool (in use, idle, its ceiling)."""
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    async with runtime.db.session() as session:
        job = await add_job(session, tenant.id, status=JobStatus.running)
    first = await client.get(f"/v1/jobs/{job.id}", headers=msp.headers)
    poll = asyncio.create_task(
        client.get(
            f"/v1/jobs/{job.id}?wait=2",
            headers={**msp.headers, "If-None-Match": first.headers["ETag"]},
        )
    )
    await asyncio.sleep(0.5)  # the poll is waiting for the job to change
    assert not poll.done()
    during = await scrape(client)
    assert (await poll).status_code == 304
    after = await scrape(client)
    key = ("safekeep_http_requests_in_flight", ())
    assert during[key] - after[key] == 1  # the poll; each scrape counts itself
    assert after[key] >= 1
    connections = {
        state: after[("safekeep_db_connections", (("state", state),))]
        for state in ("in_use", "idle")
    }
    # The runtime's pool opened a connection for the reads above, and the scrape's read of
    # the fleet's figures handed its own back.
    assert connections["idle"] >= 1
    assert after[("safekeep_db_connections_limit", ())] >= runtime.db.connection_limit
    assert ("safekeep_db_pool_full_total", ()) in after


def test_a_worker_reports_its_connections_and_no_requests_in_flight() -> None:
    """A worker's /metrics (``safekeep worker --metrics-port``: the same module, no API app)
    has its database pool but no HTTP requests in flight, which only an API pod answers."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import safekeep.api.metrics; from prometheus_client import generate_latest; "
            "print(generate_latest().decode())",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    names = {s.name for f in text_string_to_metric_families(out) for s in f.samples}
    assert {"safekeep_db_connections", "safekeep_db_pool_full_total"} <= names
    assert "safekeep_http_requests_in_flight" not in names
