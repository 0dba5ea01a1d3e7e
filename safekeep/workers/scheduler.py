"""The scheduler loop: due backups, lost-message recovery, webhook retries, housekeeping.

Every step is a short unit of work that is safe under several replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import structlog

from safekeep.backup.indexing import send_to_index
from safekeep.backup.jobs.export import expire_exports
from safekeep.backup.jobs.purge import enqueue_retention
from safekeep.billing import events as billing_events
from safekeep.billing import usage as billing_usage
from safekeep.billing.stripe_client import BillingClient
from safekeep.runtime import unit_of_work
from safekeep.settings import Settings
from safekeep.tenants import outbox
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.idempotency import service as idempotency
from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.models import utcnow
from safekeep.tenants.schedule import service as schedule
from safekeep.tenants.subscription import repository as subscription_repository
from safekeep.tenants.subscription import service as subscriptions
from safekeep.tenants.webhook import repository as webhook_repository
from safekeep.tenants.webhook import service as webhook_service
from safekeep.transient import RETRY_AFTER_SECONDS, is_transient
from safekeep.workers import broker
from safekeep.workers.context import configure, current_runtime

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A job untouched for settings.job_recovery_seconds lost its message (or its worker): send it
# again, unless a run holds its lease (a restore renews it while it runs, however long). Actors
# are idempotent and single-step jobs and backup tasks hold leases, so a duplicate only finds
# the work done or its lease taken. A job that keeps failing spends its attempts and is
# settled failed, so recovery never sends one for ever.


async def recover_lost_jobs(*, older_than: timedelta | None = None) -> int:
    runtime = current_runtime()
    if older_than is None:
        older_than = timedelta(seconds=runtime.settings.job_recovery_seconds)
    lease = timedelta(seconds=runtime.settings.task_lease_seconds)
    async with unit_of_work(runtime) as session:
        now = utcnow()
        jobs = await job_repository.stale_unfinished(
            session, now - older_than, limit=200, lease_stale_before=now - lease
        )
        for job in jobs:
            await job_repository.touch(session, job.id, now)
            outbox.enqueue(f"run_{job.kind}", str(job.id))
    if jobs:
        log.info("jobs_requeued", count=len(jobs))
    return len(jobs)


async def retry_webhooks() -> int:
    async with unit_of_work(current_runtime()) as session:
        ids = await webhook_repository.stale_pending(session, utcnow() - timedelta(minutes=5), 500)
        for delivery_id in ids:
            outbox.enqueue("deliver_webhook", str(delivery_id))
    return len(ids)


# A page's documents are indexed as soon as it commits, and a failure to index sends them
# to be indexed again at once: a version still unindexed after this was left by a worker
# that stopped in between (killed, its node lost). Sent again, a few thousand a tick.
INDEX_GRACE = timedelta(minutes=15)
REINDEX_PER_TICK = 2000


async def reindex_stale(*, older_than: timedelta = INDEX_GRACE) -> int:
    async with unit_of_work(current_runtime()) as session:
        stale = await catalog.stale_unindexed(session, utcnow() - older_than, REINDEX_PER_TICK)
        by_tenant: dict[str, list[str]] = {}
        for tenant, version in stale:
            by_tenant.setdefault(str(tenant), []).append(str(version))
        for tenant_key, ids in by_tenant.items():
            send_to_index(tenant_key, ids)
    if stale:
        log.info("versions_sent_to_index", count=len(stale))
    return len(stale)


async def sync_subscriptions() -> int:
    """Tenants whose Graph subscriptions need creating, renewing or deleting: one actor each."""
    async with unit_of_work(current_runtime()) as session:
        ids = await subscription_repository.tenants_needing_sync(session, utcnow(), 500)
        for tenant_id in ids:
            outbox.enqueue("sync_subscriptions", str(tenant_id))
    return len(ids)


async def back_up_changes() -> int:
    """Accounts Graph said changed, dirty for a debounce window (shorter when the tenant's
    rpo_minutes needs it): one incremental per tenant."""
    runtime = current_runtime()
    settings = runtime.settings
    async with unit_of_work(runtime) as session:
        started = await subscriptions.enqueue_changed(
            session,
            debounce=timedelta(seconds=settings.notification_debounce_seconds),
            scheduler_interval=timedelta(seconds=settings.scheduler_interval_seconds),
        )
    return len(started)


async def _step(name: str, fn: Callable[[], Awaitable[T]], failed: list[str], default: T) -> T:
    """One step of a tick. A step that fails (the database restarting, Stripe down) is logged
    and skipped: the others still run, and the loop tries again soon."""
    try:
        return await fn()
    except Exception as exc:
        failed.append(name)
        if is_transient(exc):
            log.warning("scheduler_step_failed", step=name, transient=True, error=str(exc)[:300])
        else:
            log.exception("scheduler_step_failed", step=name, transient=False)
        return default


async def tick() -> dict[str, int]:
    failed: list[str] = []

    async def enqueue_due() -> list[object]:
        async with unit_of_work(current_runtime()) as session:
            return list(await schedule.enqueue_due(session))

    async def prune() -> int:
        async with unit_of_work(current_runtime()) as session:
            return await idempotency.prune(session)

    async def prune_deliveries() -> int:
        async with unit_of_work(current_runtime()) as session:
            return await webhook_service.prune_deliveries(session)

    async def retention() -> int:
        async with unit_of_work(current_runtime()) as session:
            return len(await enqueue_retention(session))

    async def expire() -> int:
        return await expire_exports(current_runtime())

    async def usage() -> tuple[int, int]:
        runtime = current_runtime()
        run = await billing_usage.report_due_usage(
            runtime.db, BillingClient.from_settings(runtime.settings)
        )
        return run.sent, run.failed

    async def stripe_events() -> int:
        async with unit_of_work(current_runtime()) as session:
            return await billing_events.requeue_unhandled(session)

    no_jobs: list[object] = []
    started = await _step("scheduled_backups", enqueue_due, failed, no_jobs)
    if started:
        log.info("scheduled_backups", count=len(started))
    changed = await _step("changed_accounts", back_up_changes, failed, 0)
    synced = await _step("subscriptions", sync_subscriptions, failed, 0)
    recovered = await _step("recover_lost_jobs", recover_lost_jobs, failed, 0)
    webhooks = await _step("retry_webhooks", retry_webhooks, failed, 0)
    reindexed = await _step("reindex_stale", reindex_stale, failed, 0)
    pruned = await _step("prune_idempotency", prune, failed, 0)
    deliveries_pruned = await _step("prune_deliveries", prune_deliveries, failed, 0)
    retained = await _step("retention", retention, failed, 0)
    expired = await _step("expire_exports", expire, failed, 0)
    sent, usage_failed = await _step("report_usage", usage, failed, (0, 0))
    stripe_requeued = await _step("stripe_events", stripe_events, failed, 0)
    return {
        "started": len(started),
        "changed": changed,
        "subscriptions": synced,
        "recovered": recovered,
        "webhooks": webhooks,
        "reindexed": reindexed,
        "pruned": pruned,
        "deliveries_pruned": deliveries_pruned,
        "retention": retained,
        "exports_expired": expired,
        "usage_reported": sent,
        "usage_failed": usage_failed,
        "stripe_events_requeued": stripe_requeued,
        "steps_failed": len(failed),
    }


async def run_forever(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    configure(settings, send=broker.send_messages)
    broker.configure(settings)
    stop = stop or asyncio.Event()
    current_runtime()
    while not stop.is_set():
        wait = settings.scheduler_interval_seconds
        try:
            if (await tick())["steps_failed"]:
                # Something was down: try again soon rather than a whole interval later.
                wait = min(wait, RETRY_AFTER_SECONDS)
        except Exception:  # the loop itself must outlive anything a tick meets
            log.exception("scheduler_tick_failed")
            wait = min(wait, RETRY_AFTER_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
