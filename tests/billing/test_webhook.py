"""POST /v1/billing/stripe/webhook: public, signed, stored once, handled after commit."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from sqlalchemy import func, select

from safekeep.runtime import Runtime
from safekeep.tenants.models import StripeEvent
from tests.billing.conftest import (
    app_with_billing,
    billing_settings,
    encode,
    invoice,
    signature,
    stripe_event,
    subscription,
)
from tests.fixtures.app import SentMessages

URL = "/v1/billing/stripe/webhook"
PROBLEM = "application/problem+json"


async def post(client: httpx.AsyncClient, body: bytes, header: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return await client.post(URL, content=body, headers=headers)


async def stored(runtime: Runtime) -> list[StripeEvent]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(StripeEvent))).scalars())


async def test_a_signed_event_is_stored_and_its_handling_sent_after_commit(
    billing_http: httpx.AsyncClient, billing_runtime: Runtime, sent: SentMessages
) -> None:
    event = stripe_event("invoice.payment_failed", invoice("cus_abc"))
    body = encode(event)
    r = await post(billing_http, body, signature(body))  # no API key: the signature is the auth
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "event_id": event["id"], "result": "queued"}
    [row] = await stored(billing_runtime)
    assert (row.id, row.type, row.handled_at) == (event["id"], "invoice.payment_failed", None)
    assert row.payload == event
    assert [(m.actor, m.args) for m in sent.messages] == [("handle_stripe_event", (event["id"],))]


async def test_a_duplicate_delivery_is_acknowledged_and_changes_nothing(
    billing_http: httpx.AsyncClient, billing_runtime: Runtime, sent: SentMessages
) -> None:
    event = stripe_event("customer.subscription.deleted", subscription("cus_abc", "canceled"))
    body = encode(event)
    first = await post(billing_http, body, signature(body))
    # Stripe re-signs a retry with a new timestamp; the event id is what makes it the same.
    again = await post(billing_http, body, signature(body, timestamp=int(time.time()) - 60))
    assert first.json()["result"] == "queued"
    assert again.status_code == 200
    assert again.json()["result"] == "duplicate"
    assert len(await stored(billing_runtime)) == 1
    assert sent.actors() == ["handle_stripe_event"]


async def test_an_event_type_we_do_not_act_on_is_acknowledged_not_stored(
    billing_http: httpx.AsyncClient, billing_runtime: Runtime, sent: SentMessages
) -> None:
    body = encode(stripe_event("charge.succeeded", {"id": "ch_1", "customer": "cus_abc"}))
    r = await post(billing_http, body, signature(body))
    assert r.status_code == 200
    assert r.json()["result"] == "ignored"
    assert await stored(billing_runtime) == []
    assert sent.messages == []


async def test_bad_signatures_are_400_and_store_nothing(
    billing_http: httpx.AsyncClient, billing_runtime: Runtime, sent: SentMessages
) -> None:
    body = encode(stripe_event("invoice.paid", invoice("cus_abc")))
    cases = {
        "tampered": (body.replace(b"cus_abc", b"cus_xyz"), signature(body)),
        "wrong secret": (body, signature(body, "whsec_not_ours")),
        "old": (body, signature(body, timestamp=int(time.time()) - 3600)),
        "missing": (body, None),
        "unsigned garbage": (b"{not json", "t=1,v1=00"),
    }
    for case, (payload, header) in cases.items():
        r = await post(billing_http, payload, header)
        assert r.status_code == 400, (case, r.text)
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["type"].endswith("/invalid-stripe-webhook"), case
    assert await stored(billing_runtime) == []
    assert sent.messages == []


async def test_a_signed_body_that_is_no_event_is_400(
    billing_http: httpx.AsyncClient, billing_runtime: Runtime
) -> None:
    body = b'{"hello": "world"}'
    r = await post(billing_http, body, signature(body))
    assert r.status_code == 400
    assert "not a Stripe event" in r.json()["detail"]
    assert await stored(billing_runtime) == []


async def test_an_oversized_body_is_413(
    billing_http: httpx.AsyncClient, billing_runtime: Runtime
) -> None:
    event = stripe_event("invoice.paid", {**invoice("cus_abc"), "pad": "x" * 1_100_000})
    body = encode(event)
    r = await post(billing_http, body, signature(body))
    assert r.status_code == 413
    assert r.headers["content-type"] == PROBLEM
    assert await stored(billing_runtime) == []


async def test_without_a_webhook_secret_the_endpoint_is_404(
    tmp_path: Path, postgres_url: str, stripe_api_base: str, sent: SentMessages
) -> None:
    runtime = Runtime.build(
        billing_settings(tmp_path, postgres_url, stripe_api_base, webhook_secret=None), send=sent
    )
    try:
        transport = httpx.ASGITransport(app=app_with_billing(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://safekeep.test") as c:
            body = encode(stripe_event("invoice.paid", invoice("cus_abc")))
            r = await post(c, body, signature(body))
        assert r.status_code == 404
        assert r.json()["type"].endswith("/billing-disabled")
        async with runtime.db.session() as session:
            count = (await session.execute(select(func.count(StripeEvent.id)))).scalar_one()
        assert count == 0
    finally:
        await runtime.close()
