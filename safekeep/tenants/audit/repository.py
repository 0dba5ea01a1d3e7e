"""Queries of the audit log (it is append-only: there is nothing to update)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import AuditEvent
from safekeep.tenants.pagination import Page, keyset_page
from safekeep.tenants.scope import TenantScope


async def list_events(
    session: AsyncSession,
    scope: TenantScope,
    *,
    tenant_id: uuid.UUID | None,
    action: str | None,
    cursor: str | None,
    limit: int,
) -> Page[AuditEvent]:
    stmt = select(AuditEvent).where(AuditEvent.msp_id == scope.msp_id)
    if scope.limited:
        # A tenant-limited key sees only events about its tenants.
        stmt = stmt.where(scope.tenant_filter(AuditEvent.tenant_id))
    if tenant_id is not None:
        stmt = stmt.where(AuditEvent.tenant_id == tenant_id)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    return await keyset_page(session, stmt, AuditEvent, cursor=cursor, limit=limit)
