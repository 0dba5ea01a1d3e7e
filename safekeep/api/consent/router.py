"""The public end of admin consent: Entra redirects the client's admin here."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query

from safekeep.api.deps import SessionDep, SettingsDep
from safekeep.api.problems import responses
from safekeep.api.schemas import Schema
from safekeep.tenants.models import ConsentState
from safekeep.tenants.tenant import service

router = APIRouter(prefix="/v1/consent", tags=["Consent"])


class ConsentResult(Schema):
    tenant_id: uuid.UUID
    consent_state: ConsentState
    entra_tenant_id: str | None
    message: str


@router.get("/callback", response_model=ConsentResult, responses=responses(400, 404, 409, 422))
async def consent_callback(
    session: SessionDep,
    settings: SettingsDep,
    state: str = Query(min_length=1, max_length=2000),
    admin_consent: str | None = Query(None, max_length=10),
    tenant: str | None = Query(None, max_length=100, description="The consenting Entra tenant"),
    error: str | None = Query(None, max_length=200),
    error_description: str | None = Query(None, max_length=2000),
) -> ConsentResult:
    """Public on purpose (no API key): the signed `state` names the tenant it is for."""
    granted = error is None and (admin_consent or "").lower() == "true"
    result = await service.record_consent(
        session,
        settings,
        state=state,
        granted=granted,
        entra_tenant_id=tenant if granted else None,
        error=f"{error}: {error_description}" if error else None,
    )
    message = (
        "Consent recorded. Safekeep will discover the tenant's users and sites now; "
        "you can close this window."
        if granted
        else "Consent was not given; ask your MSP for a new link when ready."
    )
    return ConsentResult(
        tenant_id=result.id,
        consent_state=result.consent_state,
        entra_tenant_id=result.entra_tenant_id,
        message=message,
    )
