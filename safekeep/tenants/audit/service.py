"""The audit log: every key change, tenant change, restore, export, download and purge."""

from __future__ import annotations

import uuid
from typing import Any, TypedDict, Unpack

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import (
    Account,
    AuditEvent,
    Detection,
    Export,
    Job,
    Msp,
    Policy,
    Tenant,
)
from safekeep.tenants.scope import Principal


class Target(TypedDict, total=False):
    """What an event is about, besides who did what: one declaration for every way of
    recording (by a principal, by the system, on a tenant, on an MSP)."""

    tenant_id: uuid.UUID | None
    target_type: str | None
    target_id: str | uuid.UUID | None
    details: dict[str, Any] | None
    ip: str | None


async def record(
    session: AsyncSession, *, msp_id: uuid.UUID, actor: str, action: str, **target: Unpack[Target]
) -> AuditEvent:
    target_id = target.get("target_id")
    event = AuditEvent(
        msp_id=msp_id,
        tenant_id=target.get("tenant_id"),
        actor=actor,
        action=action,
        target_type=target.get("target_type"),
        target_id=str(target_id) if target_id is not None else None,
        details=target.get("details") or {},
        ip=target.get("ip"),
    )
    session.add(event)
    await session.flush()
    return event


async def record_for(
    session: AsyncSession, principal: Principal, action: str, **target: Unpack[Target]
) -> AuditEvent:
    """An action someone took through the API, under their MSP and name."""
    return await record(
        session, msp_id=principal.msp_id, actor=principal.actor, action=action, **target
    )


# What an audited change can be made on, and the target type its events carry.
_TARGET_TYPES: dict[type, str] = {
    Account: "account",
    Detection: "detection",
    Export: "export",
    Job: "job",
    Policy: "policy",
    Tenant: "tenant",
}


async def record_change(
    session: AsyncSession,
    principal: Principal,
    action: str,
    on: Account | Detection | Export | Job | Policy | Tenant,
    *,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEvent:
    """An action someone took on one resource of a tenant. The event's tenant and target
    are read off the resource, so no caller can file it under another tenant or id (a
    tenant is its own tenant; a policy is known by its tenant's id)."""
    if isinstance(on, Tenant):
        tenant_id = target_id = on.id
    elif isinstance(on, Policy):
        tenant_id = target_id = on.tenant_id
    else:
        tenant_id, target_id = on.tenant_id, on.id
    return await record_for(
        session,
        principal,
        action,
        tenant_id=tenant_id,
        target_type=_TARGET_TYPES[type(on)],
        target_id=target_id,
        details=details,
        ip=ip,
    )


async def record_on_tenant(
    session: AsyncSession,
    tenant: Tenant,
    action: str,
    *,
    actor: str,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Something that happened to a whole tenant without a principal behind it (consent
    callbacks, Entra revoking our app, retention)."""
    return await record(
        session,
        msp_id=tenant.msp_id,
        actor=actor,
        action=action,
        tenant_id=tenant.id,
        target_type="tenant",
        target_id=tenant.id,
        details=details,
    )


async def record_on_msp(
    session: AsyncSession, msp: Msp, action: str, *, actor: str, details: dict[str, Any]
) -> AuditEvent:
    """Something that happened to an MSP itself (created, given a Stripe customer, its
    billing status moved)."""
    return await record(
        session,
        msp_id=msp.id,
        actor=actor,
        action=action,
        target_type="msp",
        target_id=msp.id,
        details=details,
    )
