"""The Stripe adapter against stripe-mock: what it sends is what Stripe's API document accepts,
with the idempotency keys that make retries safe; failures come back classified."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from safekeep.billing.stripe_client import (
    BillingClient,
    InvalidWebhook,
    StripeRejected,
    StripeUnavailable,
    verify_webhook,
)
from safekeep.settings import Settings
from tests.billing.conftest import (
    API_KEY,
    WEBHOOK_SECRET,
    StripeRecorder,
    encode,
    invoice,
    signature,
    stripe_event,
)


async def test_create_customer_is_accepted_with_an_idempotency_key_per_msp(
    billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    msp_id = uuid.uuid4()
    customer_id = await billing_client.create_customer(
        msp_id=msp_id, name="Northwind IT", email="billing@northwind.example"
    )
    assert customer_id.startswith("cus_")
    [request] = stripe_recorder.requests
    assert (request.method, request.path, request.status) == ("POST", "/v1/customers", 200)
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["idempotency-key"] == f"safekeep-customer-{msp_id}"
    assert request.form == {
        "name": "Northwind IT",
        "email": "billing@northwind.example",
        "metadata[safekeep_msp_id]": str(msp_id),
    }


async def test_create_customer_without_email_sends_none(
    billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    await billing_client.create_customer(msp_id=uuid.uuid4(), name="No Mail Ltd")
    assert "email" not in stripe_recorder.requests[0].form


async def test_meter_event_is_accepted_with_its_identifier(
    billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    at = datetime(2026, 11, 26, 12, tzinfo=UTC)
    receipt = await billing_client.send_meter_event(
        event_name="safekeep_protected_seats",
        customer_id="cus_test123",
        value=42,
        timestamp=at,
        identifier="sk-abc-20261126-protected_seats",
    )
    # stripe-mock echoes the identifier (and validated the rest against Stripe's schema).
    assert receipt.identifier == "sk-abc-20261126-protected_seats"
    [request] = stripe_recorder.requests
    assert (request.path, request.status) == ("/v1/billing/meter_events", 200)
    assert request.headers["idempotency-key"] == "safekeep-meter-sk-abc-20261126-protected_seats"
    assert request.form == {
        "event_name": "safekeep_protected_seats",
        "identifier": "sk-abc-20261126-protected_seats",
        "timestamp": str(int(at.timestamp())),
        "payload[stripe_customer_id]": "cus_test123",
        "payload[value]": "42",
    }


async def test_negative_meter_value_is_refused_before_sending(
    billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    with pytest.raises(ValueError, match="negative"):
        await billing_client.send_meter_event(
            event_name="safekeep_retained_seats",
            customer_id="cus_x",
            value=-1,
            timestamp=datetime.now(UTC),
            identifier="x",
        )
    assert stripe_recorder.requests == []


async def test_unreachable_stripe_is_transient(unreachable_stripe: BillingClient) -> None:
    with pytest.raises(StripeUnavailable) as caught:
        await unreachable_stripe.create_customer(msp_id=uuid.uuid4(), name="X")
    assert caught.value.transient


async def test_a_5xx_is_transient(
    billing_client: BillingClient, stripe_recorder: StripeRecorder
) -> None:
    stripe_recorder.fail = lambda path, form: True
    with pytest.raises(StripeUnavailable):
        await billing_client.send_meter_event(
            event_name="safekeep_protected_seats",
            customer_id="cus_x",
            value=1,
            timestamp=datetime.now(UTC),
            identifier="y",
        )


async def test_a_refused_key_is_not_transient(stripe_api_base: str) -> None:
    client = BillingClient("not_a_stripe_key", api_base=stripe_api_base, max_network_retries=0)
    with pytest.raises(StripeRejected) as caught:
        await client.create_customer(msp_id=uuid.uuid4(), name="X")
    assert not caught.value.transient


def test_from_settings_is_off_without_a_key_and_shared_with_one() -> None:
    assert BillingClient.from_settings(Settings(stripe_api_key=None)) is None
    on = Settings(stripe_api_key=API_KEY, stripe_api_base="http://127.0.0.1:1")
    first = BillingClient.from_settings(on)
    assert isinstance(first, BillingClient)
    assert BillingClient.from_settings(on) is first
    other = Settings(stripe_api_key=API_KEY, stripe_api_base="http://127.0.0.1:2")
    assert BillingClient.from_settings(other) is not first


# --- Webhook signatures -----------------------------------------------------------------------


def test_a_valid_signature_gives_the_event() -> None:
    event = stripe_event("invoice.paid", invoice("cus_1"))
    body = encode(event)
    assert verify_webhook(body, signature(body), WEBHOOK_SECRET) == event


def test_a_rotated_secret_is_accepted_among_several_signatures() -> None:
    body = encode(stripe_event("invoice.paid", invoice("cus_1")))
    t = int(time.time())
    old = signature(body, "whsec_old", t).split(",")[1]
    header = f"{signature(body, WEBHOOK_SECRET, t)},{old}"
    assert verify_webhook(body, header, WEBHOOK_SECRET)["type"] == "invoice.paid"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("tampered body", "No signatures found matching"),
        ("wrong secret", "No signatures found matching"),
        ("old timestamp", "Timestamp outside the tolerance zone"),
        ("missing header", "No Stripe-Signature header"),
        ("garbage header", "Unable to extract timestamp"),
        ("no v1 scheme", "No signatures found with expected scheme"),
    ],
)
def test_bad_signatures_are_refused(case: str, expected: str) -> None:
    body = encode(stripe_event("invoice.paid", invoice("cus_1")))
    header: str | None = signature(body)
    if case == "tampered body":
        body = body.replace(b"cus_1", b"cus_2")
    elif case == "wrong secret":
        header = signature(body, "whsec_someone_else")
    elif case == "old timestamp":
        header = signature(body, timestamp=int(time.time()) - 301)
    elif case == "missing header":
        header = None
    elif case == "garbage header":
        header = "not a signature"
    elif case == "no v1 scheme":
        header = signature(body).replace("v1=", "v0=")
    with pytest.raises(InvalidWebhook, match=expected):
        verify_webhook(body, header, WEBHOOK_SECRET)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"id": "evt_1"}', b'{"id": 5, "type": "invoice.paid"}', b"\xff"],
)
def test_a_signed_body_that_is_no_event_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidWebhook):
        verify_webhook(body, signature(body), WEBHOOK_SECRET)
