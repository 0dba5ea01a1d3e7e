from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import APIRouter, Query, status

from safekeep.api.auth import MspAdminPrincipal
from safekeep.api.deps import ClientIp, SessionDep, SettingsDep
from safekeep.api.idempotency import idempotent
from safekeep.api.problems import responses
from safekeep.api.schemas import Page, Paging, extended, page_of
from safekeep.api.webhooks.schemas import (
    DeliveryOut,
    Recovered,
    Recovery,
    SecretRotation,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookUpdate,
)
from safekeep.tenants.models import DeliveryStatus
from safekeep.tenants.webhook import service

router = APIRouter(prefix="/v1/webhooks", tags=["Webhooks"])


@router.get("", response_model=Page[WebhookOut], responses=responses(400, 401, 403, 422))
async def list_webhooks(
    principal: MspAdminPrincipal, session: SessionDep, paging: Paging
) -> Page[WebhookOut]:
    page = await paging.read(service.list_endpoints, session, principal)
    return page_of(page, WebhookOut.model_validate)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses=responses(401, 403, 409, 422),
)
@idempotent(201, shown_once=("secret",))
async def create_webhook(
    body: WebhookCreate,
    principal: MspAdminPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    ip: ClientIp,
) -> WebhookCreated:
    """Subscribe a URL to events. Deliveries are signed, retried with backoff and recorded."""
    endpoint, secret = await service.create_endpoint(
        session, principal, settings, **body.model_dump(mode="json"), ip=ip
    )
    return extended(WebhookCreated, WebhookOut.model_validate(endpoint), secret=secret)


@router.get("/{webhook_id}", response_model=WebhookOut, responses=responses(401, 403, 404, 422))
async def get_webhook(
    webhook_id: uuid.UUID, principal: MspAdminPrincipal, session: SessionDep
) -> WebhookOut:
    return WebhookOut.model_validate(await service.get_endpoint(session, principal, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut, responses=responses(401, 403, 404, 422))
async def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookUpdate,
    principal: MspAdminPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    ip: ClientIp,
) -> WebhookOut:
    """Change the URL, the events or the description (fields left out stay). Deliveries not
    yet sent go to the new URL, which is checked as a new endpoint's is; events apply to
    what happens from now on. The id, the secret and the deliveries' record stay."""
    endpoint = await service.update_endpoint(
        session,
        principal,
        settings,
        webhook_id,
        body.model_dump(mode="json", exclude_unset=True),
        ip=ip,
    )
    return WebhookOut.model_validate(endpoint)


@router.post(
    "/{webhook_id}/secret",
    response_model=WebhookCreated,
    responses=responses(401, 403, 404, 409, 422),
)
@idempotent(200, shown_once=("secret",))
async def rotate_secret(
    webhook_id: uuid.UUID,
    principal: MspAdminPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    ip: ClientIp,
    body: SecretRotation | None = None,
) -> WebhookCreated:
    """A new signing secret, shown once, which signs every delivery from now on. The secret
    it replaces signs beside it for `previous_secret_expires_in` seconds (default a day, at
    most 7; 0 for a leaked one), so a receiver can switch without refusing a delivery; a
    second rotation within that time ends the first one's overlap. The body is optional."""
    body = body or SecretRotation()
    endpoint, secret = await service.rotate_secret(
        session,
        principal,
        settings,
        webhook_id,
        overlap=timedelta(seconds=body.previous_secret_expires_in),
        ip=ip,
    )
    return extended(WebhookCreated, WebhookOut.model_validate(endpoint), secret=secret)


@router.delete(
    "/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(401, 403, 404, 422)
)
async def delete_webhook(
    webhook_id: uuid.UUID, principal: MspAdminPrincipal, session: SessionDep, ip: ClientIp
) -> None:
    await service.delete_endpoint(session, principal, webhook_id, ip=ip)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=Page[DeliveryOut],
    responses=responses(400, 401, 403, 404, 422),
)
async def list_deliveries(
    webhook_id: uuid.UUID,
    principal: MspAdminPrincipal,
    session: SessionDep,
    paging: Paging,
    status: DeliveryStatus | None = Query(None, description="Only deliveries in this state"),
) -> Page[DeliveryOut]:
    page = await paging.read(service.list_deliveries, session, principal, webhook_id, status=status)
    return page_of(page, DeliveryOut.model_validate)


@router.post(
    "/{webhook_id}/recover",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Recovered,
    responses=responses(401, 403, 404, 422),
)
async def recover(
    webhook_id: uuid.UUID,
    body: Recovery,
    principal: MspAdminPrincipal,
    session: SessionDep,
    ip: ClientIp,
) -> Recovered:
    """Send again every failed delivery made since an instant (a receiver back from an
    outage that outlasted the retries), each as `redeliver` sends one: the same event and
    `webhook-id`, the whole retry schedule ahead. Oldest first, at most 1,000 a call: call
    again until `scheduled` is 0. Pending and delivered ones are left as they are."""
    scheduled = await service.recover(session, principal, webhook_id, body.since, ip=ip)
    return Recovered(scheduled=scheduled)


@router.post(
    "/{webhook_id}/ping",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    responses=responses(401, 403, 404, 422),
)
async def ping_webhook(
    webhook_id: uuid.UUID, principal: MspAdminPrincipal, session: SessionDep, ip: ClientIp
) -> DeliveryOut:
    """Send this endpoint a `webhook.ping` event now (`data`: `{"webhook_id"}`), whatever it
    subscribes to: a check that the receiver is reachable and verifies signatures before
    a real event comes. Delivered, signed and retried like any event; its delivery is
    answered here and listed with the others."""
    return DeliveryOut.model_validate(await service.ping(session, principal, webhook_id, ip=ip))


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    responses=responses(401, 403, 404, 409, 422),
)
async def redeliver(
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    principal: MspAdminPrincipal,
    session: SessionDep,
    ip: ClientIp,
) -> DeliveryOut:
    """Send a delivered or failed delivery again (after a receiver's outage outlasted the
    retries, or it lost what it received): the same event and `webhook-id`, a new timestamp
    and signature, and the whole retry schedule (30 s, 2 min, 10 min, 1 h, 6 h) ahead of it.
    409 while the delivery is still pending."""
    delivery = await service.redeliver(session, principal, webhook_id, delivery_id, ip=ip)
    return DeliveryOut.model_validate(delivery)
