"""Outgoing webhooks: endpoints, signed deliveries, retries with backoff, a record of each.

Signature (documented in the OpenAPI description): header
``Safekeep-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``; a
receiver recomputes it over the raw body and rejects timestamps older than five minutes.

The same delivery also follows the Standard Webhooks specification (standardwebhooks.com), so a
partner can verify it with that project's libraries instead of code of their own:
``webhook-id`` (the delivery's id, the same on every retry), ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>`` where the key
is the base64 after the secret's ``whsec_`` prefix.

Rotation (``rotate_secret``): an endpoint's new secret signs at once, and the one it replaced
keeps signing beside it until the overlap a partner chose ends: both headers then carry two
signatures, the new one first (``t=..,v1=<new>,v1=<old>`` and ``v1,<new> v1,<old>``, the forms
Stripe's and the Standard Webhooks libraries accept when any one of them matches).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.errors import Conflict, NotFound
from safekeep.settings import Settings
from safekeep.tenants import outbox
from safekeep.tenants.audit import service as audit
from safekeep.tenants.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, utcnow
from safekeep.tenants.pagination import Page
from safekeep.tenants.scope import Principal
from safekeep.tenants.secrets import seal, unseal_with_any
from safekeep.tenants.webhook import repository, target

# The events an endpoint can subscribe to; the API's request schema takes this type as it is.
EventType = Literal[
    "backup.completed",
    "backup.failed",
    "restore.completed",
    "export.ready",
    "tenant.consent_revoked",
    "account.cancelled",
    "msp.billing_status_changed",
    "tenant.ransomware_suspected",
    "tenant.mass_deletion_suspected",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
PING = "webhook.ping"  # sent on request to one endpoint (``ping``); not subscribed to
SIGNATURE_HEADER = "Safekeep-Signature"
# Backoff between attempts: 30 s, 2 min, 10 min, 1 h, 6 h; then the delivery is failed.
RETRY_DELAYS = (30, 120, 600, 3600, 6 * 3600)
# How long a settled delivery (delivered or failed) stays listed and can be redelivered.
DELIVERY_RETENTION = timedelta(days=30)
PRUNE_BATCH = 5000  # deliveries deleted at most per scheduler tick
RECOVER_BATCH = 1000  # failed deliveries sent again at most per recover request


async def prune_deliveries(session: AsyncSession) -> int:
    """Settled deliveries older than ``DELIVERY_RETENTION`` deleted (a batch a tick): each
    event's payload is kept once per endpoint, and an MSP's list would otherwise grow with
    every backup for as long as the deployment runs."""
    return await repository.delete_settled_before(
        session, utcnow() - DELIVERY_RETENTION, PRUNE_BATCH
    )


def sign(signing: Sequence[str], timestamp: int, body: bytes) -> str:
    """The ``Safekeep-Signature`` value: one ``v1`` per secret, in the order given."""
    macs = (
        hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        for secret in signing
    )
    return f"t={timestamp}," + ",".join(f"v1={mac}" for mac in macs)


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value.

    Secrets made since this header exists are standard base64 (what the specification's libraries
    decode). Older ones were urlsafe base64: decoding with either alphabet gives the same key for
    both, and a partner holding an old secret with ``-`` or ``_`` in it should replace the
    endpoint to verify with an off-the-shelf library.
    """
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        key = secret.encode()  # not base64 at all: sign with the secret as it is
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


# How long a rotated secret may keep signing beside its successor, at most.
MAX_SECRET_OVERLAP = timedelta(days=7)


def _context(endpoint_id: uuid.UUID) -> str:
    return f"webhook:{endpoint_id}:secret"


def _new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def create_endpoint(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    *,
    url: str,
    events: Sequence[str],
    description: str | None,
    ip: str | None = None,
) -> tuple[WebhookEndpoint, str]:
    target.check_url(settings, url)
    endpoint_id = uuid.uuid4()
    secret = _new_secret()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        msp_id=principal.msp_id,
        url=url,
        events=sorted(set(events)),
        description=description,
        secret_sealed=seal(settings.master_key_bytes, secret, context=_context(endpoint_id)),
    )
    session.add(endpoint)
    await session.flush()
    await _audited(
        session,
        principal,
        "created",
        endpoint.id,
        ip=ip,
        details={"url": target.origin_of(url), "events": endpoint.events},
    )
    return endpoint, secret


async def list_endpoints(
    session: AsyncSession, principal: Principal, *, cursor: str | None, limit: int
) -> Page[WebhookEndpoint]:
    return await repository.list_endpoints(session, principal.msp_id, cursor=cursor, limit=limit)


async def get_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: uuid.UUID
) -> WebhookEndpoint:
    endpoint = await repository.get_endpoint(session, principal.msp_id, endpoint_id)
    if endpoint is None:
        raise NotFound("No such webhook")
    return endpoint


