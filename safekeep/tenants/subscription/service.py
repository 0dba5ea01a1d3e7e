"""What Graph's change notifications do to our state, and how dirty accounts become backups.

A notification is not trusted beyond "this account and service changed": it names a
subscription id and echoes the subscription's ``clientState``, which we compare (as hashes,
in constant time) with what we gave Graph; a mismatch or an unknown id is ignored. Accepted
notifications only set ``dirty_since``. The scheduler then starts one incremental backup per
tenant once its rows have been dirty for a debounce window (less when the tenant's
``rpo_minutes`` needs it), so a storm of notifications costs one delta round per account and
service, not one per item.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.errors import UnprocessableEntity
from safekeep.settings import Settings
from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import (
    GraphSubscription,
    JobKind,
    JobTrigger,
    MspStatus,
    SubscriptionStatus,
    utcnow,
)
from safekeep.tenants.msp import repository as msp_repository
from safekeep.tenants.pagination import Page
from safekeep.tenants.scope import TenantScope
from safekeep.tenants.subscription import repository
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.tenants.tenant import service as tenant_service

log = structlog.get_logger(__name__)

LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})


@dataclass(frozen=True)
class Notice:
    """The two fields of a notification we use; everything else Graph sends is ignored."""

    subscription_id: str
    client_state: str | None
    lifecycle_event: str | None = None


def hash_client_state(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _genuine(row: GraphSubscription, client_state: str | None) -> bool:
    if row.client_state_hash is None or client_state is None:
        return False
    return hmac.compare_digest(row.client_state_hash, hash_client_state(client_state))


async def _verified(
    session: AsyncSession, notices: Iterable[Notice]
) -> list[tuple[GraphSubscription, Notice]]:
    notices = list(notices)
    rows = {
        r.subscription_id: r
        for r in await repository.by_subscription_ids(session, {n.subscription_id for n in notices})
    }
    out: list[tuple[GraphSubscription, Notice]] = []
    rejected = 0
    for notice in notices:
        row = rows.get(notice.subscription_id)
        if row is not None and _genuine(row, notice.client_state):
            out.append((row, notice))
        else:
            rejected += 1
    if rejected:
        log.warning("graph_notifications_rejected", count=rejected)
    return out


async def accept_changes(
    session: AsyncSession, notices: Iterable[Notice], now: datetime | None = None
) -> int:
    """Mark the accounts and services of genuine notifications dirty; returns how many."""
    verified = await _verified(session, notices)
    await repository.mark_dirty(session, {row.id for row, _ in verified}, now or utcnow())
    return len(verified)


async def accept_lifecycle(
    session: AsyncSession, notices: Iterable[Notice], now: datetime | None = None
) -> int:
    """``reauthorizationRequired``: renew now. ``subscriptionRemoved``: re-create now (and
    back up, since changes may have gone unnoticed). ``missed``: back up what was missed."""
    now = now or utcnow()
    dirty: set[uuid.UUID] = set()
    verified = await _verified(session, notices)
    for row, notice in verified:
        if notice.lifecycle_event == "reauthorizationRequired":
            row.next_action_at = now
        elif notice.lifecycle_event == "subscriptionRemoved":
            row.status = SubscriptionStatus.removed
            row.next_action_at = now
            dirty.add(row.id)
        elif notice.lifecycle_event == "missed":
            dirty.add(row.id)
    await session.flush()
    await repository.mark_dirty(session, dirty, now)
    return len(verified)


# What one change-driven incremental is expected to take, from its start to its snapshot: the
# room an account's rpo_minutes must leave after the scheduler's tick and debounce.
EXPECTED_INCREMENTAL = timedelta(minutes=2)
# How many of a tenant's latest change-driven incrementals measure what the next one takes.
RECENT_INCREMENTALS = 5


def min_rpo_minutes(scheduler_interval_seconds: float, debounce_seconds: float) -> int:
    """The smallest ``rpo_minutes`` this deployment can honour: a change waits up to one
    scheduler interval to be seen, the debounce window, then its incremental runs."""
    needed = scheduler_interval_seconds + debounce_seconds + EXPECTED_INCREMENTAL.total_seconds()
    return math.ceil(needed / 60)


def check_rpo_minutes(settings: Settings, rpo_minutes: int | None) -> None:
    """Refuse (422) an ``rpo_minutes`` below what this deployment can honour, wherever a
    policy is set (a new tenant's or a changed one)."""
    floor = min_rpo_minutes(
        settings.scheduler_interval_seconds, settings.notification_debounce_seconds
    )
    if rpo_minutes is not None and rpo_minutes < floor:
        raise UnprocessableEntity(
            f"rpo_minutes must be at least {floor} on this deployment: its scheduler looks "
            f"every {settings.scheduler_interval_seconds:g} s, notifications are debounced "
            f"for {settings.notification_debounce_seconds:g} s, and an incremental needs its "
            "own time after that"
        )


def wait_for(
    rpo_minutes: int | None,
    *,
    debounce: timedelta,
    scheduler_interval: timedelta,
    margin: timedelta = EXPECTED_INCREMENTAL,
) -> timedelta:
    """How long a dirty row waits before its incremental starts. The debounce, but never so
    long that the tenant's rpo is missed: an account dirty for rpo minus what its incremental
    takes (``margin``) minus one tick (the next look may come that much later) goes at once."""
    if rpo_minutes is None:
        return debounce
    deadline = timedelta(minutes=rpo_minutes) - margin - scheduler_interval
    return max(timedelta(0), min(debounce, deadline))


async def incremental_margin(session: AsyncSession, tenant_id: uuid.UUID) -> timedelta:
    """What the tenant's change-driven incrementals take, request to finish: the longest of
    its last few, and never less than EXPECTED_INCREMENTAL (a new tenant has none yet)."""
    took = await repository.recent_change_durations(session, tenant_id, RECENT_INCREMENTALS)
    return max([EXPECTED_INCREMENTAL, *took])


async def enqueue_changed(
    session: AsyncSession,
    *,
    debounce: timedelta,
    scheduler_interval: timedelta = timedelta(0),
    now: datetime | None = None,
    limit: int = 2000,
) -> list[uuid.UUID]:
    """One incremental backup per tenant once one of its rows has been dirty for long enough
    (``wait_for``: the debounce, cut short by the tenant's ``rpo_minutes`` less what its
    incrementals take); that backup takes all the tenant's dirty rows, so one round covers
    them. A tenant whose backup (scheduled or change-driven) is queued or running keeps its
    rows dirty for the round after it: the running one may have read its delta before the
    change."""
    now = now or utcnow()
    dirty: dict[uuid.UUID, list[GraphSubscription]] = {}
    oldest: dict[uuid.UUID, timedelta] = {}
    rpo_of: dict[uuid.UUID, int | None] = {}
    for row, rpo in await repository.dirty_with_rpo(session, now, limit):
        waited = now - row.dirty_since if row.dirty_since is not None else timedelta(0)
        dirty.setdefault(row.tenant_id, []).append(row)
        oldest[row.tenant_id] = max(oldest.get(row.tenant_id, waited), waited)
        rpo_of[row.tenant_id] = rpo
    by_tenant: dict[uuid.UUID, list[GraphSubscription]] = {}
    for tenant_id, rows in dirty.items():
        if oldest[tenant_id] < debounce:
            rpo = rpo_of[tenant_id]
            if rpo is None:
                continue
            margin = await incremental_margin(session, tenant_id)
            wait = wait_for(
                rpo, debounce=debounce, scheduler_interval=scheduler_interval, margin=margin
            )
            if oldest[tenant_id] < wait:
                continue
        by_tenant[tenant_id] = rows
    started: list[uuid.UUID] = []
    for tenant_id, rows in by_tenant.items():
        tenant = await tenant_repository.get_system(session, tenant_id)
        if tenant is None:
            continue
        if await job_repository.active_for_tenant(session, tenant_id, JobKind.backup):
            continue
        msp = await msp_repository.get(session, tenant.msp_id)
        if msp is None or msp.status == MspStatus.suspended:
            continue
        taken = [
            r
            for r in rows
            if r.dirty_since is not None
            and await repository.clear_dirty(session, r.id, r.dirty_since)
        ]
        if not taken:
            continue
        job = await job_service.start_job(
            session,
            tenant,
            kind=JobKind.backup,
            trigger=JobTrigger.change,
            requested_by="notifications",
            params={
                "account_ids": sorted({str(r.account_id) for r in taken}),
                "services": sorted({r.service for r in taken}),
            },
        )
        started.append(job.id)
    return started


async def list_subscriptions(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID,
    *,
    status: SubscriptionStatus | None = None,
    cursor: str | None,
    limit: int,
) -> Page[GraphSubscription]:
    await tenant_service.get(session, scope, tenant_id)  # 404 for another MSP's tenant
    return await repository.list_page(
        session, scope, tenant_id, status=status, cursor=cursor, limit=limit
    )
