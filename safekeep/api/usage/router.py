from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import Response

from safekeep.api.auth import ReadPrincipal
from safekeep.api.deps import SessionDep
from safekeep.api.problems import responses
from safekeep.api.schemas import Paging, Schema, json_response
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
    next_cursor: str | None


@router.get("", response_model=UsageOut, responses=responses(400, 401, 403, 422))
async def get_usage(principal: ReadPrincipal, session: SessionDep, paging: Paging) -> Response:
    """Protected seats (active, protected accounts), retained seats (cancelled accounts whose
    data is kept) and stored bytes: in total over every tenant the key sees, on every page,
    and per tenant for a page of tenants, newest first. Pass `next_cursor` back as
    `cursor` for the next page of tenants; it is null on the last."""
    totals = await service.totals(session, principal.scope)
    tenants = await paging.read(service.page, session, principal.scope)
    usage = UsageOut(
        protected_seats=totals.protected_seats,
        retained_seats=totals.retained_seats,
        stored_bytes=totals.stored_bytes,
        tenants=[TenantUsageOut.model_validate(t) for t in tenants.items],
        next_cursor=tenants.next_cursor,
    )
    return json_response(usage)
