"""Daily usage: counted from real account rows, recorded once per MSP and day, sent to
stripe-mock once, and retried after a failure without resending what Stripe took."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from safekeep.billing import service
from safekeep.billing.stripe_client import BillingClient
from safekeep.billing.usage import (
    UsageOutcome,
    meter_identifier,
    meter_timestamp,
    report_due_usage,
    report_usage,
)
from safekeep.runtime import Runtime
from safekeep.tenants.models import (
    AccountKind,
    AccountState,
    AuditEvent,
    Msp,
    UsageReport,
    utcnow,
)
from tests.billing.conftest import StripeRecorder, set_customer
from tests.factories import MspHandle, create_account, create_msp, create_tenant, end_snapshot

METER_EVENTS = "/v1/billing/meter_events"


async def seat_world(runtime: Runtime) -> tuple[MspHandle, str, MspHandle]:
    """MSP A: 3 protected seats over two tenants and 1 retained seat, beside accounts that
    are no seat at all. MSP B: seats of its own that A's report must not count."""
    a = await create_msp(runtime, "Northwind IT")
    customer = await set_customer(runtime, a)
    t1 = await create_tenant(runtime, a, name="Contoso")
    t2 = await create_tenant(runtime, a, name="Litware")
    for name in ("Adele Vance", "Megan Bowen"):
        await end_snapshot(runtime, await create_account(runtime, t1, name=name), bytes_added=5000)
    await create_account(runtime, t2, name="Comms Site", kind=AccountKind.site)  # protected
    await create_account(runtime, t1, name="Lee Gu", protected=False)  # found, not protected
    retained = await create_account(runtime, t1, name="Alex Wilber", state=AccountState.cancelled)
    await end_snapshot(runtime, retained, bytes_added=700)  # cancelled with data: retained
    await create_account(runtime, t2, name="Diego Siciliani", state=AccountState.cancelled)
    purged = await create_account(runtime, t2, name="Isaiah Langer", state=AccountState.purged)
    await end_snapshot(runtime, purged, bytes_added=0)

    b = await create_msp(runtime, "Fabrikam IT")
    await set_customer(runtime, b)
    tb = await create_tenant(runtime, b, name="Fabrikam client")
    await create_account(runtime, tb, name="Pradeep Gupta")
    await end_snapshot(
        runtime, await create_account(runtime, tb, name="Nestor W", state=AccountState.cancelled)
    )
    return a, customer, b


async def reports(runtime: Runtime, msp: MspHandle) -> list[UsageReport]:
    async with runtime.db.session() as session:
        stmt = select(UsageReport).where(UsageReport.msp_id == msp.id).order_by(UsageReport.day)
        return list((await session.execute(stmt)).scalars())


async def report(
    runtime: Runtime, msp: MspHandle, day: date, client: BillingClient
) -> UsageOutcome:
    async with runtime.db.session() as session:
        return (await report_usage(session, msp.id, day, client=client)).outcome


def meter_forms(recorder: StripeRecorder) -> list[dict[str, str]]:
    return [r.form for r in recorder.requests if r.path == METER_EVENTS]


