"""The audit log: every key change, tenant change, restore, export, download and purge."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import AuditEvent
from safekeep.tenants.scope import Principal


async def record(
    session: AsyncSession,
    *,
    msp_id: uuid.UUID,
    actor: str,
    action: str,
    tenant_id: uuid.UUID | None = None,
    target_type: str | None = None,
    target_id: str | uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEvent:
    event = AuditEvent(
        msp_id=msp_id,
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        details=details or {},
        ip=ip,
    )
    session.add(event)
    await session.flush()
    return event


async def record_for(
    session: AsyncSession,
    principal: Principal,
    action: str,
    *,
    tenant_id: uuid.UUID | None = None,
    target_type: str | None = None,
    target_id: str | uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEvent:
    return await record(
        session,
        msp_id=principal.msp_id,
        actor=principal.actor,
        action=action,
        tenant_id=tenant_id,
        target_type=target_type,
        target_id=target_id,
        details=details,
        ip=ip,
    )
