from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from safekeep.api.auth import KeyRequired
from safekeep.api.billing.schemas import BillingOut, StripeWebhookAck, UsageReportOut
from safekeep.api.deps import SessionDep, SettingsDep
from safekeep.api.problems import responses
from safekeep.billing import events, service
from safekeep.billing.stripe_client import InvalidWebhook, verify_webhook
from safekeep.errors import AppError, BadRequest, NotFound
from safekeep.tenants.scope import Principal, Scope

router = APIRouter(prefix="/v1/billing", tags=["Billing"])

# Billing is MSP-wide (every client's seats, the Stripe customer): a key limited to some
# tenants, as a client portal holds, must not read it.
BillingReader = Annotated[Principal, Depends(KeyRequired(Scope.read, unlimited=True))]

# Stripe's events are a few kilobytes; this leaves ample room and bounds what we buffer.
MAX_WEBHOOK_BYTES = 1024 * 1024


class InvalidStripeWebhook(
    BadRequest,
    slug="invalid-stripe-webhook",
    title="The Stripe signature is missing or does not match the body",
):
    pass


class StripeBillingDisabled(
    NotFound, slug="billing-disabled", title="Stripe billing is not enabled on this deployment"
):
    pass


class PayloadTooLarge(AppError, status=413, slug="payload-too-large", title="Payload too large"):
    pass


@router.get("", response_model=BillingOut, responses=responses(401, 403))
async def get_billing(
    principal: BillingReader, session: SessionDep, settings: SettingsDep
) -> BillingOut:
    """The MSP's billing status, its Stripe customer and the last 30 daily usage reports."""
    found = await service.overview(session, principal.msp_id)
    return BillingOut(
        status=found.status,
        status_changed_at=found.status_changed_at,
        billing_enabled=settings.stripe_api_key is not None,
        stripe_customer_id=found.stripe_customer_id,
        billing_email=found.billing_email,
        usage_reports=[UsageReportOut.model_validate(r) for r in found.usage_reports],
    )


async def _raw_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge(f"A Stripe event is at most {MAX_WEBHOOK_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            raise PayloadTooLarge(f"A Stripe event is at most {MAX_WEBHOOK_BYTES} bytes")
    return bytes(body)


@router.post(
    "/stripe/webhook",
    response_model=StripeWebhookAck,
    responses=responses(404, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A Stripe event, exactly as Stripe sent it (the signature covers "
            "these bytes)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def stripe_webhook(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    stripe_signature: Annotated[
        str | None,
        Header(description="`t=<unix seconds>,v1=<hex HMAC-SHA256>`, as Stripe signs"),
    ] = None,
) -> StripeWebhookAck:
    """Stripe's webhook endpoint. Public on purpose: the `Stripe-Signature` over the raw body
    is the authentication. Each event is stored once and handled by a worker; a repeated
    delivery is acknowledged and changes nothing."""
    if settings.stripe_webhook_secret is None:
        raise StripeBillingDisabled("Set SAFEKEEP_STRIPE_WEBHOOK_SECRET to receive Stripe events")
    body = await _raw_body(request)
    try:
        event = verify_webhook(
            body, stripe_signature, settings.stripe_webhook_secret.get_secret_value()
        )
    except InvalidWebhook as exc:
        raise InvalidStripeWebhook(str(exc)) from exc
    result = await events.receive_event(session, event)
    return StripeWebhookAck(event_id=event["id"], result=result)
