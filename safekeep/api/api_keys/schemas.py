from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from safekeep.api.schemas import RequestSchema, Schema, Timestamp
from safekeep.tenants.scope import Scope


class ApiKeyCreate(RequestSchema):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1, description="admin implies every other scope")
    tenant_ids: list[uuid.UUID] | None = Field(
        default=None,
        max_length=1000,
        description="Limit the key to these tenants (a client portal's key); null: all tenants",
    )
    expires_at: Timestamp | None = None


class ApiKeyOut(Schema):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it")
    scopes: list[Scope]
    tenant_ids: list[uuid.UUID] | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str | None = Field(
        description="The secret. Shown once: store it now (null in an idempotent replay)"
    )
