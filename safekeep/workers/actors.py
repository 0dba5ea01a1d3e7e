"""Dramatiq actors. Thin on purpose: each reloads its row and calls one service or engine
function. Arguments are ids, never ORM objects or payloads. Every actor is idempotent: a
redelivered message finds its work done (or resumes it) and changes nothing twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import dramatiq

from safekeep.backup import indexing, subscriptions
from safekeep.backup.jobs import backup, purge
from safekeep.backup.jobs.discover import run_discovery_job
from safekeep.backup.jobs.export import run_export_job
from safekeep.backup.jobs.lifecycle import MAX_ATTEMPTS
from safekeep.backup.jobs.restore import run_restore_job
from safekeep.billing.events import handle_event
from safekeep.runtime import unit_of_work
from safekeep.workers import webhooks
from safekeep.workers.broker import register
from safekeep.workers.context import current_runtime

F = TypeVar("F", bound=Callable[..., Awaitable[None]])

HOUR_MS = 3600 * 1000


def actor(
    queue: str, *, max_retries: int = MAX_ATTEMPTS, time_limit_ms: int = HOUR_MS, priority: int = 0
) -> Callable[[F], F]:
    """``dramatiq.actor`` with our defaults: a named queue, bounded retries with exponential
    backoff (Dramatiq's Retries middleware), a time limit and registration for re-binding.

    The actor's name is the function's name: queued messages name it, so renaming an actor
    strands the messages already queued. ``max_retries`` defaults to the engine's
    ``MAX_ATTEMPTS`` so the engine settles a failing job before Dramatiq gives its message up."""

    def wrap(fn: F) -> F:
        declared: Any = dramatiq.actor(
            actor_name=fn.__name__,
            queue_name=queue,
            max_retries=max_retries,
            min_backoff=2_000,
            max_backoff=300_000,
            time_limit=time_limit_ms,
            priority=priority,
        )(fn)
        register(declared)
        result: F = declared
        return result

    return wrap


@actor("default")
async def run_discover(job_id: str) -> None:
    await run_discovery_job(current_runtime(), job_id)


@actor("backup", priority=10)
async def run_backup(job_id: str) -> None:
    await backup.start_backup_job(current_runtime(), job_id)


@actor("backup", time_limit_ms=12 * HOUR_MS, priority=20)
async def run_backup_task(task_id: str) -> None:
    await backup.run_backup_task(current_runtime(), task_id)


@actor("default", time_limit_ms=HOUR_MS)
async def sync_subscriptions(tenant_id: str) -> None:
    """Create, renew or delete a tenant's Graph change-notification subscriptions."""
    await subscriptions.sync_tenant(current_runtime(), tenant_id)


@actor("restore", time_limit_ms=12 * HOUR_MS)
async def run_restore(job_id: str) -> None:
    await run_restore_job(current_runtime(), job_id)


@actor("export", time_limit_ms=12 * HOUR_MS)
async def run_export(job_id: str) -> None:
    await run_export_job(current_runtime(), job_id)


@actor("default", time_limit_ms=6 * HOUR_MS)
async def run_purge(job_id: str) -> None:
    await purge.run_purge_job(current_runtime(), job_id)


@actor("webhooks", max_retries=0, time_limit_ms=120_000)
async def deliver_webhook(delivery_id: str) -> None:
    """One attempt; the next is scheduled by the delivery record's backoff, not by Dramatiq."""
    await webhooks.deliver(delivery_id)


@actor("search", max_retries=10)
async def index_versions(tenant_id: str, version_ids: list[str]) -> None:
    """Retry indexing that failed during a backup (indexing never fails a backup)."""
    await indexing.index_pending(current_runtime(), tenant_id, version_ids)


@actor("default", max_retries=10, time_limit_ms=60_000)
async def handle_stripe_event(event_id: str) -> None:
    """Apply one stored Stripe event to its MSP; a redelivered message finds it handled."""
    async with unit_of_work(current_runtime()) as session:
        await handle_event(session, event_id)
