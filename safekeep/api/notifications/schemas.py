from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from safekeep.api.policy.schemas import Service
from safekeep.api.schemas import RequestSchema, Schema


class GraphNotice(RequestSchema):
    """One entry of Graph's ``value`` array; only the fields we use are read, the rest (the
    resource, its data) is ignored on purpose: nothing in it is trusted."""

    model_config = ConfigDict(extra="ignore")

    subscriptionId: str = Field(min_length=1, max_length=100)
    clientState: str | None = Field(default=None, max_length=128)
    lifecycleEvent: str | None = Field(default=None, max_length=60)


class GraphNoticeBatch(RequestSchema):
    model_config = ConfigDict(extra="ignore")

    value: list[GraphNotice] = Field(max_length=1000)


class SubscriptionOut(Schema):
    """A Graph change-notification subscription of one account and service (a site has one
    per document library and per list)."""

    account_id: str
    service: Service
    resource: str = Field(
        description="What Graph watches: e.g. users/{id}/messages, drives/{id}/root, "
        "sites/{id}/lists/{id}"
    )
    status: Literal["pending", "active", "failed", "removed"]
    expires_at: datetime | None
    last_notification_at: datetime | None = Field(
        description="When Graph last told us this account and service changed"
    )
    dirty_since: datetime | None = Field(
        description="Changed and waiting for its incremental backup since then (null: clean)"
    )
    last_error: str | None
