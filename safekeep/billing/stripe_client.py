"""A small adapter over the official ``stripe`` library: customers, meter events, webhook
signatures. Plain arguments in, plain values out; nothing here knows about our tables.

Usage goes to Stripe as **billing meter events** (``POST /v1/billing/meter_events``). The
legacy alternative, usage records on subscription items, was removed from the Stripe API in
2025-03-31.basil: the pinned library (16.1.0, API version 2026-10-28) has no method for it and
stripe-mock (v0.203) answers "Unrecognized request URL" for
``/v1/subscription_items/{id}/usage_records``, while both support meter events. A meter event
names the customer, so we need no subscription item ids either: the operator creates one meter
per event name below (aggregation ``last`` bills the seats of the period's last day, ``sum``
bills seat-days) and prices them in Stripe.

The library's HTTP client blocks, so every call runs in a worker thread (``asyncio.to_thread``);
its ``requests`` sessions are per thread, which makes one ``BillingClient`` safe to share.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stripe

from safekeep.settings import Settings

PROTECTED_SEATS_EVENT = "safekeep_protected_seats"
RETAINED_SEATS_EVENT = "safekeep_retained_seats"

# Stripe's own default; an older signature may be a replay.
SIGNATURE_TOLERANCE_SECONDS = 300
# Seconds to connect and to wait for an answer. Stripe answers in well under a second; a
# scheduler step must not hang on it for the library's default of 80 s.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0


class BillingError(Exception):
    """Stripe did not take a request. ``transient`` says whether trying again later may help."""

    transient: bool = False


class StripeUnavailable(BillingError):
    """No answer, a 5xx or a rate limit: Stripe (or the way to it) is down for everyone."""

    transient = True


class StripeRejected(BillingError):
    """A 4xx: this request is wrong (or the key is); repeating it unchanged will not help."""


class InvalidWebhook(Exception):
    """A webhook whose ``Stripe-Signature`` is missing, malformed, wrong or too old, or whose
    signed body is not a Stripe event."""


@dataclass(frozen=True)
class MeterEventReceipt:
    """What Stripe acknowledged: the identifier it deduplicates on and the event's time."""

    event_name: str
    identifier: str
    timestamp: int


def _wrap(exc: stripe.StripeError) -> BillingError:
    status = exc.http_status
    message = f"{type(exc).__name__}: {exc.user_message or exc}"
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError) or (
        status is not None and status >= 500
    ):
        return StripeUnavailable(message)
    return StripeRejected(message)


class BillingClient:
    """Stripe for one deployment (one API key). Every write carries an idempotency key, so the
    library's own network retries, and ours, never create anything twice."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 2,
    ) -> None:
        http_client = stripe.RequestsClient(timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=http_client,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> BillingClient | None:
        """The deployment's client, or None when billing is off (no API key)."""
        if settings.stripe_api_key is None:
            return None
        return _shared_client(settings.stripe_api_key.get_secret_value(), settings.stripe_api_base)

    async def create_customer(
        self, *, msp_id: uuid.UUID, name: str, email: str | None = None
    ) -> str:
        """A Stripe customer for an MSP. The idempotency key is the MSP's id, so a retry (ours
        or the library's) within Stripe's 24 hours returns the same customer."""
        params: dict[str, Any] = {"name": name, "metadata": {"safekeep_msp_id": str(msp_id)}}
        if email:
            params["email"] = email
        options: dict[str, Any] = {"idempotency_key": f"safekeep-customer-{msp_id}"}

        def call() -> str:
            customer = self._client.v1.customers.create(params, options)  # type: ignore[arg-type]
            return str(customer.id)

        return await self._run(call)

    async def send_meter_event(
        self,
        *,
        event_name: str,
        customer_id: str,
        value: int,
        timestamp: datetime,
        identifier: str,
    ) -> MeterEventReceipt:
        """One meter event. Stripe refuses a second event with the same ``identifier`` for at
        least 24 hours, and the idempotency key replays the first answer, so resending after
        an unclear failure is safe."""
        if value < 0:
            raise ValueError("a meter event value cannot be negative")
        epoch = int(timestamp.timestamp())
        params: dict[str, Any] = {
            "event_name": event_name,
            "identifier": identifier,
            "timestamp": epoch,
            "payload": {"stripe_customer_id": customer_id, "value": str(value)},
        }
        options: dict[str, Any] = {"idempotency_key": f"safekeep-meter-{identifier}"}

        def call() -> MeterEventReceipt:
            event = self._client.v1.billing.meter_events.create(params, options)  # type: ignore[arg-type]
            return MeterEventReceipt(
                event_name=str(event.event_name),
                identifier=str(event.identifier),
                timestamp=int(event.timestamp),
            )

        return await self._run(call)

    @staticmethod
    async def _run(call: Any) -> Any:
        try:
            return await asyncio.to_thread(call)
        except stripe.StripeError as exc:
            raise _wrap(exc) from exc


_clients: dict[tuple[str, str | None], BillingClient] = {}
_clients_lock = threading.Lock()


def _shared_client(api_key: str, api_base: str | None) -> BillingClient:
    """One client per key and base for the process, so its connections are reused."""
    with _clients_lock:
        client = _clients.get((api_key, api_base))
        if client is None:
            client = BillingClient(api_key, api_base=api_base)
            _clients[(api_key, api_base)] = client
        return client


def verify_webhook(
    payload: bytes,
    signature: str | None,
    secret: str,
    *,
    tolerance: int = SIGNATURE_TOLERANCE_SECONDS,
) -> dict[str, Any]:
    """The event, as Stripe sent it, once ``Stripe-Signature`` proves Stripe signed these exact
    bytes (HMAC-SHA256 under the endpoint's secret) within ``tolerance`` seconds.

    Verification runs over the raw body: parsing first and re-serialising would change the
    bytes and break the signature (or, worse, let a tampered body through)."""
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(str(exc).split(".")[0]) from exc
    except UnicodeDecodeError as exc:
        raise InvalidWebhook("The body is not UTF-8") from exc
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise InvalidWebhook("The signed body is not JSON") from exc
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
    ):
        raise InvalidWebhook("The signed body is not a Stripe event")
    return event
