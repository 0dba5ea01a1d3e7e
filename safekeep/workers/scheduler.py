"""The scheduler loop: due backups, lost-message recovery, webhook retries, housekeeping.

Every step is a short unit of work that is safe under several replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog

from safekeep.backup.export.job import expire_exports
from safekeep.backup.purge import enqueue_retention
from safekeep.billing import events as billing_events
from safekeep.billing import usage as billing_usage
from safekeep.billing.stripe_client import BillingClient
from safekeep.settings import Settings
from safekeep.tenants import outbox
from safekeep.tenants.idempotency import service as idempotency
from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.models import utcnow
from safekeep.tenants.schedule import service as schedule
from safekeep.tenants.webhook import repository as webhook_repository
from safekeep.workers import broker
from safekeep.workers.context import configure, current_runtime, unit_of_work

log = structlog.get_logger(__name__)

# A job untouched for settings.job_recovery_seconds lost its message (or its worker): send it
# again. Actors are idempotent and tasks hold leases, so a duplicate only finds the work done.


async def recover_lost_jobs(*, older_than: timedelta | None = None) -> int:
    runtime = current_runtime()
    if older_than is None:
        older_than = timedelta(seconds=runtime.settings.job_recovery_seconds)
    async with unit_of_work(runtime) as session:
        jobs = await job_repository.stale_unfinished(session, utcnow() - older_than, limit=200)
        now = utcnow()
        for job in jobs:
            await job_repository.touch(session, job.id, now)
            outbox.enqueue(f"run_{job.kind}", str(job.id))
    if jobs:
        log.info("jobs_requeued", count=len(jobs))
    return len(jobs)


async def retry_webhooks() -> int:
    async with unit_of_work() as session:
        ids = await webhook_repository.stale_pending(session, utcnow() - timedelta(minutes=5), 500)
        for delivery_id in ids:
            outbox.enqueue("deliver_webhook", str(delivery_id))
    return len(ids)


async def tick() -> dict[str, int]:
    async with unit_of_work() as session:
        started = await schedule.enqueue_due(session)
    if started:
        log.info("scheduled_backups", count=len(started))
    recovered = await recover_lost_jobs()
    webhooks = await retry_webhooks()
    async with unit_of_work() as session:
        pruned = await idempotency.prune(session)
    async with unit_of_work() as session:
        retention = await enqueue_retention(session)
    runtime = current_runtime()
    expired = await expire_exports(runtime)
    usage = await billing_usage.report_due_usage(
        runtime.db, BillingClient.from_settings(runtime.settings)
    )
    async with unit_of_work() as session:
        stripe_requeued = await billing_events.requeue_unhandled(session)
    return {
        "started": len(started),
        "recovered": recovered,
        "webhooks": webhooks,
        "pruned": pruned,
        "retention": len(retention),
        "exports_expired": expired,
        "usage_reported": usage.sent,
        "usage_failed": usage.failed,
        "stripe_events_requeued": stripe_requeued,
    }


async def run_forever(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    configure(settings)
    broker.configure(settings)
    stop = stop or asyncio.Event()
    current_runtime()
    while not stop.is_set():
        try:
            await tick()
        except Exception:
            log.exception("scheduler_tick_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.scheduler_interval_seconds)
