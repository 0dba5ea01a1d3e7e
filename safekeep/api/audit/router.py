from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query

from safekeep.api.auth import ReadPrincipal
from safekeep.api.deps import SessionDep
from safekeep.api.problems import responses
from safekeep.api.schemas import Page, Paging, Schema, page_of
from safekeep.tenants.audit import repository

router = APIRouter(prefix="/v1/audit-events", tags=["Audit"])


class AuditEventOut(Schema):
    id: uuid.UUID
    tenant_id: uuid.UUID | None
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]
    ip: str | None
    created_at: datetime


@router.get("", response_model=Page[AuditEventOut], responses=responses(400, 401, 403, 422))
async def list_audit_events(
    principal: ReadPrincipal,
    session: SessionDep,
    paging: Paging,
    tenant_id: uuid.UUID | None = Query(None),
    action: str | None = Query(None, max_length=60),
) -> Page[AuditEventOut]:
    """Every key change, tenant change, restore, export, download and purge; newest first.
    The log is append-only (the database refuses updates and deletes)."""
    page = await paging.read(
        repository.list_events, session, principal.scope, tenant_id=tenant_id, action=action
    )
    return page_of(page, AuditEventOut.model_validate)
