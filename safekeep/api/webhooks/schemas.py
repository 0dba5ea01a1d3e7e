from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AnyHttpUrl, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from safekeep.api.schemas import RequestSchema, Schema, Timestamp
from safekeep.tenants.models import DeliveryStatus
from safekeep.tenants.webhook.service import (
    EVENT_TYPES,
    MAX_SECRET_OVERLAP,
    RECOVER_BATCH,
    EventType,
)

URL_MAX_CHARS = 2000  # the webhook endpoint's url column


_URL_DESCRIPTION = (
    "Where to POST events: a public internet address (loopback, private, link-local and other "
    "non-public addresses are refused, when created and again when each delivery resolves the "
    "name); https in production. Redirects are not followed"
)
_EVENTS_DESCRIPTION = (
    "Each delivery's `data` names `tenant_id` and `job_id` where a job is involved; "
    "`restore.completed` adds `status` (`succeeded`: every item in scope is in the target, "
    "restored or already there; `partial`: some are not, see the job's issues) and `totals` "
    "(`restored`, `skipped_existing`, `skipped`, `failed`, `noted`, `bytes`, `observed`)"
)


def _url_fits(value: AnyHttpUrl | None) -> AnyHttpUrl | None:
    """The stored form (an IDN's punycode can be longer than what was sent) within the
    column's length."""
    if value is not None and len(str(value)) > URL_MAX_CHARS:
        raise ValueError(f"url is longer than {URL_MAX_CHARS} characters")
    return value


# Any of the events, each at most once in effect (repeats are folded).
Events = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))]


class WebhookCreate(RequestSchema):
    url: AnyHttpUrl = Field(
        json_schema_extra={"maxLength": URL_MAX_CHARS}, description=_URL_DESCRIPTION
    )
    events: Events = Field(description=_EVENTS_DESCRIPTION)
    description: str | None = Field(default=None, max_length=500)

    _length = field_validator("url")(_url_fits)


class WebhookUpdate(RequestSchema):
    """What to change; fields left out stay as they are."""

    # Not nullable in the document (SkipJsonSchema): a null is refused, not a way to clear.
    url: AnyHttpUrl | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra={"maxLength": URL_MAX_CHARS}, description=_URL_DESCRIPTION
    )
    events: Events | SkipJsonSchema[None] = Field(default=None, description=_EVENTS_DESCRIPTION)
    description: str | None = Field(default=None, max_length=500)

    _length = field_validator("url")(_url_fits)

    @field_validator("url", "events")
    @classmethod
    def _given(cls, value: Any) -> Any:
        # Called only for a value the request sent: leaving it out keeps it, null cannot.
        if value is None:
            raise ValueError("cannot be null: leave it out to keep it")
        return value


class SecretRotation(RequestSchema):
    previous_secret_expires_in: int = Field(
        default=86_400,
        ge=0,
        le=int(MAX_SECRET_OVERLAP.total_seconds()),
        description="Seconds the replaced secret keeps signing beside the new one (each "
        "delivery then carries both signatures), for receivers to switch without refusing a "
        "delivery; 0 stops it now (a leaked secret)",
    )


class WebhookOut(Schema):
    id: uuid.UUID
    url: str
    events: list[EventType]
    description: str | None
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="While in the future, deliveries are signed with the secret the last "
        "rotation replaced as well as the current one"
    )


class WebhookCreated(WebhookOut):
    secret: str | None = Field(
        description="Signing secret, shown once (null in an idempotent replay). Each delivery "
        "carries `Safekeep-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, '<t>.<raw body>')>`"
        " and the Standard Webhooks headers `webhook-id`, `webhook-timestamp` and "
        "`webhook-signature`, which any Standard Webhooks library verifies with this secret. "
        "While a rotation's overlap lasts, both carry a second signature, under the secret "
        "it replaced (`t=..,v1=<new>,v1=<old>`; `v1,<new> v1,<old>`): accept a delivery "
        "when any one matches."
    )


class Recovery(RequestSchema):
    since: Timestamp = Field(
        description="Send again the failed deliveries made at or after this instant (they "
        "are kept 30 days)"
    )


class Recovered(Schema):
    scheduled: int = Field(
        description="Failed deliveries made pending again and sent now, oldest first, at "
        f"most {RECOVER_BATCH} a call: call again until it is 0"
    )


class DeliveryOut(Schema):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    payload: dict[str, Any]
