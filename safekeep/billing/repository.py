"""Queries of the billing tables: the Stripe webhook inbox and the daily usage reports.

Both tables are written by concurrent parties (Stripe redelivers events; several scheduler
replicas may report the same day), so rows are created with ``INSERT ... ON CONFLICT DO
NOTHING`` and then locked, never by "select, then insert if missing", which races.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import Msp, StripeEvent, UsageReport
from safekeep.tenants.rowlock import one_for_update


def _insert(session: AsyncSession, model: Any) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which knows ``ON CONFLICT DO NOTHING`` (both of ours do)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"no ON CONFLICT insert for {dialect}")


# --- Webhook inbox ----------------------------------------------------------------------------


async def insert_event_once(
    session: AsyncSession, *, event_id: str, event_type: str, payload: dict[str, Any]
) -> bool:
    """Store a Stripe event unless its id is already there; True if this call stored it."""
    stmt = (
        _insert(session, StripeEvent)
        .values(id=event_id, type=event_type, payload=payload)
        .on_conflict_do_nothing(index_elements=[StripeEvent.id])
        .returning(StripeEvent.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def get_event_for_update(session: AsyncSession, event_id: str) -> StripeEvent | None:
    """The event, locked until commit, so two deliveries of the same message cannot both
    handle it (SQLite has no row locks but lets one writer at a time through)."""
    return await one_for_update(session, StripeEvent, StripeEvent.id == event_id)


async def unhandled_event_ids(session: AsyncSession, *, before: datetime, limit: int) -> list[str]:
    """Events stored before ``before`` and still not handled: their message was lost."""
    stmt = (
        select(StripeEvent.id)
        .where(StripeEvent.handled_at.is_(None), StripeEvent.created_at < before)
        .order_by(StripeEvent.created_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


# --- MSPs as billing sees them ----------------------------------------------------------------


async def get_msp_for_update(session: AsyncSession, msp_id: uuid.UUID) -> Msp | None:
    return await one_for_update(session, Msp, Msp.id == msp_id)


async def get_msp_by_customer_for_update(session: AsyncSession, customer_id: str) -> Msp | None:
    return await one_for_update(session, Msp, Msp.stripe_customer_id == customer_id)


async def msps_due_for_report(
    session: AsyncSession, *, day: date, since: date
) -> list[tuple[uuid.UUID, date]]:
    """(MSP, day) pairs still to send: ``day`` for every MSP with a Stripe customer that has
    no sent report for it, and every earlier day since ``since`` whose report was counted but
    not sent (Stripe was down)."""
    sent = exists().where(
        UsageReport.msp_id == Msp.id,
        UsageReport.day == day,
        UsageReport.reported_at.is_not(None),
    )
    new = select(Msp.id).where(Msp.stripe_customer_id.is_not(None), ~sent).order_by(Msp.id)
    pending = (
        select(UsageReport.msp_id, UsageReport.day)
        .join(Msp, Msp.id == UsageReport.msp_id)
        .where(
            Msp.stripe_customer_id.is_not(None),
            UsageReport.reported_at.is_(None),
            UsageReport.day >= since,
            UsageReport.day < day,
        )
        .order_by(UsageReport.day, UsageReport.msp_id)
    )
    due = [(row[0], row[1]) for row in (await session.execute(pending)).all()]
    due.extend((msp_id, day) for msp_id in (await session.execute(new)).scalars())
    return due


# --- Usage reports ----------------------------------------------------------------------------


async def claim_usage_report(
    session: AsyncSession,
    *,
    msp_id: uuid.UUID,
    day: date,
    protected_seats: int,
    retained_seats: int,
    stored_bytes: int,
) -> UsageReport:
    """The MSP's report for ``day``, created with these counts if it did not exist, and locked
    until commit so that one party at a time sends it. An existing row keeps the counts it
    was first given: they were taken closest to the day they describe."""
    stmt = (
        _insert(session, UsageReport)
        .values(
            id=uuid.uuid4(),
            msp_id=msp_id,
            day=day,
            protected_seats=protected_seats,
            retained_seats=retained_seats,
            stored_bytes=stored_bytes,
            stripe_ids={},
        )
        .on_conflict_do_nothing(index_elements=[UsageReport.msp_id, UsageReport.day])
    )
    await session.execute(stmt)
    locked = (
        select(UsageReport)
        .where(UsageReport.msp_id == msp_id, UsageReport.day == day)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(locked)).scalar_one()


async def recent_usage_reports(
    session: AsyncSession, msp_id: uuid.UUID, *, limit: int
) -> list[UsageReport]:
    stmt = (
        select(UsageReport)
        .where(UsageReport.msp_id == msp_id)
        .order_by(UsageReport.day.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