async def update_endpoint(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    endpoint_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    ip: str | None = None,
) -> WebhookEndpoint:
    """The endpoint's url, events or description changed (only those given). Deliveries not
    yet sent go to the new url; the events apply to events emitted from now on."""
    if "url" in changes:
        target.check_url(settings, changes["url"])
    endpoint = await get_endpoint(session, principal, endpoint_id)
    if not changes:
        return endpoint
    if "url" in changes:
        endpoint.url = changes["url"]
    if "events" in changes:
        endpoint.events = sorted(set(changes["events"]))
    if "description" in changes:
        endpoint.description = changes["description"]
    await session.flush()
    details: dict[str, Any] = {"fields": sorted(changes)}
    if "url" in changes:
        details["url"] = target.origin_of(endpoint.url)
    if "events" in changes:
        details["events"] = endpoint.events
    await _audited(session, principal, "updated", endpoint.id, ip=ip, details=details)
    return endpoint


async def rotate_secret(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    endpoint_id: uuid.UUID,
    *,
    overlap: timedelta,
    ip: str | None = None,
) -> tuple[WebhookEndpoint, str]:
    """A new signing secret for the endpoint, returned once; the secret it replaces signs
    beside it for ``overlap`` (none: it stops now). A rotation during another's overlap ends
    that one: only the secret being replaced is kept. Racing rotations of one endpoint each
    replace what the one before them set (``repository.replace_secret``), so each caller's
    secret is the current or the previous one when its answer is sent."""
    if not timedelta(0) <= overlap <= MAX_SECRET_OVERLAP:
        raise ValueError(f"overlap {overlap} outside 0..{MAX_SECRET_OVERLAP}")
    secret = _new_secret()
    sealed = seal(settings.master_key_bytes, secret, context=_context(endpoint_id))
    until = utcnow() + overlap if overlap else None
    endpoint = await repository.replace_secret(
        session, principal.msp_id, endpoint_id, sealed, previous_until=until
    )
    if endpoint is None:
        raise NotFound("No such webhook")
    await _audited(
        session,
        principal,
        "secret_rotated",
        endpoint.id,
        ip=ip,
        details={"previous_secret_expires_at": _iso(endpoint.previous_secret_expires_at)},
    )
    return endpoint, secret


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant is not None else None


async def _audited(
    session: AsyncSession,
    principal: Principal,
    action: str,
    endpoint_id: uuid.UUID,
    *,
    ip: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """``webhook.<action>`` in the MSP's audit log, about one endpoint."""
    await audit.record_for(
        session,
        principal,
        f"webhook.{action}",
        target_type="webhook",
        target_id=endpoint_id,
        details=details,
        ip=ip,
    )


async def delete_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: uuid.UUID, *, ip: str | None = None
) -> None:
    endpoint = await get_endpoint(session, principal, endpoint_id)
    endpoint.deleted_at = utcnow()
    await session.flush()
    await _audited(session, principal, "deleted", endpoint.id, ip=ip)


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: uuid.UUID,
    *,
    status: DeliveryStatus | None = None,
    cursor: str | None,
    limit: int,
) -> Page[WebhookDelivery]:
    await get_endpoint(session, principal, endpoint_id)
    return await repository.list_deliveries(
        session, principal.msp_id, endpoint_id, status=status, cursor=cursor, limit=limit
    )


async def recover(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: uuid.UUID,
    since: datetime,
    *,
    ip: str | None = None,
) -> int:
    """The endpoint's failed deliveries made since ``since`` sent again, as ``redeliver``
    sends one (the same event and ``webhook-id``, the whole retry schedule ahead), at most
    ``RECOVER_BATCH`` a call, oldest first; how many. What a partner does once a receiver
    is back from an outage longer than the retries: call again until it answers 0."""
    await get_endpoint(session, principal, endpoint_id)
    ids = await repository.schedule_failed_since(
        session, principal.msp_id, endpoint_id, since, utcnow(), RECOVER_BATCH
    )
    await _audited(
        session,
        principal,
        "recovered",
        endpoint_id,
        ip=ip,
        details={"since": since.isoformat(), "scheduled": len(ids)},
    )
    for delivery_id in ids:
        outbox.enqueue("deliver_webhook", str(delivery_id))
    return len(ids)


