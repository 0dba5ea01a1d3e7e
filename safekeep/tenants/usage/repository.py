"""The usage figures of the live tenants a scope sees: a page of them, and their totals."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.db import read_rows
from safekeep.tenants.models import Account, AccountState, Snapshot, Tenant, TenantStatus
from safekeep.tenants.pagination import Page, keyset_order, keyset_values, page_of_rows
from safekeep.tenants.scope import TenantScope, bound_tenant_row_filter

# What makes a seat, one definition for a tenant's figures and for the totals.
_PROTECTED = and_(Account.state == AccountState.active, Account.protected.is_(True))
# A cancelled account is a retained seat while it holds backed-up data.
_RETAINED = and_(
    Account.state == AccountState.cancelled, exists().where(Snapshot.account_id == Account.id)
)


def _live(limited: bool) -> ColumnElement[bool]:
    return and_(bound_tenant_row_filter(limited=limited), Tenant.status != TenantStatus.deleted)


@cache
def _per_tenant(limited: bool) -> Select[Any]:
    """Each tenant with its seats and bytes as correlated counts: one round trip and no
    grouping of accounts or snapshots of tenants outside the scope."""
    mine = Account.tenant_id == Tenant.id
    protected = select(func.count()).where(mine, _PROTECTED).scalar_subquery()
    retained = select(func.count()).where(mine, _RETAINED).scalar_subquery()
    # Kept per account as snapshots finish: a sum over the tenant's snapshots would read its
    # whole history (a year of backups) on every request.
    stored = select(func.coalesce(func.sum(Account.stored_bytes), 0)).where(mine).scalar_subquery()
    return select(
        Tenant.id,
        Tenant.name,
        protected.label("protected_seats"),
        retained.label("retained_seats"),
        stored.label("stored_bytes"),
        Tenant.created_at,
    ).where(_live(limited))


@cache
def _page(limited: bool, after: bool) -> Select[Any]:
    """One shape of page, built once (see ``keyset_order``)."""
    return keyset_order(_per_tenant(limited), Tenant, after=after)


@cache
def _totals(limited: bool) -> Select[int, int, int]:
    """The sums over every live tenant the scope sees: one pass over their accounts (a
    tenant's figures summed would pass over them once per figure)."""
    return (
        select(
            func.count().filter(_PROTECTED).label("protected_seats"),
            func.count().filter(_RETAINED).label("retained_seats"),
            func.coalesce(func.sum(Account.stored_bytes), 0).label("stored_bytes"),
        )
        .select_from(Account)
        .join(Tenant, Account.tenant_id == Tenant.id)
        .where(_live(limited))
    )


async def page(
    session: AsyncSession, scope: TenantScope, *, cursor: str | None, limit: int
) -> Page[Row[Any]]:
    """Rows of (id, name, protected_seats, retained_seats, stored_bytes, created_at), newest
    tenant first."""
    values = {**scope.bound(), **keyset_values(cursor, limit)}
    return page_of_rows(await read_rows(session, _page(scope.limited, bool(cursor)), values), limit)


async def totals(session: AsyncSession, scope: TenantScope) -> Row[Any]:
    """One row of (protected_seats, retained_seats, stored_bytes) over all the scope sees."""
    (row,) = await read_rows(session, _totals(scope.limited), scope.bound())
    return row
