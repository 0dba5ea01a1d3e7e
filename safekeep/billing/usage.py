"""Daily usage per MSP to Stripe: protected seats and retained (cancelled-licence) seats.

Stripe-side deduplication is a safety net, not our record: stripe-mock keeps no state and real
Stripe forgets identifiers after a day or so. What was counted and what was sent lives in
``usage_report``, one row per MSP and day: counted once, sent once, and left unsent on a
failure so the next run sends it (``reported_at`` stays null until Stripe took every meter).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import structlog
from sqlalchemy import BigInteger
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.billing import repository
from safekeep.billing.stripe_client import (
    PROTECTED_SEATS_EVENT,
    RETAINED_SEATS_EVENT,
    BillingClient,
    BillingError,
)
from safekeep.db import Database
from safekeep.tenants.models import UsageReport, utcnow
from safekeep.tenants.msp import repository as msp_repository
from safekeep.tenants.scope import scope_for_msp
from safekeep.tenants.usage import service as usage_service

log = structlog.get_logger(__name__)

# Unsent days are retried this long; Stripe refuses meter events older than 35 days.
RETRY_DAYS = 30

_STORED_BYTES_MAX = (
    2**63 - 1 if isinstance(UsageReport.__table__.c.stored_bytes.type, BigInteger) else 2**31 - 1
)


class UsageOutcome(enum.StrEnum):
    sent = "sent"  # Stripe took every meter event of the day just now
    already_sent = "already_sent"  # an earlier run sent it; nothing was sent again
    no_customer = "no_customer"  # the MSP has no Stripe customer: nothing to bill
    failed = "failed"  # Stripe did not take it; the row stays unsent for the next run


@dataclass(frozen=True)
class UsageResult:
    outcome: UsageOutcome
    report: UsageReport | None = None
    error: BillingError | None = None


@dataclass
class UsageRun:
    """What one scheduler step did."""

    sent: int = 0
    already_sent: int = 0
    failed: int = 0


def meter_timestamp(day: date, now: datetime) -> datetime:
    """Noon UTC of ``day``: inside the day whatever the billing period's boundary hour, and
    never in the future (Stripe refuses events more than five minutes ahead)."""
    return min(datetime.combine(day, time(12), tzinfo=UTC), now)


def meter_identifier(msp_id: uuid.UUID, day: date, event_name: str) -> str:
    """Stable per MSP, day and meter (Stripe allows 100 characters), so a resend of the same
    reading is recognised by Stripe as the same event."""
    meter = event_name.removeprefix("safekeep_")
    return f"sk-{msp_id.hex}-{day:%Y%m%d}-{meter}"[:100]


async def report_usage(
    session: AsyncSession, msp_id: uuid.UUID, day: date, *, client: BillingClient
) -> UsageResult:
    """Count the MSP's seats for ``day``, record them, and send them to Stripe unless that was
    done already. Stripe errors do not raise: they leave the row unsent (commit the session so
    the counts are kept) and are returned in the result."""
    now = utcnow()
    if day > now.date():
        raise ValueError(f"cannot report usage of a future day ({day})")
    msp = await msp_repository.get(session, msp_id)
    if msp is None:
        raise LookupError(f"no MSP {msp_id}")
    customer_id = msp.stripe_customer_id
    if customer_id is None:
        return UsageResult(UsageOutcome.no_customer)

    # Seats are counted when the report is made: the scheduler does so just after the day
    # ends, so they are the seats the MSP held at the end of it (the same figures as /v1/usage).
    usage = await usage_service.totals(session, scope_for_msp(msp_id))
    report = await repository.claim_usage_report(
        session,
        msp_id=msp_id,
        day=day,
        protected_seats=usage.protected_seats,
        retained_seats=usage.retained_seats,
        stored_bytes=min(usage.stored_bytes, _STORED_BYTES_MAX),
    )
    if report.reported_at is not None:
        return UsageResult(UsageOutcome.already_sent, report)

    readings = {
        PROTECTED_SEATS_EVENT: report.protected_seats,
        RETAINED_SEATS_EVENT: report.retained_seats,
    }
    sent = dict(report.stripe_ids)
    try:
        for event_name, value in readings.items():
            if event_name in sent:
                continue  # taken by Stripe on an earlier, partly failed run
            receipt = await client.send_meter_event(
                event_name=event_name,
                customer_id=customer_id,
                value=value,
                timestamp=meter_timestamp(day, now),
                identifier=meter_identifier(msp_id, day, event_name),
            )
            sent[event_name] = receipt.identifier
    except BillingError as exc:
        log.warning(
            "usage_report_failed",
            msp_id=str(msp_id),
            day=day.isoformat(),
            error=str(exc),
            transient=exc.transient,
        )
        return UsageResult(UsageOutcome.failed, report, exc)
    finally:
        # A new dict, so the JSON column is seen as changed; kept on failure too, so that a
        # retry sends only the meters Stripe has not taken.
        report.stripe_ids = sent
        await session.flush()

    report.reported_at = utcnow()
    await session.flush()
    log.info(
        "usage_reported",
        msp_id=str(msp_id),
        day=day.isoformat(),
        protected_seats=report.protected_seats,
        retained_seats=report.retained_seats,
    )
    return UsageResult(UsageOutcome.sent, report)


async def report_due_usage(
    db: Database, client: BillingClient | None, *, today: date | None = None
) -> UsageRun:
    """The scheduler step: yesterday's usage (UTC) for every MSP with a Stripe customer, plus
    any earlier day of the last ``RETRY_DAYS`` that Stripe did not take. Each MSP and day is
    its own unit of work, so one failure keeps nothing else from being sent. Cheap when there
    is nothing to do (one query), so it can run on every scheduler tick."""
    run = UsageRun()
    if client is None:
        return run  # billing is off
    today = today or utcnow().date()
    yesterday = today - timedelta(days=1)
    async with db.session() as session:
        due = await repository.msps_due_for_report(
            session, day=yesterday, since=today - timedelta(days=RETRY_DAYS)
        )
    for msp_id, day in due:
        try:
            async with db.session() as session:
                result = await report_usage(session, msp_id, day, client=client)
        except Exception:
            log.exception("usage_report_crashed", msp_id=str(msp_id), day=day.isoformat())
            run.failed += 1
            continue
        if result.outcome is UsageOutcome.sent:
            run.sent += 1
        elif result.outcome is UsageOutcome.already_sent:
            run.already_sent += 1
        elif result.outcome is UsageOutcome.failed:
            run.failed += 1
            if result.error is not None and result.error.transient:
                break  # Stripe is down for every MSP: do not wait on it once per MSP
    return run
