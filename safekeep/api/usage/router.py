from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from safekeep.api.auth import ReadPrincipal
from safekeep.api.deps import SessionDep
from safekeep.api.problems import responses
from safekeep.api.schemas import Paging, Schema, json_response
from safekeep.tenants.models import TenantStatus
from safekeep.tenants.usage import service

router = APIRouter(prefix="/v1/usage", tags=["Usage"])


class TenantUsageOut(Schema):
    tenant_id: uuid.UUID
    name: str
    status: TenantStatus = Field(
        description="`deleted`: no longer protected, listed while its data is kept (until purged)"
    )
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
    """Protected seats (active, protected accounts of live tenants), retained seats (accounts
    whose backed-up data is kept though they are no protected seat: licence cancelled, seat
    released, or tenant deleted; until purged) and stored bytes: what the MSP is billed for,
    as the daily usage report sends it. In total over every tenant the key sees, on every
    page, and per tenant for a page of tenants, newest first (a deleted tenant is listed, with
    `status` `deleted`, while it holds data). Pass `next_cursor` back as `cursor` for the next
    page of tenants; it is null on the last."""
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
