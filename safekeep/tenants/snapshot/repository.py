from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Row, Select, bindparam
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.db import read_rows
from safekeep.errors import BadRequest
from safekeep.tenants.models import Snapshot
from safekeep.tenants.pagination import Page, keyset_order, keyset_values, page_of_rows
from safekeep.tenants.scope import TenantScope, bound_tenant_rows


def _aware(value: datetime | None) -> datetime | None:
    """Query timestamps without a zone are read as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@cache
def _page(
    columns: tuple[str, ...], limited: bool, equal: tuple[str, ...], bounds: str, after: bool
) -> Select[Any]:
    """The statement of one shape of snapshots page, built once (see ``keyset_order``)."""
    stmt = bound_tenant_rows(
        Snapshot, (getattr(Snapshot, name) for name in columns), limited=limited, equal=equal
    )
    if "s" in bounds:
        stmt = stmt.where(Snapshot.started_at >= bindparam("since"))
    if "u" in bounds:
        stmt = stmt.where(Snapshot.started_at <= bindparam("until"))
    return keyset_order(stmt, Snapshot, after=after, newest_by="started_at")


async def list_page(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID,
    *,
    columns: Sequence[str],
    account_id: uuid.UUID | None,
    service: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
) -> Page[Row[Any]]:
    """Rows of ``columns`` (``id`` and ``started_at`` among them: the cursor), newest first by
    start time (snapshots have no created_at of their own). Like a bad cursor, a ``since``
    after ``until`` is the caller's mistake (400), not an empty page."""
    since, until = _aware(since), _aware(until)
    if since and until and since > until:
        raise BadRequest("since must not be after until")
    given: dict[str, Any] = {
        name: value
        for name, value in (("account_id", account_id), ("service", service), ("status", status))
        if value
    }
    bounds = ("s" if since else "") + ("u" if until else "")
    stmt = _page(tuple(columns), scope.limited, tuple(given), bounds, bool(cursor))
    values = {"tenant_id": tenant_id, **scope.bound(), **keyset_values(cursor, limit), **given}
    if since:
        values["since"] = since
    if until:
        values["until"] = until
    rows = await read_rows(session, stmt, values)
    return page_of_rows(rows, limit, newest_by="started_at")
