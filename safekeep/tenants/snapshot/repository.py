from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.errors import BadRequest
from safekeep.tenants.models import Snapshot
from safekeep.tenants.pagination import Page, keyset_page
from safekeep.tenants.scope import TenantScope, live_tenant


def _aware(value: datetime | None) -> datetime | None:
    """Query timestamps without a zone are read as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def list_page(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID,
    *,
    account_id: uuid.UUID | None,
    service: str | None,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
) -> Page[Snapshot]:
    """Newest first by start time (snapshots have no created_at of their own). Like a bad
    cursor, a ``since`` after ``until`` is the caller's mistake (400), not an empty page."""
    since, until = _aware(since), _aware(until)
    if since and until and since > until:
        raise BadRequest("since must not be after until")
    stmt: Select[Snapshot] = select(Snapshot).where(
        Snapshot.tenant_id == tenant_id,
        scope.tenant_filter(Snapshot.tenant_id),
        live_tenant(Snapshot.tenant_id),
    )
    if account_id:
        stmt = stmt.where(Snapshot.account_id == account_id)
    if service:
        stmt = stmt.where(Snapshot.service == service)
    if since:
        stmt = stmt.where(Snapshot.started_at >= since)
    if until:
        stmt = stmt.where(Snapshot.started_at <= until)
    return await keyset_page(
        session, stmt, Snapshot, cursor=cursor, limit=limit, newest_by="started_at"
    )


async def stored_bytes_by_tenant(session: AsyncSession, scope: TenantScope) -> dict[uuid.UUID, int]:
    stmt = (
        select(Snapshot.tenant_id, func.coalesce(func.sum(Snapshot.bytes_added), 0))
        .where(scope.tenant_filter(Snapshot.tenant_id))
        .group_by(Snapshot.tenant_id)
    )
    return {t: int(n) for t, n in (await session.execute(stmt)).all()}
