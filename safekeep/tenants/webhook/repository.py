from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Update, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from safekeep.tenants.models.webhook import PENDING_DELIVERY_SQL
from safekeep.tenants.pagination import Page, keyset_page


async def endpoints_for_event(
    session: AsyncSession, msp_id: uuid.UUID, event_type: str
) -> list[WebhookEndpoint]:
    stmt = select(WebhookEndpoint).where(
        WebhookEndpoint.msp_id == msp_id, WebhookEndpoint.deleted_at.is_(None)
    )
    return [e for e in (await session.execute(stmt)).scalars() if event_type in e.events]


async def get_endpoint(
    session: AsyncSession, msp_id: uuid.UUID, endpoint_id: uuid.UUID
) -> WebhookEndpoint | None:
    stmt = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id,
        WebhookEndpoint.msp_id == msp_id,
        WebhookEndpoint.deleted_at.is_(None),
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_endpoints(
    session: AsyncSession, msp_id: uuid.UUID, *, cursor: str | None, limit: int
) -> Page[WebhookEndpoint]:
    stmt = select(WebhookEndpoint).where(
        WebhookEndpoint.msp_id == msp_id, WebhookEndpoint.deleted_at.is_(None)
    )
    return await keyset_page(session, stmt, WebhookEndpoint, cursor=cursor, limit=limit)


async def list_deliveries(
    session: AsyncSession,
    msp_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    status: DeliveryStatus | None = None,
    cursor: str | None,
    limit: int,
) -> Page[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.msp_id == msp_id, WebhookDelivery.endpoint_id == endpoint_id
    )
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    return await keyset_page(session, stmt, WebhookDelivery, cursor=cursor, limit=limit)


async def schedule_failed_since(
    session: AsyncSession,
    msp_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    since: datetime,
    now: datetime,
    limit: int,
) -> list[uuid.UUID]:
    """Up to ``limit`` of the endpoint's failed deliveries made at or after ``since``, oldest
    first, made pending again and due ``now`` with their retries counted from none; their
    ids. A delivery another request made pending first is not counted twice (the update
    checks the status it read)."""
    found = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.msp_id == msp_id,
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == DeliveryStatus.failed,
            WebhookDelivery.created_at >= since,
        )
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        .limit(limit)
    )
    ids = list((await session.execute(found)).scalars())
    if not ids:
        return []
    stmt = _made_pending(
        now, WebhookDelivery.id.in_(ids), WebhookDelivery.status == DeliveryStatus.failed
    ).returning(WebhookDelivery.id)
    return list((await session.execute(stmt)).scalars())


async def get_endpoint_delivery(
    session: AsyncSession, msp_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery | None:
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.msp_id == msp_id,
        WebhookDelivery.endpoint_id == endpoint_id,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def schedule_again(session: AsyncSession, delivery_id: uuid.UUID, now: datetime) -> bool:
    """A delivery that is not pending made pending again, due now, its retries counted from
    none; False when it was pending already (another request scheduled it first)."""
    stmt = _made_pending(
        now, WebhookDelivery.id == delivery_id, WebhookDelivery.status != DeliveryStatus.pending
    )
    result: Any = await session.execute(stmt)
    return bool(result.rowcount == 1)


def _made_pending(now: datetime, *where: Any) -> Update:
    """The deliveries matching ``where`` sent again: pending, due ``now``, their retries
    counted from none (a redelivery and a recovery alike)."""
    return (
        update(WebhookDelivery)
        .where(*where)
        .values(status=DeliveryStatus.pending, attempts=0, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )


async def replace_secret(
    session: AsyncSession,
    msp_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    sealed: bytes,
    *,
    previous_until: datetime | None,
) -> WebhookEndpoint | None:
    """The endpoint's secret replaced by ``sealed`` in one statement, the one it held kept as
    the previous secret until ``previous_until`` (None: dropped). The statement reads the
    current secret as it writes (SQL's SET sees the row before the update), so rotations
    that race each keep what the one before them set, on PostgreSQL and SQLite alike. The
    endpoint as the statement left it (RETURNING), or None when the MSP has no such live
    endpoint."""
    endpoint = WebhookEndpoint.__table__.c
    previous = endpoint.secret_sealed if previous_until is not None else None
    stmt = (
        update(WebhookEndpoint)
        .where(
            WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.msp_id == msp_id,
            WebhookEndpoint.deleted_at.is_(None),
        )
        .values(
            secret_sealed=sealed,
            previous_secret_sealed=previous,
            previous_secret_expires_at=previous_until,
        )
        .returning(WebhookEndpoint)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).one_or_none()


async def get_delivery(session: AsyncSession, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    """System load by the delivery actor (it was handed the id by our own enqueue)."""
    return await session.get(WebhookDelivery, delivery_id)


async def get_endpoint_system(
    session: AsyncSession, endpoint_id: uuid.UUID
) -> WebhookEndpoint | None:
    return await session.get(WebhookEndpoint, endpoint_id)


async def stale_pending(session: AsyncSession, before: datetime, limit: int) -> list[uuid.UUID]:
    stmt = (
        select(WebhookDelivery.id)
        .where(text(PENDING_DELIVERY_SQL), WebhookDelivery.next_attempt_at <= before)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def delete_settled_before(session: AsyncSession, before: datetime, limit: int) -> int:
    """Up to ``limit`` deliveries made before ``before`` and no longer pending, deleted
    oldest first; how many."""
    oldest = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.created_at < before, WebhookDelivery.status != DeliveryStatus.pending
        )
        .order_by(WebhookDelivery.created_at)
        .limit(limit)
    )
    result: Any = await session.execute(
        delete(WebhookDelivery)
        .where(WebhookDelivery.id.in_(oldest.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)
