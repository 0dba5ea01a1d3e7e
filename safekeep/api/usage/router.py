from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import Response

from safekeep.api.auth import ReadPrincipal
from safekeep.api.deps import SessionDep
from safekeep.api.problems import responses
from safekeep.api.schemas import Schema, json_response
from safekeep.tenants.usage import service

router = APIRouter(prefix="/v1/usage", tags=["Usage"])


class TenantUsageOut(Schema):
    tenant_id: uuid.UUID
    name: str
    protected_seats: int
    retained_seats: int
    stored_bytes: int


class UsageOut(Schema):
    protected_seats: int
    retained_seats: int
    stored_bytes: int
    tenants: list[TenantUsageOut]


@router.get("", response_model=UsageOut, responses=responses(401, 403))
async def get_usage(principal: ReadPrincipal, session: SessionDep) -> Response:
    """Protected seats (active, protected accounts), retained seats (cancelled accounts whose
    data is kept) and stored bytes, per tenant and in total."""
    rows = await service.usage(session, principal.scope)
    usage = UsageOut(
        protected_seats=sum(r.protected_seats for r in rows),
        retained_seats=sum(r.retained_seats for r in rows),
        stored_bytes=sum(r.stored_bytes for r in rows),
        tenants=[TenantUsageOut.model_validate(r) for r in rows],
    )
    return json_response(usage)