async def test_seats_are_counted_and_sent_once_per_day(
    billing_runtime: Runtime, billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    a, customer, _b = await seat_world(billing_runtime)
    day = utcnow().date() - timedelta(days=1)
    assert await report(billing_runtime, a, day, billing_client) is UsageOutcome.sent

    [row] = await reports(billing_runtime, a)
    assert (row.day, row.protected_seats, row.retained_seats, row.stored_bytes) == (
        day,
        3,
        1,
        10_700,
    )
    assert row.reported_at is not None
    noon = str(int(datetime.combine(day, datetime.min.time(), UTC).timestamp()) + 12 * 3600)
    assert meter_forms(stripe_recorder) == [
        {
            "event_name": "safekeep_protected_seats",
            "identifier": meter_identifier(a.id, day, "safekeep_protected_seats"),
            "timestamp": noon,
            "payload[stripe_customer_id]": customer,
            "payload[value]": "3",
        },
        {
            "event_name": "safekeep_retained_seats",
            "identifier": meter_identifier(a.id, day, "safekeep_retained_seats"),
            "timestamp": noon,
            "payload[stripe_customer_id]": customer,
            "payload[value]": "1",
        },
    ]
    assert all(r.status == 200 for r in stripe_recorder.requests)
    assert row.stripe_ids == {
        "safekeep_protected_seats": meter_identifier(a.id, day, "safekeep_protected_seats"),
        "safekeep_retained_seats": meter_identifier(a.id, day, "safekeep_retained_seats"),
    }

    # The same day again: nothing is sent, the recorded counts stay.
    await create_account(billing_runtime, await create_tenant(billing_runtime, a, name="New"))
    assert await report(billing_runtime, a, day, billing_client) is UsageOutcome.already_sent
    assert len(stripe_recorder.requests) == 2
    [again] = await reports(billing_runtime, a)
    assert (again.protected_seats, again.reported_at) == (3, row.reported_at)


async def test_a_stripe_failure_leaves_the_day_unsent_and_a_retry_sends_it(
    billing_runtime: Runtime,
    billing_client: BillingClient,
    unreachable_stripe: BillingClient,
    stripe_recorder: StripeRecorder,
) -> None:
    a, _customer, _b = await seat_world(billing_runtime)
    day = utcnow().date() - timedelta(days=1)
    assert await report(billing_runtime, a, day, unreachable_stripe) is UsageOutcome.failed
    [row] = await reports(billing_runtime, a)
    assert (row.protected_seats, row.retained_seats, row.reported_at, row.stripe_ids) == (
        3,
        1,
        None,
        {},
    )
    assert await report(billing_runtime, a, day, billing_client) is UsageOutcome.sent
    [row] = await reports(billing_runtime, a)
    assert row.reported_at is not None
    assert [f["payload[value]"] for f in meter_forms(stripe_recorder)] == ["3", "1"]


async def test_a_partial_failure_resends_only_what_stripe_did_not_take(
    billing_runtime: Runtime, billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    a, _customer, _b = await seat_world(billing_runtime)
    day = utcnow().date() - timedelta(days=2)
    stripe_recorder.fail = lambda path, form: form.get("event_name") == "safekeep_retained_seats"
    assert await report(billing_runtime, a, day, billing_client) is UsageOutcome.failed
    [row] = await reports(billing_runtime, a)
    assert row.reported_at is None
    assert list(row.stripe_ids) == ["safekeep_protected_seats"]

    stripe_recorder.fail = None
    assert await report(billing_runtime, a, day, billing_client) is UsageOutcome.sent
    sent = [(r.form["event_name"], r.status) for r in stripe_recorder.requests]
    assert sent == [
        ("safekeep_protected_seats", 200),
        ("safekeep_retained_seats", 503),
        ("safekeep_retained_seats", 200),
    ]


async def test_an_msp_without_a_customer_is_not_billed(
    billing_runtime: Runtime, billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    msp = await create_msp(billing_runtime, "Not billed")
    day = utcnow().date() - timedelta(days=1)
    assert await report(billing_runtime, msp, day, billing_client) is UsageOutcome.no_customer
    assert await reports(billing_runtime, msp) == []
    assert stripe_recorder.requests == []


async def test_a_future_day_is_refused(
    billing_runtime: Runtime, billing_client: BillingClient
) -> None:
    a, _customer, _b = await seat_world(billing_runtime)
    with pytest.raises(ValueError, match="future"):
        await report(billing_runtime, a, utcnow().date() + timedelta(days=1), billing_client)


def test_the_meter_timestamp_is_noon_of_the_day_but_never_ahead() -> None:
    day = date(2026, 11, 26)
    assert meter_timestamp(day, datetime(2026, 11, 27, 0, 5, tzinfo=UTC)) == datetime(
        2026, 11, 26, 12, tzinfo=UTC
    )
    early = datetime(2026, 11, 26, 8, tzinfo=UTC)
    assert meter_timestamp(day, early) == early
    assert len(meter_identifier(uuid.uuid4(), day, "safekeep_protected_seats")) <= 100


async def test_stored_bytes_beyond_32_bits_do_not_break_the_report(
    billing_runtime: Runtime, billing_client: BillingClient
) -> None:
    a = await create_msp(billing_runtime, "Big data")
    await set_customer(billing_runtime, a)
    tenant = await create_tenant(billing_runtime, a)
    account = await create_account(billing_runtime, tenant)
    await end_snapshot(billing_runtime, account, bytes_added=5 * 2**30)
    day = utcnow().date() - timedelta(days=1)
    assert await report(billing_runtime, a, day, billing_client) is UsageOutcome.sent
    [row] = await reports(billing_runtime, a)
    assert row.stored_bytes in (5 * 2**30, 2**31 - 1)  # 2**31 - 1 until the column is BIGINT


# --- The scheduler step -----------------------------------------------------------------------


async def test_the_daily_step_reports_yesterday_for_every_customer_once(
    billing_runtime: Runtime, billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    a, _customer, b = await seat_world(billing_runtime)
    await create_msp(billing_runtime, "No customer")
    today = utcnow().date()
    run = await report_due_usage(billing_runtime.db, billing_client, today=today)
    assert (run.sent, run.failed) == (2, 0)
    yesterday = today - timedelta(days=1)
    b_reports = await reports(billing_runtime, b)
    assert [(r.day, r.protected_seats, r.retained_seats) for r in b_reports] == [(yesterday, 1, 1)]
    assert len(await reports(billing_runtime, a)) == 1
    assert len(stripe_recorder.requests) == 4

    again = await report_due_usage(billing_runtime.db, billing_client, today=today)
    assert (again.sent, again.already_sent, again.failed) == (0, 0, 0)
    assert len(stripe_recorder.requests) == 4


async def test_the_daily_step_retries_unsent_days_within_the_window(
    billing_runtime: Runtime, billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    a, _customer, _b = await seat_world(billing_runtime)
    today = utcnow().date()
    # Days that Stripe did not take earlier: one inside the retry window, one too old.
    async with billing_runtime.db.session() as session:
        for ago in (5, 31):
            session.add(
                UsageReport(
                    msp_id=a.id,
                    day=today - timedelta(days=ago),
                    protected_seats=9,
                    retained_seats=0,
                    stored_bytes=0,
                    stripe_ids={},
                )
            )
    run = await report_due_usage(billing_runtime.db, billing_client, today=today)
    assert run.sent == 3  # A's day -5, then A's and B's yesterday
    by_day = {r.day: r for r in await reports(billing_runtime, a)}
    assert by_day[today - timedelta(days=5)].reported_at is not None
    assert by_day[today - timedelta(days=31)].reported_at is None
    # The retried day is sent with the counts taken then, not today's.
    assert meter_forms(stripe_recorder)[0]["payload[value]"] == "9"


async def test_the_daily_step_stops_at_the_first_outage(
    billing_runtime: Runtime, unreachable_stripe: BillingClient
) -> None:
    a, _customer, b = await seat_world(billing_runtime)
    run = await report_due_usage(billing_runtime.db, unreachable_stripe)
    assert (run.sent, run.failed) == (0, 1)
    counted = await reports(billing_runtime, a) + await reports(billing_runtime, b)
    assert len(counted) == 1
    assert counted[0].reported_at is None


async def test_the_daily_step_does_nothing_when_billing_is_off(
    billing_runtime: Runtime,
) -> None:
    a, _customer, _b = await seat_world(billing_runtime)
    run = await report_due_usage(billing_runtime.db, None)
    assert (run.sent, run.already_sent, run.failed) == (0, 0, 0)
    assert await reports(billing_runtime, a) == []


# --- Customers --------------------------------------------------------------------------------


async def test_ensure_customer_creates_one_once(
    billing_runtime: Runtime, billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    msp = await create_msp(billing_runtime, "New partner")
    async with billing_runtime.db.session() as session:
        first = await service.ensure_customer(session, billing_client, msp.id)
    async with billing_runtime.db.session() as session:
        second = await service.ensure_customer(session, billing_client, msp.id)
        row = await session.get(Msp, msp.id)
        assert row is not None
        audits = (
            await session.execute(
                select(AuditEvent).where(
                    AuditEvent.msp_id == msp.id,
                    AuditEvent.action == "msp.stripe_customer_created",
                )
            )
        ).scalars()
        [audit] = list(audits)
    assert first == second == row.stripe_customer_id
    assert first.startswith("cus_")
    assert audit.details == {"stripe_customer_id": first}
    assert stripe_recorder.paths() == ["/v1/customers"]
    assert stripe_recorder.requests[0].headers["idempotency-key"] == f"safekeep-customer-{msp.id}"


async def test_ensure_customer_keeps_nothing_when_stripe_is_down(
    billing_runtime: Runtime, unreachable_stripe: BillingClient
) -> None:
    from safekeep.billing.stripe_client import StripeUnavailable

    msp = await create_msp(billing_runtime, "New partner")
    with pytest.raises(StripeUnavailable):
        async with billing_runtime.db.session() as session:
            await service.ensure_customer(session, unreachable_stripe, msp.id)
    async with billing_runtime.db.session() as session:
        row = await session.get(Msp, msp.id)
        assert row is not None
        assert row.stripe_customer_id is None
