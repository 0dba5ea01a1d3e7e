"""Detections as an MSP sees them: list, read, acknowledge, release the hold (audited)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.errors import Conflict, or_404
from safekeep.tenants.audit import service as audit
from safekeep.tenants.detection import repository
from safekeep.tenants.models import Detection, DetectionStatus, DetectionThreshold, utcnow
from safekeep.tenants.scope import Principal, TenantScope
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.tenants.tenant import service as tenant_service

list_detections = tenant_repository.under_tenant(repository.list_page)


async def get(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, detection_id: uuid.UUID
) -> Detection:
    return or_404(
        await repository.get(session, scope, tenant_id, detection_id), "No such detection"
    )


async def acknowledge(
    session: AsyncSession,
    principal: Principal,
    tenant_id: uuid.UUID,
    detection_id: uuid.UUID,
    *,
    ip: str | None = None,
) -> Detection:
    """Seen by an operator; the hold stays. Acknowledging twice changes nothing."""
    found = await get(session, principal.scope, tenant_id, detection_id)
    if found.status == DetectionStatus.released:
        raise Conflict("This detection's hold was already released")
    if found.status == DetectionStatus.open:
        found.status = DetectionStatus.acknowledged
        found.acknowledged_at = utcnow()
        found.acknowledged_by = principal.actor[:200]
        await session.flush()
        await audit.record_change(session, principal, "detection.acknowledged", found, ip=ip)
    return found


async def release(
    session: AsyncSession,
    principal: Principal,
    tenant_id: uuid.UUID,
    detection_id: uuid.UUID,
    *,
    ip: str | None = None,
) -> Detection:
    """Lift the hold: retention applies to the account's versions again."""
    found = await get(session, principal.scope, tenant_id, detection_id)
    if found.status != DetectionStatus.released:
        found.status = DetectionStatus.released
        found.released_at = utcnow()
        found.released_by = principal.actor[:200]
        await session.flush()
        await audit.record_change(
            session,
            principal,
            "detection.released",
            found,
            details={"account_id": str(found.account_id), "service": found.service},
            ip=ip,
        )
    return found


async def get_threshold(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID
) -> DetectionThreshold | None:
    """The tenant's own thresholds, or None when the deployment's apply."""
    await tenant_service.get(session, scope, tenant_id)
    return await repository.threshold(session, tenant_id)


async def put_threshold(
    session: AsyncSession,
    principal: Principal,
    tenant_id: uuid.UUID,
    *,
    min_files: int,
    min_deletions: int,
    sigmas: float,
    ip: str | None = None,
) -> DetectionThreshold:
    await tenant_service.get(session, principal.scope, tenant_id)
    row = await repository.threshold(session, tenant_id)
    if row is None:
        row = DetectionThreshold(tenant_id=tenant_id)
        session.add(row)
    row.min_files, row.min_deletions, row.sigmas = min_files, min_deletions, sigmas
    await session.flush()
    await audit.record_for(
        session,
        principal,
        "detection.thresholds_updated",
        tenant_id=tenant_id,
        target_type="tenant",
        target_id=tenant_id,
        details={"min_files": min_files, "min_deletions": min_deletions, "sigmas": sigmas},
        ip=ip,
    )
    return row
