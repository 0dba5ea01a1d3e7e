"""Microsoft Graph's change notifications reach us here; MSPs read subscription state here.

The two Graph endpoints are public on purpose (Graph has no API key): the validation
handshake echoes the token, and a notification is authenticated by the ``clientState``
secret of its subscription. They answer 202 at once after one short database write; the
backup a notification causes is started later by the scheduler, debounced.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.api.auth import ReadPrincipal
from safekeep.api.deps import SessionDep
from safekeep.api.notifications.schemas import GraphNoticeBatch, SubscriptionOut
from safekeep.api.problems import responses
from safekeep.api.schemas import Page, Paging, page_of
from safekeep.errors import BadRequest
from safekeep.tenants.models import SubscriptionStatus
from safekeep.tenants.subscription import service
from safekeep.tenants.subscription.service import Notice

router = APIRouter(tags=["Change notifications"])

# Graph's tokens are a sentence and a GUID; anything much longer is not Graph.
MAX_TOKEN_CHARS = 1024

ValidationToken = Annotated[
    str | None,
    Query(
        alias="validationToken",
        max_length=MAX_TOKEN_CHARS,
        description="Sent by Graph once, when a subscription is created: echoed as text/plain",
    ),
]

_BODY_DOC = {
    "requestBody": {
        "required": False,
        "description": "Graph's changeNotificationCollection; empty for the validation call",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The validation token, echoed", "content": {"text/plain": {}}},
    **responses(413, 422),
}


class InvalidNotification(BadRequest):
    slug = "invalid-notification"
    title = "The body is not a Graph change-notification collection"


def _echo(token: str) -> Response:
    # text/plain and nosniff: the token is reflected, so it must never be read as markup.
    return Response(token, media_type="text/plain", headers={"X-Content-Type-Options": "nosniff"})


async def _receive(
    request: Request,
    session: AsyncSession,
    validation_token: str | None,
    accept: Callable[[AsyncSession, list[Notice]], Awaitable[object]],
) -> Response:
    """What both Graph endpoints do: echo the validation handshake, or hand the batch to
    ``accept`` and answer 202."""
    if validation_token is not None:
        return _echo(validation_token)
    try:
        batch = GraphNoticeBatch.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InvalidNotification("Expected a JSON object with a 'value' array") from exc
    await accept(
        session, [Notice(n.subscriptionId, n.clientState, n.lifecycleEvent) for n in batch.value]
    )
    return Response(status_code=202)


# Graph posts to both endpoints the same way: the route options they share.
_graph_post = functools.partial(
    router.post, status_code=202, responses=_RESPONSES, openapi_extra=_BODY_DOC
)


@_graph_post("/v1/graph/notifications")
async def graph_notifications(
    request: Request, session: SessionDep, validation_token: ValidationToken = None
) -> Response:
    """Change notifications from Microsoft Graph. Each genuine one (its `clientState`
    matches its subscription's) marks its account and service changed; others are ignored.
    The answer is the same either way."""
    return await _receive(request, session, validation_token, service.accept_changes)


@_graph_post("/v1/graph/lifecycle")
async def graph_lifecycle(
    request: Request, session: SessionDep, validation_token: ValidationToken = None
) -> Response:
    """Lifecycle notifications from Microsoft Graph: `reauthorizationRequired` (renew now),
    `subscriptionRemoved` (re-create, then back up), `missed` (back up)."""
    return await _receive(request, session, validation_token, service.accept_lifecycle)


@router.get(
    "/v1/tenants/{tenant_id}/subscriptions",
    response_model=Page[SubscriptionOut],
    responses=responses(400, 401, 403, 404, 422),
)
async def list_subscriptions(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    paging: Paging,
    status: SubscriptionStatus | None = Query(None, description="Only subscriptions in this state"),
) -> Page[SubscriptionOut]:
    """Change-notification state per protected account and service (policy `rpo_minutes`),
    newest first: `?status=failed` lists those Graph refused, with the reason."""
    page = await paging.read(
        service.list_subscriptions, session, principal.scope, tenant_id, status=status
    )
    return page_of(
        page,
        lambda r: SubscriptionOut(
            account_id=str(r.account_id),
            service=r.service,
            resource=r.resource,
            status=r.status.value,
            expires_at=r.expires_at,
            last_notification_at=r.last_notification_at,
            dirty_since=r.dirty_since,
            last_error=r.last_error,
        ),
    )
