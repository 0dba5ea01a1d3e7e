"""Handling stored Stripe events: the MSP moves between active, past-due and suspended, each
move is audited, and no event is handled twice or out of order."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from safekeep.billing.events import Handled, handle_event, receive_event, requeue_unhandled
from safekeep.runtime import Runtime
from safekeep.tenants import outbox
from safekeep.tenants.models import AuditEvent, Msp, MspStatus, StripeEvent, utcnow
from tests.billing.conftest import encode, invoice, set_customer, signature, stripe_event
from tests.billing.conftest import subscription as sub
from tests.factories import MspHandle, create_msp
from tests.fixtures.app import SentMessages


async def deliver(runtime: Runtime, event: dict[str, Any]) -> Handled:
    """Store the event as the endpoint does, then handle it as the actor does."""
    with outbox.collect():
        async with runtime.db.session() as session:
            await receive_event(session, event)
    async with runtime.db.session() as session:
        return await handle_event(session, event["id"])


async def status_of(runtime: Runtime, msp: MspHandle) -> tuple[MspStatus, datetime | None]:
    async with runtime.db.session() as session:
        row = await session.get(Msp, msp.id)
        assert row is not None
        return row.status, row.status_changed_at


async def status_audits(runtime: Runtime, msp: MspHandle) -> list[AuditEvent]:
    async with runtime.db.session() as session:
        stmt = (
            select(AuditEvent)
            .where(AuditEvent.msp_id == msp.id, AuditEvent.action == "msp.billing_status_changed")
            .order_by(AuditEvent.created_at)
        )
        return list((await session.execute(stmt)).scalars())


@pytest.fixture
async def msps(billing_runtime: Runtime) -> tuple[MspHandle, str, MspHandle]:
    """An MSP with a Stripe customer, and another MSP (with its own) that must never move."""
    msp = await create_msp(billing_runtime, "Northwind IT")
    customer = await set_customer(billing_runtime, msp)
    other = await create_msp(billing_runtime, "Fabrikam IT")
    await set_customer(billing_runtime, other)
    return msp, customer, other


async def test_payment_failed_then_paid(
    billing_runtime: Runtime, msps: tuple[MspHandle, str, MspHandle]
) -> None:
    msp, customer, other = msps
    t0 = int(time.time()) - 100
    failed = stripe_event("invoice.payment_failed", invoice(customer), created=t0)
    assert await deliver(billing_runtime, failed) is Handled.changed
    status, changed_at = await status_of(billing_runtime, msp)
    assert status is MspStatus.past_due
    assert changed_at == datetime.fromtimestamp(t0, UTC)  # when Stripe saw it happen

    paid = stripe_event("invoice.paid", invoice(customer, status="paid"), created=t0 + 50)
    assert await deliver(billing_runtime, paid) is Handled.changed
    assert (await status_of(billing_runtime, msp))[0] is MspStatus.active

    audits = await status_audits(billing_runtime, msp)
    assert [(a.actor, a.target_id, a.details) for a in audits] == [
        (
            "stripe",
            str(msp.id),
            {
                "from": "active",
                "to": "past_due",
                "stripe_event_id": failed["id"],
                "stripe_event_type": "invoice.payment_failed",
            },
        ),
        (
            "stripe",
            str(msp.id),
            {
                "from": "past_due",
                "to": "active",
                "stripe_event_id": paid["id"],
                "stripe_event_type": "invoice.paid",
            },
        ),
    ]
    assert (await status_of(billing_runtime, other))[0] is MspStatus.active
    assert await status_audits(billing_runtime, other) == []


SUBSCRIPTION_CASES = [
    ("customer.subscription.deleted", "canceled", MspStatus.suspended, Handled.changed),
    ("customer.subscription.updated", "unpaid", MspStatus.suspended, Handled.changed),
    ("customer.subscription.updated", "canceled", MspStatus.suspended, Handled.changed),
    ("customer.subscription.updated", "paused", MspStatus.suspended, Handled.changed),
    ("customer.subscription.updated", "past_due", MspStatus.past_due, Handled.changed),
    ("customer.subscription.updated", "active", MspStatus.active, Handled.unchanged),
    ("customer.subscription.created", "trialing", MspStatus.active, Handled.unchanged),
    ("customer.subscription.updated", "incomplete", MspStatus.active, Handled.irrelevant),
]


async def test_subscription_events(billing_runtime: Runtime) -> None:
    """One MSP per case (in one database: cloning one per case would triple the time)."""
    for event_type, sub_status, expected, outcome in SUBSCRIPTION_CASES:
        msp = await create_msp(billing_runtime, f"{event_type} {sub_status}")
        customer = await set_customer(billing_runtime, msp)
        event = stripe_event(event_type, sub(customer, sub_status))
        case = (event_type, sub_status)
        assert await deliver(billing_runtime, event) is outcome, case
        assert (await status_of(billing_runtime, msp))[0] is expected, case


async def test_a_failed_payment_does_not_lift_a_suspension(
    billing_runtime: Runtime, msps: tuple[MspHandle, str, MspHandle]
) -> None:
    msp, customer, _ = msps
    t0 = int(time.time()) - 100
    deleted = stripe_event("customer.subscription.deleted", sub(customer, "canceled"), created=t0)
    assert await deliver(billing_runtime, deleted) is Handled.changed
    failed = stripe_event("invoice.payment_failed", invoice(customer), created=t0 + 10)
    assert await deliver(billing_runtime, failed) is Handled.unchanged
    assert (await status_of(billing_runtime, msp))[0] is MspStatus.suspended
    paid = stripe_event("invoice.paid", invoice(customer, status="paid"), created=t0 + 20)
    assert await deliver(billing_runtime, paid) is Handled.changed
    assert (await status_of(billing_runtime, msp))[0] is MspStatus.active


async def test_an_event_older_than_the_last_change_is_stale(
    billing_runtime: Runtime, msps: tuple[MspHandle, str, MspHandle]
) -> None:
    """Stripe does not promise order: a payment failure that arrives after the newer payment
    must not put the MSP back in arrears."""
    msp, customer, _ = msps
    t0 = int(time.time()) - 100
    failed = stripe_event("invoice.payment_failed", invoice(customer), created=t0 + 30)
    assert await deliver(billing_runtime, failed) is Handled.changed
    paid = stripe_event("invoice.paid", invoice(customer, status="paid"), created=t0 + 60)
    assert await deliver(billing_runtime, paid) is Handled.changed
    older_failure = stripe_event("invoice.payment_failed", invoice(customer), created=t0)
    assert await deliver(billing_runtime, older_failure) is Handled.stale
    assert (await status_of(billing_runtime, msp))[0] is MspStatus.active
    assert len(await status_audits(billing_runtime, msp)) == 2


async def test_an_event_is_handled_once(
    billing_runtime: Runtime, msps: tuple[MspHandle, str, MspHandle]
) -> None:
    msp, customer, _ = msps
    event = stripe_event("invoice.payment_failed", invoice(customer))
    assert await deliver(billing_runtime, event) is Handled.changed
    # A redelivered message (after the status was moved back by hand, say) changes nothing.
    async with billing_runtime.db.session() as session:
        row = await session.get(Msp, msp.id)
        assert row is not None
        row.status = MspStatus.active
    async with billing_runtime.db.session() as session:
        assert await handle_event(session, event["id"]) is Handled.already_handled
    assert (await status_of(billing_runtime, msp))[0] is MspStatus.active
    assert len(await status_audits(billing_runtime, msp)) == 1
    async with billing_runtime.db.session() as session:
        stored = await session.get(StripeEvent, event["id"])
        assert stored is not None
        assert stored.handled_at is not None


async def test_an_unknown_customer_is_handled_without_change(
    billing_runtime: Runtime, msps: tuple[MspHandle, str, MspHandle]
) -> None:
    msp, _, other = msps
    event = stripe_event("invoice.payment_failed", invoice("cus_nobody"))
    assert await deliver(billing_runtime, event) is Handled.no_msp
    assert (await status_of(billing_runtime, msp))[0] is MspStatus.active
    assert (await status_of(billing_runtime, other))[0] is MspStatus.active
    async with billing_runtime.db.session() as session:
        stored = await session.get(StripeEvent, event["id"])
        assert stored is not None
        assert stored.handled_at is not None  # nothing to retry


async def test_an_expanded_customer_object_is_understood(
    billing_runtime: Runtime, msps: tuple[MspHandle, str, MspHandle]
) -> None:
    msp, customer, _ = msps
    obj = {**invoice(customer), "customer": {"id": customer, "object": "customer"}}
    assert await deliver(billing_runtime, stripe_event("invoice.payment_failed", obj)) is (
        Handled.changed
    )
    assert (await status_of(billing_runtime, msp))[0] is MspStatus.past_due


async def test_an_unknown_event_id_is_not_found(billing_runtime: Runtime) -> None:
    async with billing_runtime.db.session() as session:
        assert await handle_event(session, "evt_never_stored") is Handled.not_found


async def test_suspension_by_webhook_pauses_writes_not_reads(
    billing_http: httpx.AsyncClient,
    billing_runtime: Runtime,
    sent: SentMessages,
    msps: tuple[MspHandle, str, MspHandle],
) -> None:
    """End to end: Stripe's signed webhook, the queued handling, then the API answers 402 to
    changes while reads go on."""
    msp, customer, other = msps
    body = encode(stripe_event("customer.subscription.deleted", sub(customer, "canceled")))
    r = await billing_http.post(
        "/v1/billing/stripe/webhook", content=body, headers={"Stripe-Signature": signature(body)}
    )
    assert r.status_code == 200
    [message] = sent.messages
    async with billing_runtime.db.session() as session:
        assert await handle_event(session, *message.args) is Handled.changed

    r = await billing_http.post("/v1/tenants", json={"name": "Contoso"}, headers=msp.headers)
    assert r.status_code == 402, r.text
    assert r.json()["type"].endswith("/account-suspended")
    r = await billing_http.get("/v1/billing", headers=msp.headers)
    assert r.status_code == 200
    assert r.json()["status"] == "suspended"
    r = await billing_http.post("/v1/tenants", json={"name": "Contoso"}, headers=other.headers)
    assert r.status_code == 201, r.text


async def test_two_concurrent_deliveries_handle_an_event_once(
    billing_runtime: Runtime, msps: tuple[MspHandle, str, MspHandle]
) -> None:
    """Dramatiq may deliver a message twice at once: the row lock lets one handle it."""
    msp, customer, _ = msps
    event = stripe_event("invoice.payment_failed", invoice(customer))
    with outbox.collect():
        async with billing_runtime.db.session() as session:
            await receive_event(session, event)

    async def handle() -> Handled:
        async with billing_runtime.db.session() as session:
            return await handle_event(session, event["id"])

    outcomes = await asyncio.gather(handle(), handle())
    assert sorted(outcomes) == [Handled.already_handled, Handled.changed]
    assert len(await status_audits(billing_runtime, msp)) == 1


async def test_events_whose_message_was_lost_are_sent_again(
    billing_runtime: Runtime, msps: tuple[MspHandle, str, MspHandle]
) -> None:
    """Stripe had its 2xx, so it will not redeliver: the inbox has to notice itself."""
    _msp, customer, _ = msps
    lost = stripe_event("invoice.payment_failed", invoice(customer))
    fresh = stripe_event("invoice.paid", invoice(customer))
    done = stripe_event("invoice.paid", invoice(customer))
    for event in (lost, fresh, done):
        with outbox.collect():  # the messages go nowhere, as with a broker outage
            async with billing_runtime.db.session() as session:
                await receive_event(session, event)
    async with billing_runtime.db.session() as session:
        await handle_event(session, done["id"])
        row = await session.get(StripeEvent, lost["id"])
        assert row is not None
        row.created_at = utcnow() - timedelta(minutes=11)
        handled = await session.get(StripeEvent, done["id"])
        assert handled is not None
        handled.created_at = utcnow() - timedelta(minutes=11)

    with outbox.collect() as box:
        async with billing_runtime.db.session() as session:
            assert await requeue_unhandled(session) == 1
    assert [(m.actor, m.args) for m in box.messages] == [("handle_stripe_event", (lost["id"],))]
