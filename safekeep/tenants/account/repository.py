from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import Account, AccountState, Snapshot
from safekeep.tenants.pagination import Page, keyset_page
from safekeep.tenants.scope import TenantScope, get_scoped


async def get(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> Account | None:
    return await get_scoped(session, scope, Account, account_id, tenant_id=tenant_id)


async def list_page(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID,
    *,
    kind: str | None,
    state: str | None,
    protected: bool | None,
    search: str | None,
    cursor: str | None,
    limit: int,
) -> Page[Account]:
    stmt = select(Account).where(
        Account.tenant_id == tenant_id, scope.tenant_filter(Account.tenant_id)
    )
    if kind:
        stmt = stmt.where(Account.kind == kind)
    if state:
        stmt = stmt.where(Account.state == state)
    if protected is not None:
        stmt = stmt.where(Account.protected.is_(protected))
    if search:
        pattern = f"%{search.lower()}%"
        stmt = stmt.where(
            func.lower(Account.display_name).like(pattern)
            | func.lower(func.coalesce(Account.principal_name, "")).like(pattern)
        )
    return await keyset_page(session, stmt, Account, cursor=cursor, limit=limit)


async def all_for_tenant(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID
) -> list[Account]:
    stmt = select(Account).where(
        Account.tenant_id == tenant_id, scope.tenant_filter(Account.tenant_id)
    )
    return list((await session.execute(stmt)).scalars())


async def by_ids(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, ids: Collection[uuid.UUID]
) -> list[Account]:
    if not ids:
        return []
    stmt = select(Account).where(
        Account.id.in_(list(ids)),
        Account.tenant_id == tenant_id,
        scope.tenant_filter(Account.tenant_id),
    )
    return list((await session.execute(stmt)).scalars())


async def has_data(session: AsyncSession, account_id: uuid.UUID) -> bool:
    stmt = select(func.count()).select_from(Snapshot).where(Snapshot.account_id == account_id)
    return bool((await session.execute(stmt)).scalar_one())


async def seat_counts(session: AsyncSession, scope: TenantScope) -> dict[uuid.UUID, dict[str, int]]:
    """Per tenant: protected seats (active and protected) and retained seats (cancelled
    accounts that hold backed-up data)."""
    with_data = select(Snapshot.account_id).distinct().scalar_subquery()
    protected = (
        select(Account.tenant_id, func.count())
        .where(
            scope.tenant_filter(Account.tenant_id),
            Account.state == AccountState.active,
            Account.protected.is_(True),
        )
        .group_by(Account.tenant_id)
    )
    retained = (
        select(Account.tenant_id, func.count())
        .where(
            scope.tenant_filter(Account.tenant_id),
            Account.state == AccountState.cancelled,
            Account.id.in_(with_data),
        )
        .group_by(Account.tenant_id)
    )
    counts: dict[uuid.UUID, dict[str, int]] = {}
    for tenant_id, n in (await session.execute(protected)).all():
        counts.setdefault(tenant_id, {"protected": 0, "retained": 0})["protected"] = n
    for tenant_id, n in (await session.execute(retained)).all():
        counts.setdefault(tenant_id, {"protected": 0, "retained": 0})["retained"] = n
    return counts