async def redeliver(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: uuid.UUID,
    delivery_id: uuid.UUID,
    *,
    ip: str | None = None,
) -> WebhookDelivery:
    """A delivered or failed delivery sent again now, with the whole retry schedule ahead of
    it: the same event, body and ``webhook-id`` (so a receiver that kept the first copy can
    tell), a fresh timestamp and signature. 409 while it is still pending."""
    await get_endpoint(session, principal, endpoint_id)
    delivery = await repository.get_endpoint_delivery(
        session, principal.msp_id, endpoint_id, delivery_id
    )
    if delivery is None:
        raise NotFound("No such delivery")
    if not await repository.schedule_again(session, delivery.id, utcnow()):
        raise Conflict("This delivery is pending: its next attempt is already scheduled")
    await session.refresh(delivery)
    await _audited(
        session,
        principal,
        "redelivered",
        endpoint_id,
        ip=ip,
        details={"delivery_id": str(delivery.id), "event_id": str(delivery.event_id)},
    )
    outbox.enqueue("deliver_webhook", str(delivery.id))
    return delivery


async def emit(
    session: AsyncSession, *, msp_id: uuid.UUID, event_type: str, data: dict[str, Any]
) -> list[WebhookDelivery]:
    """Record one delivery per subscribed endpoint and enqueue each after commit."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    endpoints = await repository.endpoints_for_event(session, msp_id, event_type)
    return await _send(session, endpoints, event_type, data)


async def ping(
    session: AsyncSession, principal: Principal, endpoint_id: uuid.UUID, *, ip: str | None = None
) -> WebhookDelivery:
    """A ``webhook.ping`` event to this endpoint alone, whatever it subscribes to: how a
    partner checks a receiver (reachable, verifying signatures) before a real event comes."""
    endpoint = await get_endpoint(session, principal, endpoint_id)
    (delivery,) = await _send(session, [endpoint], PING, {"webhook_id": str(endpoint.id)})
    await _audited(
        session, principal, "pinged", endpoint.id, ip=ip, details={"delivery_id": str(delivery.id)}
    )
    return delivery


async def _send(
    session: AsyncSession,
    endpoints: Sequence[WebhookEndpoint],
    event_type: str,
    data: dict[str, Any],
) -> list[WebhookDelivery]:
    """One event: a delivery per endpoint, each enqueued after commit."""
    event_id = uuid.uuid4()
    now = utcnow()
    payload = {"id": str(event_id), "type": event_type, "created": now.isoformat(), "data": data}
    deliveries = [
        WebhookDelivery(
            endpoint_id=endpoint.id,
            msp_id=endpoint.msp_id,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            next_attempt_at=now,
        )
        for endpoint in endpoints
    ]
    session.add_all(deliveries)
    await session.flush()
    for delivery in deliveries:
        outbox.enqueue("deliver_webhook", str(delivery.id))
    return deliveries


def render(
    settings: Settings, endpoint: WebhookEndpoint, delivery: WebhookDelivery
) -> tuple[bytes, dict[str, str]]:
    """The exact body and headers of one attempt: signed with the endpoint's secret, and
    with the one it replaced while their overlap lasts."""
    now = utcnow()
    signing = signing_secrets(settings, endpoint, now)
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(now.timestamp())
    message_id = str(delivery.id)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Safekeep-Webhooks/1",
        SIGNATURE_HEADER: sign(signing, timestamp, body),
        "Safekeep-Event-Id": str(delivery.event_id),
        "Safekeep-Event-Type": delivery.event_type,
        "Safekeep-Delivery-Id": str(delivery.id),
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(secret, message_id, timestamp, body) for secret in signing
        ),
    }
    return body, headers


def signing_secrets(settings: Settings, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a delivery sent at ``now`` is signed with: the endpoint's, then the one a
    rotation replaced while its overlap lasts."""
    sealed = [endpoint.secret_sealed]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_sealed is not None and expires is not None and now < expires:
        sealed.append(endpoint.previous_secret_sealed)
    context = _context(endpoint.id)
    return [unseal_with_any(settings.master_keys, one, context=context) for one in sealed]


def record_refusal(delivery: WebhookDelivery, reason: str) -> None:
    """A target outside the public internet: nothing was sent, and retrying cannot help."""
    delivery.attempts += 1
    delivery.last_status_code = None
    delivery.last_error = reason[:2000]
    delivery.status = DeliveryStatus.failed
    delivery.next_attempt_at = None


def record_attempt(
    delivery: WebhookDelivery, *, status_code: int | None, error: str | None
) -> int | None:
    """Update the delivery after one attempt; returns the delay before the next one, if any."""
    now = utcnow()
    delivery.attempts += 1
    delivery.last_status_code = status_code
    delivery.last_error = error[:2000] if error else None
    if status_code is not None and 200 <= status_code < 300:
        delivery.status = DeliveryStatus.delivered
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        return None
    if delivery.attempts > len(RETRY_DELAYS):
        delivery.status = DeliveryStatus.failed
        delivery.next_attempt_at = None
        return None
    delay = RETRY_DELAYS[delivery.attempts - 1]
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    return delay
