"""Stripe webhooks: an inbox of events, each stored once and handled once.

The endpoint only verifies, stores and enqueues (``receive_event``), so Stripe gets its 2xx
fast and a slow or failing handler never makes Stripe redeliver. The worker then applies the
event (``handle_event``): it moves the MSP between active, past-due and suspended.

Stripe does not deliver events in order. An event older than the MSP's last status change is
stale and changes nothing, which is why a change caused by Stripe stamps ``status_changed_at``
with the time Stripe created the event rather than the time we handled it.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.billing import repository
from safekeep.tenants import outbox
from safekeep.tenants.audit import service as audit
from safekeep.tenants.models import Msp, MspStatus, utcnow
from safekeep.tenants.webhook import service as webhooks

log = structlog.get_logger(__name__)

HANDLE_ACTOR = "handle_stripe_event"
# An event still unhandled this long after it was stored lost its message.
LOST_AFTER = timedelta(minutes=10)
MAX_EVENT_ID = 100  # the inbox's key column; Stripe's ids are about 30 characters

# The events that can move an MSP; any other type is acknowledged and dropped unstored.
ALLOWED_EVENT_TYPES = frozenset(
    {
        "invoice.paid",
        "invoice.payment_failed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    }
)

# Subscription statuses (https://docs.stripe.com/api/subscriptions/object#subscription_object-status)
# and what each means for the MSP. ``incomplete`` (first payment under way) changes nothing.
_SUBSCRIPTION_STATUS = {
    "active": MspStatus.active,
    "trialing": MspStatus.active,
    "past_due": MspStatus.past_due,
    "unpaid": MspStatus.suspended,
    "canceled": MspStatus.suspended,
    "incomplete_expired": MspStatus.suspended,
    "paused": MspStatus.suspended,
}


class StripeEventReceipt(enum.StrEnum):
    queued = "queued"  # new: stored, handling enqueued after commit
    duplicate = "duplicate"  # stored before: nothing done
    ignored = "ignored"  # a type we do not act on: acknowledged, not stored


class Handled(enum.StrEnum):
    changed = "changed"  # the MSP's status moved (and was audited)
    unchanged = "unchanged"  # the MSP already had the status the event implies
    stale = "stale"  # older than the MSP's last status change: ignored
    no_msp = "no_msp"  # no MSP has this Stripe customer
    irrelevant = "irrelevant"  # the event implies no status (e.g. an incomplete subscription)
    already_handled = "already_handled"  # a redelivered message: refused
    not_found = "not_found"  # no such event in the inbox


async def receive_event(session: AsyncSession, event: dict[str, Any]) -> StripeEventReceipt:
    """Store a verified Stripe event once and enqueue its handling after commit."""
    event_type = event["type"]
    if event_type not in ALLOWED_EVENT_TYPES or len(event["id"]) > MAX_EVENT_ID:
        log.info("stripe_event_ignored", stripe_event_id=event["id"], type=event_type)
        return StripeEventReceipt.ignored
    stored = await repository.insert_event_once(
        session, event_id=event["id"], event_type=event_type, payload=event
    )
    if not stored:
        return StripeEventReceipt.duplicate
    outbox.enqueue(HANDLE_ACTOR, event["id"])
    return StripeEventReceipt.queued


async def requeue_unhandled(
    session: AsyncSession, *, older_than: timedelta = LOST_AFTER, limit: int = 500
) -> int:
    """Enqueue again the events whose handling message was lost (the broker was down when the
    request committed, or a worker died): Stripe got its 2xx and will not send them again, so
    the inbox is the only record. Handling is idempotent, so a message that was merely slow
    costs one no-op."""
    ids = await repository.unhandled_event_ids(session, before=utcnow() - older_than, limit=limit)
    for event_id in ids:
        outbox.enqueue(HANDLE_ACTOR, event_id)
    if ids:
        log.info("stripe_events_requeued", count=len(ids))
    return len(ids)


def implied_status(event_type: str, obj: dict[str, Any]) -> MspStatus | None:
    """The MSP status a Stripe event asks for, or None if it asks for none."""
    if event_type == "invoice.paid":
        return MspStatus.active
    if event_type == "invoice.payment_failed":
        return MspStatus.past_due
    if event_type == "customer.subscription.deleted":
        return MspStatus.suspended
    if event_type in ("customer.subscription.created", "customer.subscription.updated"):
        return _SUBSCRIPTION_STATUS.get(str(obj.get("status")))
    return None


def _next_status(current: MspStatus, implied: MspStatus) -> MspStatus:
    """A failed payment does not lift a suspension: past-due is a step down from active only."""
    if implied is MspStatus.past_due and current is MspStatus.suspended:
        return current
    return implied


def _customer_of(obj: dict[str, Any]) -> str | None:
    customer = obj.get("customer")
    if isinstance(customer, dict):  # an expanded customer object
        customer = customer.get("id")
    return customer if isinstance(customer, str) else None


def _created_at(payload: dict[str, Any]) -> datetime:
    created = payload.get("created")
    if isinstance(created, int | float) and not isinstance(created, bool):
        return datetime.fromtimestamp(created, UTC)
    return utcnow()


async def handle_event(session: AsyncSession, event_id: str) -> Handled:
    """Apply one stored event to its MSP, once: the event row is locked, and marked handled in
    the same unit of work as the change it causes, so a redelivered message finds it done."""
    event = await repository.get_event_for_update(session, event_id)
    if event is None:
        log.warning("stripe_event_missing", stripe_event_id=event_id)
        return Handled.not_found
    if event.handled_at is not None:
        return Handled.already_handled
    outcome = await _apply(session, event.id, event.type, event.payload)
    event.handled_at = utcnow()
    await session.flush()
    log.info("stripe_event_handled", stripe_event_id=event.id, type=event.type, outcome=outcome)
    return outcome


async def _apply(
    session: AsyncSession, event_id: str, event_type: str, payload: dict[str, Any]
) -> Handled:
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict) or event_type not in ALLOWED_EVENT_TYPES:
        return Handled.irrelevant
    implied = implied_status(event_type, obj)
    if implied is None:
        return Handled.irrelevant
    customer_id = _customer_of(obj)
    msp = (
        await repository.get_msp_by_customer_for_update(session, customer_id)
        if customer_id
        else None
    )
    if msp is None:
        log.warning("stripe_event_no_msp", stripe_event_id=event_id, customer=customer_id)
        return Handled.no_msp
    created = _created_at(payload)
    if msp.status_changed_at is not None and created < msp.status_changed_at:
        return Handled.stale
    new = _next_status(msp.status, implied)
    if new is msp.status:
        return Handled.unchanged
    await _move(session, msp, new, at=created, event_id=event_id, event_type=event_type)
    return Handled.changed


async def _move(
    session: AsyncSession,
    msp: Msp,
    new: MspStatus,
    *,
    at: datetime,
    event_id: str,
    event_type: str,
) -> None:
    old = msp.status
    msp.status = new
    msp.status_changed_at = at
    await audit.record_on_msp(
        session,
        msp,
        "msp.billing_status_changed",
        actor="stripe",
        details={
            "from": str(old),
            "to": str(new),
            "stripe_event_id": event_id,
            "stripe_event_type": event_type,
        },
    )
    await webhooks.emit(
        session,
        msp_id=msp.id,
        event_type="msp.billing_status_changed",
        data={"msp_id": str(msp.id), "from": str(old), "to": str(new)},
    )
    log.info("msp_billing_status_changed", msp_id=str(msp.id), old=old, new=new)
