"""The usage figures of the tenants a scope sees: a page of them, and their totals.

A tenant's figures are what it is billed for. Its protected seats count while it is live; its
retained data counts until purged, whether the licence was cancelled, the seat released or
the tenant deleted (deleting a tenant keeps its data: its seats that hold data are retained
seats, and their bytes stored, until a purge). A deleted tenant is listed while it holds any.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.db import read_rows
from safekeep.tenants.models import Account, AccountState, Snapshot, Tenant, TenantStatus
from safekeep.tenants.pagination import Page, keyset_order, keyset_values, page_of_rows
from safekeep.tenants.scope import TenantScope, bound_tenant_row_filter

# What makes a seat, one definition for a tenant's figures and for the totals (each read
# with the account's tenant in the statement).
_LIVE_TENANT = Tenant.status != TenantStatus.deleted
_PROTECTED = and_(_LIVE_TENANT, Account.state == AccountState.active, Account.protected.is_(True))
# Backed-up data that is kept: an account not purged with a snapshot of its own.
_HOLDS_DATA = and_(
    Account.state != AccountState.purged, exists().where(Snapshot.account_id == Account.id)
)
# A retained seat: an account holding data that is not a protected seat (its licence
# cancelled, its seat released, or its tenant deleted).
_RETAINED = and_(
    _HOLDS_DATA,
    or_(
        Tenant.status == TenantStatus.deleted,
        Account.state != AccountState.active,
        Account.protected.is_(False),
    ),
)


def _listed(limited: bool) -> ColumnElement[bool]:
    """The scope's tenants that have figures to show: the live ones, and the deleted ones
    still holding data (so that a page's figures add up to the totals)."""
    holding = exists().where(
        Account.tenant_id == Tenant.id, or_(_HOLDS_DATA, Account.stored_bytes > 0)
    )
    return and_(bound_tenant_row_filter(limited=limited), or_(_LIVE_TENANT, holding))


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
        Tenant.status,
        protected.label("protected_seats"),
        retained.label("retained_seats"),
        stored.label("stored_bytes"),
        Tenant.created_at,
    ).where(_listed(limited))


@cache
def _page(limited: bool, after: bool) -> Select[Any]:
    """One shape of page, built once (see ``keyset_order``)."""
    return keyset_order(_per_tenant(limited), Tenant, after=after)


@cache
def _totals(limited: bool) -> Select[int, int, int]:
    """The sums over every tenant the scope sees, deleted ones included: one pass over
    their accounts (a tenant's figures summed would pass over them once per figure)."""
    return (
        select(
            func.count().filter(_PROTECTED).label("protected_seats"),
            func.count().filter(_RETAINED).label("retained_seats"),
            func.coalesce(func.sum(Account.stored_bytes), 0).label("stored_bytes"),
        )
        .select_from(Account)
        .join(Tenant, Account.tenant_id == Tenant.id)
        .where(bound_tenant_row_filter(limited=limited))
    )


async def page(
    session: AsyncSession, scope: TenantScope, *, cursor: str | None, limit: int
) -> Page[Row[Any]]:
    """Rows of (id, name, status, protected_seats, retained_seats, stored_bytes, created_at),
    newest tenant first."""
    values = {**scope.bound(), **keyset_values(cursor, limit)}
    return page_of_rows(await read_rows(session, _page(scope.limited, bool(cursor)), values), limit)


async def totals(session: AsyncSession, scope: TenantScope) -> Row[Any]:
    """One row of (protected_seats, retained_seats, stored_bytes) over all the scope sees."""
    (row,) = await read_rows(session, _totals(scope.limited), scope.bound())
    return row
