"""Queries on ``graph_subscription``. System queries (Graph calling us, the scheduler, the
engine) take ids; the one the API uses takes the caller's ``TenantScope``."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep import registry
from safekeep.tenants.models import (
    Account,
    AccountState,
    ConsentState,
    GraphSubscription,
    Job,
    JobKind,
    JobStatus,
    JobTrigger,
    Policy,
    SubscriptionStatus,
    Tenant,
    TenantStatus,
)
from safekeep.tenants.pagination import Page, keyset_page
from safekeep.tenants.scope import TenantScope


def subscribable(
    kind: str, services_found: Mapping[str, bool] | None, policy_services: Sequence[str]
) -> list[str]:
    """The services of an account (by kind, its tenant's policy and discovery) that declare
    change notifications (safekeep/registry.py): what it gets subscriptions for."""
    return [
        name
        for name in registry.covered(kind, services_found, policy_services)
        if registry.get(name).notifications
    ]


async def by_subscription_ids(
    session: AsyncSession, subscription_ids: Collection[str]
) -> list[GraphSubscription]:
    if not subscription_ids:
        return []
    stmt = select(GraphSubscription).where(
        GraphSubscription.subscription_id.in_(list(subscription_ids))
    )
    return list((await session.execute(stmt)).scalars())


async def mark_dirty(session: AsyncSession, row_ids: Collection[uuid.UUID], now: datetime) -> None:
    """Dirty since the first unhandled notification: later ones leave the time alone, so a
    storm waits one debounce window, not one per notification."""
    if not row_ids:
        return
    await session.execute(
        update(GraphSubscription)
        .where(GraphSubscription.id.in_(list(row_ids)), GraphSubscription.dirty_since.is_(None))
        .values(dirty_since=now, last_notification_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(GraphSubscription)
        .where(GraphSubscription.id.in_(list(row_ids)))
        .values(last_notification_at=now)
        .execution_options(synchronize_session=False)
    )


async def for_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> list[GraphSubscription]:
    stmt = select(GraphSubscription).where(GraphSubscription.tenant_id == tenant_id)
    return list((await session.execute(stmt)).scalars())


async def list_page(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID,
    *,
    status: SubscriptionStatus | None,
    cursor: str | None,
    limit: int,
) -> Page[GraphSubscription]:
    """A page of a tenant's subscriptions (of one status, if given), newest first."""
    stmt = select(GraphSubscription).where(
        GraphSubscription.tenant_id == tenant_id,
        scope.tenant_filter(GraphSubscription.tenant_id),
    )
    if status is not None:
        stmt = stmt.where(GraphSubscription.status == status)
    return await keyset_page(session, stmt, GraphSubscription, cursor=cursor, limit=limit)


async def tenants_needing_sync(session: AsyncSession, now: datetime, limit: int) -> list[uuid.UUID]:
    """Tenants whose subscriptions need Graph calls: a row due (renewal, retry, re-creation),
    a protected account without rows while the policy asks for notifications, rows left over
    after the policy stopped asking, or rows older than the tenant's last consent change."""
    live = and_(Tenant.status == TenantStatus.active, Tenant.consent_state == ConsentState.granted)
    due = (
        select(GraphSubscription.tenant_id)
        .join(Tenant, Tenant.id == GraphSubscription.tenant_id)
        .join(Policy, Policy.tenant_id == GraphSubscription.tenant_id)
        .where(
            or_(
                and_(live, GraphSubscription.next_action_at <= now),
                Policy.rpo_minutes.is_(None),
                and_(live, Tenant.consent_changed_at > GraphSubscription.created_at),
            )
        )
    )
    due_ids = set((await session.execute(due.distinct().limit(limit))).scalars())
    # Protected users without rows, kept only if one of their services can be subscribed to:
    # a user with neither mailbox nor OneDrive (or a policy without those services) never gets
    # a row, and must not cost a sync message on every tick.
    missing = (
        select(Account.tenant_id, Account.kind, Account.services_found, Policy.services)
        .join(Tenant, Tenant.id == Account.tenant_id)
        .join(Policy, Policy.tenant_id == Account.tenant_id)
        .where(
            live,
            Policy.rpo_minutes.is_not(None),
            Account.protected.is_(True),
            Account.state == AccountState.active,
            ~exists().where(GraphSubscription.account_id == Account.id),
        )
    )
    out = list(due_ids)
    if len(out) >= limit:
        return out[:limit]
    for tenant_id, kind, found, services in await session.execute(missing):
        if tenant_id not in due_ids and subscribable(kind, found, services or ()):
            due_ids.add(tenant_id)
            out.append(tenant_id)
            if len(out) >= limit:
                break
    return out


async def dirty_with_rpo(
    session: AsyncSession, now: datetime, limit: int
) -> list[tuple[GraphSubscription, int | None]]:
    """Dirty rows, oldest first, each with its tenant's ``rpo_minutes``: how long a row may
    wait depends on its tenant's policy, so the caller decides which are due."""
    stmt = (
        select(GraphSubscription, Policy.rpo_minutes)
        .outerjoin(Policy, Policy.tenant_id == GraphSubscription.tenant_id)
        .where(
            GraphSubscription.dirty_since.is_not(None),
            GraphSubscription.dirty_since <= now,
            # A tenant with a backup queued or running keeps its rows dirty for the round
            # after it; leaving them out here keeps them from crowding out other tenants.
            ~exists().where(
                Job.tenant_id == GraphSubscription.tenant_id,
                Job.kind == JobKind.backup,
                Job.status.in_([JobStatus.queued, JobStatus.running]),
            ),
        )
        .order_by(GraphSubscription.dirty_since)
        .limit(limit)
    )
    return [(row, rpo) for row, rpo in (await session.execute(stmt)).all()]


async def recent_change_durations(
    session: AsyncSession, tenant_id: uuid.UUID, count: int
) -> list[timedelta]:
    """How long the tenant's latest finished change-driven backups took, request to finish."""
    stmt = (
        select(Job.created_at, Job.finished_at)
        .where(
            Job.tenant_id == tenant_id,
            Job.kind == JobKind.backup,
            Job.trigger == JobTrigger.change,
            Job.status.in_([JobStatus.succeeded, JobStatus.partial]),
            Job.finished_at.is_not(None),
        )
        .order_by(Job.finished_at.desc())
        .limit(count)
    )
    rows = (await session.execute(stmt)).all()
    return [done - asked for asked, done in rows if done is not None]


async def clear_dirty(session: AsyncSession, row_id: uuid.UUID, since: datetime) -> bool:
    """Compare-and-set, so of several scheduler replicas one takes a dirty row, and a
    notification that arrived meanwhile (a new ``dirty_since``) is not lost."""
    result = await session.execute(
        update(GraphSubscription)
        .where(GraphSubscription.id == row_id, GraphSubscription.dirty_since == since)
        .values(dirty_since=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
