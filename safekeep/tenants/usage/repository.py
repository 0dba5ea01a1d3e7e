"""The usage figures of each live tenant a scope sees, in one statement."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Row, Select, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.db import read_rows
from safekeep.tenants.models import Account, AccountState, Snapshot, Tenant, TenantStatus
from safekeep.tenants.scope import TenantScope, bound_tenant_row_filter


@cache
def _per_tenant(limited: bool) -> Select[Any]:
    """Each tenant with its seats and bytes as correlated counts: one round trip and no
    grouping of accounts or snapshots of tenants outside the scope."""
    protected = (
        select(func.count())
        .where(
            Account.tenant_id == Tenant.id,
            Account.state == AccountState.active,
            Account.protected.is_(True),
        )
        .scalar_subquery()
    )
    # A cancelled account is a retained seat while it holds backed-up data.
    retained = (
        select(func.count())
        .where(
            Account.tenant_id == Tenant.id,
            Account.state == AccountState.cancelled,
            exists().where(Snapshot.account_id == Account.id),
        )
        .scalar_subquery()
    )
    # Kept per account as snapshots finish: a sum over the tenant's snapshots would read its
    # whole history (a year of backups) on every request.
    stored = (
        select(func.coalesce(func.sum(Account.stored_bytes), 0))
        .where(Account.tenant_id == Tenant.id)
        .scalar_subquery()
    )
    return (
        select(
            Tenant.id.label("tenant_id"),
            Tenant.name,
            protected.label("protected_seats"),
            retained.label("retained_seats"),
            stored.label("stored_bytes"),
        )
        .where(bound_tenant_row_filter(limited=limited), Tenant.status != TenantStatus.deleted)
        .order_by(Tenant.created_at)
    )


async def per_tenant(session: AsyncSession, scope: TenantScope) -> Sequence[Row[Any]]:
    """Rows of (tenant_id, name, protected_seats, retained_seats, stored_bytes), oldest
    tenant first."""
    return await read_rows(session, _per_tenant(scope.limited), scope.bound())
