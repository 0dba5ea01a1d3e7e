from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import AliasChoices, Field, model_validator

from safekeep.api.policy.schemas import PolicyIn
from safekeep.api.schemas import RequestSchema, Schema
from safekeep.tenants.models import ConsentState, TenantStatus

DOMAIN_PATTERN = (
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$|^[0-9a-fA-F-]{36}$"
)


class TenantCreate(RequestSchema):
    name: str = Field(min_length=1, max_length=200)
    domain: str | None = Field(
        default=None,
        max_length=255,
        pattern=DOMAIN_PATTERN,
        description="The client's Entra domain or tenant GUID, to aim the consent link at it",
    )
    app_client_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F-]{36}$",
        description="Your own multi-tenant Entra app instead of the deployment's",
    )
    app_client_secret: str | None = Field(default=None, min_length=1, max_length=500)
    policy: PolicyIn | None = None

    @model_validator(mode="after")
    def _app_pair(self) -> TenantCreate:
        if (self.app_client_id is None) != (self.app_client_secret is None):
            raise ValueError("app_client_id and app_client_secret go together")
        return self


class TenantUpdate(RequestSchema):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    domain: str | None = Field(default=None, max_length=255, pattern=DOMAIN_PATTERN)
    app_client_id: str | None = Field(default=None, pattern=r"^[0-9a-fA-F-]{36}$")
    app_client_secret: str | None = Field(default=None, min_length=1, max_length=500)


class TenantOut(Schema):
    id: uuid.UUID
    name: str
    status: TenantStatus
    domain: str | None = Field(validation_alias=AliasChoices("requested_domain", "domain"))
    entra_tenant_id: str | None
    consent_state: ConsentState
    consent_changed_at: datetime | None
    consent_error: str | None
    custom_app_client_id: str | None = Field(
        validation_alias=AliasChoices("app_client_id", "custom_app_client_id")
    )
    storage_prefix: str
    next_backup_at: datetime | None
    last_backup_at: datetime | None
    created_at: datetime
    updated_at: datetime


class TenantCreated(TenantOut):
    consent_url: str = Field(
        description="Send the client's admin here: Microsoft sign-in with admin consent in the "
        "same trip. Good for one answer within an hour (POST /v1/tenants/{id}/consent for a "
        "new one)."
    )


class ConsentLink(Schema):
    consent_url: str = Field(
        description="Microsoft sign-in with admin consent for the client's admin; good for one "
        "answer within an hour"
    )
