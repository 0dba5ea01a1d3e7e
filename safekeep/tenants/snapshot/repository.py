from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.errors import BadRequest, InvalidCursor
from safekeep.tenants.models import Snapshot
from safekeep.tenants.pagination import Page, decode_cursor, encode_cursor
from safekeep.tenants.scope import TenantScope


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
        Snapshot.tenant_id == tenant_id, scope.tenant_filter(Snapshot.tenant_id)
    )
    if account_id:
        stmt = stmt.where(Snapshot.account_id == account_id)
    if service:
        stmt = stmt.where(Snapshot.service == service)
    if since:
        stmt = stmt.where(Snapshot.started_at >= since)
    if until:
        stmt = stmt.where(Snapshot.started_at <= until)
    if cursor:
        value = decode_cursor(cursor)
        try:
            started = datetime.fromisoformat(value["t"])
            row_id = uuid.UUID(value["i"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidCursor("The cursor is not one this API returned") from exc
        stmt = stmt.where(
            or_(
                Snapshot.started_at < started,
                and_(Snapshot.started_at == started, Snapshot.id < row_id),
            )
        )
    stmt = stmt.order_by(Snapshot.started_at.desc(), Snapshot.id.desc()).limit(limit + 1)
    rows = list((await session.execute(stmt)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"t": rows[-1].started_at.isoformat(), "i": str(rows[-1].id)})
    return Page(rows, next_cursor)


async def stored_bytes_by_tenant(session: AsyncSession, scope: TenantScope) -> dict[uuid.UUID, int]:
    stmt = (
        select(Snapshot.tenant_id, func.coalesce(func.sum(Snapshot.bytes_added), 0))
        .where(scope.tenant_filter(Snapshot.tenant_id))
        .group_by(Snapshot.tenant_id)
    )
    return {t: int(n) for t, n in (await session.execute(stmt)).all()}
