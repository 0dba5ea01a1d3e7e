"""The public end of admin consent: Entra sends the client's admin back here after sign-in."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query

from safekeep.api.deps import RuntimeDep
from safekeep.api.problems import responses
from safekeep.api.schemas import Schema
from safekeep.tenants import outbox
from safekeep.tenants.models import ConsentState
from safekeep.tenants.tenant import service

router = APIRouter(prefix="/v1/consent", tags=["Consent"])


class ConsentResult(Schema):
    tenant_id: uuid.UUID
    consent_state: ConsentState
    entra_tenant_id: str | None
    error: str | None = None
    message: str


@router.get("/callback", response_model=ConsentResult, responses=responses(400, 404, 409, 422))
async def consent_callback(
    runtime: RuntimeDep,
    state: str = Query(min_length=1, max_length=200),
    code: str | None = Query(None, max_length=4000, description="Entra's authorization code"),
    session_state: str | None = Query(None, max_length=200, description="Ignored"),
    error: str | None = Query(None, max_length=200),
    error_description: str | None = Query(None, max_length=2000),
    error_subcode: str | None = Query(None, max_length=100, description="Ignored"),
    error_uri: str | None = Query(None, max_length=2000, description="Ignored"),
    tenant: str | None = Query(
        None,
        max_length=100,
        description="Ignored: the directory is the `tid` of the ID token Microsoft signed",
    ),
    admin_consent: str | None = Query(None, max_length=10, description="Ignored"),
    scope: str | None = Query(None, max_length=2000, description="Ignored"),
) -> ConsentResult:
    """Public on purpose (no API key): the single-use `state` names the sign-in this answers.

    With a `code`, Safekeep redeems it (PKCE) and binds the directory of the admin's verified
    ID token. A state is used once: any second answer, grant or error, is refused (400) and
    changes nothing; so is one after an hour. A directory already connected to another tenant
    is refused (409) and the attempt is audited. An error after a grant does not revoke it.
    """
    with outbox.collect() as box:
        outcome = await service.complete_consent(
            runtime.db,
            runtime.settings,
            state=state,
            code=code,
            error=error,
            error_description=error_description,
        )
    if box.messages:
        runtime.send(box.messages)
    result = outcome.tenant
    message = (
        "Consent recorded. Safekeep will discover the tenant's users and sites now; "
        "you can close this window."
        if outcome.granted
        else "Consent was not given; ask your MSP for a new link when ready."
    )
    return ConsentResult(
        tenant_id=result.id,
        consent_state=result.consent_state,
        entra_tenant_id=result.entra_tenant_id,
        error=outcome.error,
        message=message,
    )
