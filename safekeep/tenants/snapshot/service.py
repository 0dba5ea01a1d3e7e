from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.errors import BadRequest, NotFound
from safekeep.tenants.models import Snapshot
from safekeep.tenants.pagination import Page
from safekeep.tenants.scope import TenantScope
from safekeep.tenants.snapshot import repository
from safekeep.tenants.tenant import repository as tenant_repository


def _aware(value: datetime | None) -> datetime | None:
    """Query timestamps without a zone are read as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def list_snapshots(
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
    if not await tenant_repository.exists(session, scope, tenant_id):
        raise NotFound("No such tenant")
    since, until = _aware(since), _aware(until)
    if since and until and since > until:
        raise BadRequest("since must not be after until")
    return await repository.list_page(
        session,
        scope,
        tenant_id,
        account_id=account_id,
        service=service,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
