"""Queries on detections, their baselines and the snapshots they point at."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    Select,
    Update,
    and_,
    bindparam,
    exists,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import (
    Detection,
    DetectionBaseline,
    DetectionKind,
    DetectionStatus,
    DetectionThreshold,
    Snapshot,
    SnapshotStatus,
    Tenant,
)
from safekeep.tenants.models.base import table_of
from safekeep.tenants.pagination import Page, keyset_page
from safekeep.tenants.scope import TenantScope, get_scoped, live_tenant


async def threshold(session: AsyncSession, tenant_id: uuid.UUID) -> DetectionThreshold | None:
    return await session.get(DetectionThreshold, tenant_id)


_UPDATED_AT = table_of(DetectionBaseline).c.updated_at.type


@cache
def _standing() -> Select[DetectionBaseline, DetectionThreshold, bool]:
    account_id: BindParameter[uuid.UUID] = bindparam("account_id")
    service: BindParameter[str] = bindparam("service")
    held = exists().where(
        Detection.account_id == account_id,
        Detection.service == service,
        Detection.status != DetectionStatus.released,
    )
    return (
        select(DetectionBaseline, DetectionThreshold, held)
        .select_from(Tenant)
        .outerjoin(DetectionThreshold, DetectionThreshold.tenant_id == Tenant.id)
        .outerjoin(
            DetectionBaseline,
            and_(DetectionBaseline.account_id == account_id, DetectionBaseline.service == service),
        )
        .where(Tenant.id == bindparam("tenant_id"))
    )


async def standing(
    session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID, service: str
) -> tuple[DetectionBaseline | None, DetectionThreshold | None, bool] | None:
    """What judging a run needs, in one statement: the account and service's baseline, the
    tenant's own thresholds, and whether a detection not yet released holds it (None: the
    tenant is gone)."""
    values = {"tenant_id": tenant_id, "account_id": account_id, "service": service}
    row = (await session.execute(_standing(), values)).one_or_none()
    if row is None:
        return None
    base, own, held = row
    return base, own, bool(held)


@cache
def _learn_quiet() -> Update:
    """Fold a run that saw nothing (zero suspicious files, zero deletions) into the
    baseline, in SQL: Welford's step with the value 0, the same arithmetic as
    ``detection._welford`` (the SET expressions all read the row as it was). Not while a
    detection is unreleased: an attack under way is never learnt as normal."""
    base = table_of(DetectionBaseline).c
    detection = table_of(Detection).c
    runs = base.runs + 1
    zero = literal(0.0)
    values: dict[str, Any] = {"runs": runs, "updated_at": bindparam("b_now", type_=_UPDATED_AT)}
    for mean, m2 in (
        (base.suspicious_mean, base.suspicious_m2),
        (base.deleted_mean, base.deleted_m2),
    ):
        delta = zero - mean
        folded = mean + delta / runs
        values[mean.key] = folded
        values[m2.key] = m2 + delta * (zero - folded)
    held = exists().where(
        detection.account_id == base.account_id,
        detection.service == base.service,
        detection.status != DetectionStatus.released,
    )
    return (
        update(table_of(DetectionBaseline))
        .where(
            base.account_id == bindparam("b_account_id"),
            base.service == bindparam("b_service"),
            ~held,
        )
        .values(values)
    )


async def learn_quiet_run(
    session: AsyncSession, account_id: uuid.UUID, service: str, *, now: datetime
) -> bool:
    """Count a run that saw nothing into the account and service's baseline, in one
    statement. False when nothing was written: no baseline yet, or a detection holds the
    account (the caller then reads its standing)."""
    values = {"b_account_id": account_id, "b_service": service, "b_now": now}
    result = await session.execute(_learn_quiet(), values)
    return bool(getattr(result, "rowcount", 0))


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
