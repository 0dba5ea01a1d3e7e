"""Sending one webhook attempt. The record decides the backoff; this sends and reschedules.

The target is checked and pinned by ``tenants.webhook.target``: a refused one is recorded on the
delivery and nothing is sent. The receiver's answer body is never read (only its status), and
the whole attempt, from connecting to the answer's head, has one deadline.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import structlog

from safekeep.runtime import unit_of_work
from safekeep.tenants import outbox
from safekeep.tenants.models import DeliveryStatus
from safekeep.tenants.webhook import repository, service
from safekeep.tenants.webhook.target import TargetRefused, TargetUnresolved, resolve_target
from safekeep.workers.context import current_runtime

log = structlog.get_logger(__name__)

TIMEOUT_SECONDS = 10.0


async def deliver(delivery_id: str) -> None:
    runtime = current_runtime()
    async with unit_of_work(runtime) as session:
        delivery = await repository.get_delivery(session, uuid.UUID(delivery_id))
        if delivery is None or delivery.status != DeliveryStatus.pending:
            return
        endpoint = await repository.get_endpoint_system(session, delivery.endpoint_id)
        if endpoint is None or endpoint.deleted_at is not None:
            delivery.status = DeliveryStatus.failed
            delivery.last_error = "the webhook endpoint was deleted"
            return
        body, headers = service.render(runtime.settings, endpoint, delivery)
        url = endpoint.url
    status_code: int | None = None
    error: str | None = None
    try:
        target = await resolve_target(runtime.settings, url)
    except TargetRefused as refused:
        async with unit_of_work(runtime) as session:
            delivery = await repository.get_delivery(session, uuid.UUID(delivery_id))
            if delivery is not None and delivery.status == DeliveryStatus.pending:
                service.record_refusal(delivery, refused.reason)
        log.warning("webhook_refused", delivery_id=delivery_id, reason=refused.detail)
        return
    except TargetUnresolved as exc:
        log.info("webhook_unresolved", delivery_id=delivery_id, reason=exc.detail)
        error = str(exc)
    else:
        try:
            # trust_env=False: no proxy from the environment may stand between the checked
            # address and the connection. httpx's timeout bounds each read, so a receiver
            # that drips its answer would hold the worker for as long as it liked: the
            # attempt as a whole has the same deadline.
            async with (
                asyncio.timeout(TIMEOUT_SECONDS),
                httpx.AsyncClient(
                    timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
                ) as http,
                http.stream(
                    "POST",
                    target.pinned_url,
                    content=body,
                    headers={**headers, **target.headers},
                    extensions=target.extensions,
                ) as response,
            ):
                status_code = response.status_code
            if 300 <= status_code < 400:
                error = f"HTTP {status_code}: redirects are not followed"
            elif not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except TimeoutError:
            error = f"TimeoutError: no whole answer within {TIMEOUT_SECONDS:g} s"
    async with unit_of_work(runtime) as session:
        delivery = await repository.get_delivery(session, uuid.UUID(delivery_id))
        if delivery is None or delivery.status != DeliveryStatus.pending:
            return
        delay = service.record_attempt(delivery, status_code=status_code, error=error)
        if delay is not None:
            outbox.enqueue("deliver_webhook", delivery_id, delay_ms=delay * 1000)
    log.info(
        "webhook_attempt",
        delivery_id=delivery_id,
        status_code=status_code,
        error=error,
        retry_in_seconds=delay,
    )
