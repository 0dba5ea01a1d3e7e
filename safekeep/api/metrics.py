"""Prometheus metrics: HTTP requests (labelled by route template, never by raw path, so that ids
do not explode the label space), what the workers meet (Graph throttling, blob store errors),
each process's load (its database connections, its requests in flight), and fleet-wide figures
read from the catalog database at scrape time.

The chart's Grafana dashboard and alert rules query only these (tests/api/test_metrics.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import REGISTRY, Counter, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from safekeep.db import POOL_FULL, Database, pool_use
from safekeep.tenants.models import (
    FINISHED_JOB_STATUSES,
    ConsentState,
    ItemVersion,
    Job,
    JobKind,
    JobStatus,
    Tenant,
    TenantStatus,
    utcnow,
)

log = structlog.get_logger(__name__)

REQUESTS = Counter("safekeep_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "safekeep_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)


class MetricsMiddleware:
    # This process's HTTP requests being answered now, reported by ``ProcessMetrics`` once the
    # process serves the API (a worker serving only /metrics has none to report).
    in_flight = 0
    serving = False

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        MetricsMiddleware.serving = True

    @staticmethod
    def _route(scope: Scope) -> str:
        """The template of the route the router matched (it records it in the scope)."""
        route = scope.get("route")
        return str(getattr(route, "path", "unmatched"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        MetricsMiddleware.in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            MetricsMiddleware.in_flight -= 1
            route = self._route(scope)
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)


class ProcessMetrics(Collector):
    """This process's load, read when it is scraped: its database connections (in use, idle,
    and the pool's ceiling; with ``safekeep_db_pool_full_total``, whether requests queue for
    one) and, in an API process, the HTTP requests it is answering."""

    def collect(self) -> Iterator[Metric]:
        use = pool_use()
        connections = GaugeMetricFamily(
            "safekeep_db_connections", "This process's database connections", labels=["state"]
        )
        connections.add_metric(["in_use"], use.in_use)
        connections.add_metric(["idle"], use.idle)
        yield connections
        yield GaugeMetricFamily(
            "safekeep_db_connections_limit",
            "The most database connections this process's pool holds",
            value=use.limit,
        )
        if MetricsMiddleware.serving:
            yield GaugeMetricFamily(
                "safekeep_http_requests_in_flight",
                "HTTP requests this process is answering",
                value=MetricsMiddleware.in_flight,
            )


REGISTRY.register(ProcessMetrics())


# ---- what the workers produce (each worker process serves them: `safekeep worker --metrics-port`)

# Defined beside the code that counts them (graph/ and storage/ import nothing of ours);
# imported here so that every process serving /metrics exports them.
from safekeep.graph.metrics import GRAPH_RETRY_AFTER_WAIT, GRAPH_THROTTLED  # noqa: E402
from safekeep.storage.metrics import BLOBSTORE_ERRORS  # noqa: E402

__all__ = ["BLOBSTORE_ERRORS", "GRAPH_RETRY_AFTER_WAIT", "GRAPH_THROTTLED", "POOL_FULL"]


# ---- the fleet, read from the catalog database when the API is scraped ---------------------

FLEET_MAX_AGE_SECONDS = 15.0
BACKUP_DUE_HOURS = 24
_COMPLETED = (JobStatus.succeeded, JobStatus.partial)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class FleetMetrics(Collector):
    """Cluster-wide gauges and counters that no single process sees: tenants overdue for a
    backup, jobs by outcome, the job queue's depth and age, the search index's backlog.

    Every API replica reports the same values (alert rules take ``max``). They are read at
    most every ``FLEET_MAX_AGE_SECONDS`` per process, so frequent scrapes cost the database
    a few aggregate queries, not one per scrape.
    """

    def __init__(self) -> None:
        self._families: list[Metric] = []
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    def collect(self) -> Iterator[Metric]:
        yield from self._families

    async def refresh(self, db: Database) -> None:
        async with self._lock:
            if self._families and time.monotonic() - self._read_at < FLEET_MAX_AGE_SECONDS:
                return
            try:
                self._families = await self._read(db)
            except Exception:  # a scrape must still answer with the process's own metrics
                log.warning("fleet_metrics_unavailable", exc_info=True)
                up = GaugeMetricFamily("safekeep_fleet_metrics_up", "Fleet metrics were read")
                up.add_metric([], 0)
                self._families = [f for f in self._families if f.name != up.name] + [up]
                return
            self._read_at = time.monotonic()

    async def _read(self, db: Database) -> list[Metric]:
        now = utcnow()
        due = now - timedelta(hours=BACKUP_DUE_HOURS)
        completed_recently = (
            select(Job.id)
            .where(
                Job.tenant_id == Tenant.id,
                Job.kind == JobKind.backup,
                Job.status.in_(_COMPLETED),
                Job.finished_at >= due,
            )
            .exists()
        )
        async with db.session() as session:
            overdue = await session.scalar(
                select(func.count(Tenant.id)).where(
                    Tenant.status == TenantStatus.active,
                    Tenant.consent_state == ConsentState.granted,
                    Tenant.created_at < due,
                    ~completed_recently,
                )
            )
            finished = (
                await session.execute(
                    select(Job.kind, Job.status, func.count(Job.id))
                    .where(Job.status.in_(FINISHED_JOB_STATUSES))
                    .group_by(Job.kind, Job.status)
                )
            ).all()
            waiting = (
                await session.execute(
                    select(Job.status, Job.kind, func.count(Job.id), func.min(Job.created_at))
                    .where(Job.status.in_((JobStatus.queued, JobStatus.running)))
                    .group_by(Job.status, Job.kind)
                )
            ).all()
            unindexed, oldest_unindexed = (
                await session.execute(
                    select(func.count(ItemVersion.id), func.min(ItemVersion.valid_from)).where(
                        ItemVersion.indexed.is_(False)
                    )
                )
            ).one()

        up = GaugeMetricFamily("safekeep_fleet_metrics_up", "Fleet metrics were read")
        up.add_metric([], 1)
        tenants = GaugeMetricFamily(
            "safekeep_tenants_without_recent_backup",
            f"Active, consented tenants older than {BACKUP_DUE_HOURS} h with no completed "
            f"(succeeded or partial) backup in the last {BACKUP_DUE_HOURS} h",
        )
        tenants.add_metric([], int(overdue or 0))
        jobs = CounterMetricFamily(
            "safekeep_jobs_finished",
            "Jobs that finished, by kind and outcome",
            labels=["kind", "status"],
        )
        counts = {(str(k), str(s)): 0 for k in JobKind for s in FINISHED_JOB_STATUSES}
        counts.update({(str(k), str(s)): int(n) for k, s, n in finished})
        for (kind, status), count in sorted(counts.items()):
            jobs.add_metric([kind, status], count)
        depth = GaugeMetricFamily(
            "safekeep_jobs",
            "Jobs waiting or running, by kind and status",
            labels=["kind", "status"],
        )
        age = GaugeMetricFamily(
            "safekeep_jobs_oldest_age_seconds",
            "Age of the oldest job waiting or running, by kind and status (0 when none)",
            labels=["kind", "status"],
        )
        current = {(str(k), str(s)): (0, 0.0) for k in JobKind for s in ("queued", "running")}
        for status, kind, count, oldest in waiting:
            seconds = (now - _aware(oldest)).total_seconds() if oldest else 0.0
            current[(str(kind), str(status))] = (int(count), max(0.0, seconds))
        for (kind, status), (count, seconds) in sorted(current.items()):
            depth.add_metric([kind, status], count)
            age.add_metric([kind, status], seconds)
        backlog = GaugeMetricFamily(
            "safekeep_search_unindexed_versions", "Backed-up versions not yet in the search index"
        )
        backlog.add_metric([], int(unindexed or 0))
        lag = GaugeMetricFamily(
            "safekeep_search_lag_seconds",
            "Age of the oldest backed-up version not yet in the search index (0 when none)",
        )
        lag.add_metric(
            [],
            max(0.0, (now - _aware(oldest_unindexed)).total_seconds()) if oldest_unindexed else 0.0,
        )
        return [up, tenants, jobs, depth, age, backlog, lag]


FLEET = FleetMetrics()
REGISTRY.register(FLEET)
