"""Queries on detections, their baselines and the snapshots they point at."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import (
    Detection,
    DetectionBaseline,
    DetectionKind,
    DetectionStatus,
    DetectionThreshold,
    Snapshot,
    SnapshotStatus,
)
from safekeep.tenants.pagination import Page, keyset_page
from safekeep.tenants.scope import TenantScope, get_scoped, live_tenant


async def baseline(
    session: AsyncSession, account_id: uuid.UUID, service: str
) -> DetectionBaseline | None:
    return await session.get(DetectionBaseline, (account_id, service))


async def threshold(session: AsyncSession, tenant_id: uuid.UUID) -> DetectionThreshold | None:
    return await session.get(DetectionThreshold, tenant_id)


async def last_clean_snapshot(
    session: AsyncSession, account_id: uuid.UUID, service: str, before_seq: int
) -> Snapshot | None:
    """The newest finished snapshot before the suspicious one."""
    stmt = (
        select(Snapshot)
        .where(
            Snapshot.account_id == account_id,
            Snapshot.service == service,
            Snapshot.seq < before_seq,
            Snapshot.status.in_([SnapshotStatus.complete, SnapshotStatus.partial]),
        )
        .order_by(Snapshot.seq.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def unreleased(
    session: AsyncSession, account_id: uuid.UUID, service: str, kind: DetectionKind
) -> Detection | None:
    stmt = (
        select(Detection)
        .where(
            Detection.account_id == account_id,
            Detection.service == service,
            Detection.kind == kind,
            Detection.status != DetectionStatus.released,
        )
        .order_by(Detection.created_at.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def any_unreleased(session: AsyncSession, account_id: uuid.UUID, service: str) -> bool:
    """Whether a detection of any kind still holds this account and service."""
    stmt = (
        select(Detection.id)
        .where(
            Detection.account_id == account_id,
            Detection.service == service,
            Detection.status != DetectionStatus.released,
        )
        .limit(1)
    )
    return (await session.execute(stmt)).first() is not None


async def held_account_ids(session: AsyncSession, tenant_id: uuid.UUID) -> set[uuid.UUID]:
    """Accounts whose versions retention must keep: a detection not yet released."""
    stmt = select(Detection.account_id).where(
        Detection.tenant_id == tenant_id, Detection.status != DetectionStatus.released
    )
    return set((await session.execute(stmt)).scalars())


async def get(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, detection_id: uuid.UUID
) -> Detection | None:
    return await get_scoped(session, scope, Detection, detection_id, tenant_id=tenant_id)


async def list_page(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID,
    *,
    status: DetectionStatus | None,
    cursor: str | None,
    limit: int,
) -> Page[Detection]:
    stmt = select(Detection).where(
        Detection.tenant_id == tenant_id,
        scope.tenant_filter(Detection.tenant_id),
        live_tenant(Detection.tenant_id),
    )
    if status is not None:
        stmt = stmt.where(Detection.status == status)
    return await keyset_page(session, stmt, Detection, cursor=cursor, limit=limit)
