from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import AnyHttpUrl, Field, field_validator

from safekeep.api.schemas import RequestSchema, Schema
from safekeep.tenants.models import DeliveryStatus
from safekeep.tenants.webhook.service import EventType

URL_MAX_CHARS = 2000  # the webhook endpoint's url column


class WebhookCreate(RequestSchema):
    url: AnyHttpUrl = Field(
        # Documented for clients; the validator below holds the stored form (an IDN's
        # punycode can be longer than what was sent) to the column's length.
        json_schema_extra={"maxLength": URL_MAX_CHARS},
        description="Where to POST events: a public internet address (loopback, private, "
        "link-local and other non-public addresses are refused, when created and again when "
        "each delivery resolves the name); https in production. Redirects are not followed",
    )
    events: list[EventType] = Field(
        min_length=1,
        max_length=7,
        description="Each delivery's `data` names `tenant_id` and `job_id` where a job is "
        "involved; `restore.completed` adds `status` (`succeeded`: every item in scope is in "
        "the target, restored or already there; `partial`: some are not, see the job's "
        "issues) and `totals` (`restored`, `skipped_existing`, `skipped`, `failed`, `bytes`, "
        "`observed`)",
    )
    description: str | None = Field(default=None, max_length=500)

    @field_validator("url")
    @classmethod
    def _length(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > URL_MAX_CHARS:
            raise ValueError(f"url is longer than {URL_MAX_CHARS} characters")
        return value


class WebhookOut(Schema):
    id: uuid.UUID
    url: str
    events: list[EventType]
    description: str | None
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str | None = Field(
        description="Signing secret, shown once (null in an idempotent replay). Each delivery "
        "carries `Safekeep-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, '<t>.<raw body>')>`"
        " and the Standard Webhooks headers `webhook-id`, `webhook-timestamp` and "
        "`webhook-signature`, which any Standard Webhooks library verifies with this secret."
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
