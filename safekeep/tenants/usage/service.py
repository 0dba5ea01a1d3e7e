"""Seats and storage per tenant: what an MSP is billed for."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.pagination import Page
from safekeep.tenants.scope import TenantScope
from safekeep.tenants.usage import repository


@dataclass(frozen=True)
class Usage:
    """Seats and bytes: one tenant's, or the sum over all tenants a scope sees."""

    protected_seats: int
    retained_seats: int
    stored_bytes: int


@dataclass(frozen=True)
class TenantUsage(Usage):
    tenant_id: uuid.UUID
    name: str


async def totals(session: AsyncSession, scope: TenantScope) -> Usage:
    """The sums over every live tenant the scope sees, by the same definitions as ``page``."""
    row = await repository.totals(session, scope)
    return Usage(
        protected_seats=int(row.protected_seats),
        retained_seats=int(row.retained_seats),
        stored_bytes=int(row.stored_bytes),
    )


async def page(
    session: AsyncSession, scope: TenantScope, *, cursor: str | None, limit: int
) -> Page[TenantUsage]:
    """A page of the scope's live tenants with their figures, newest tenant first."""
    rows = await repository.page(session, scope, cursor=cursor, limit=limit)
    return Page(
        items=[
            TenantUsage(
                tenant_id=row.id,
                name=row.name,
                protected_seats=row.protected_seats,
                retained_seats=row.retained_seats,
                stored_bytes=row.stored_bytes,
            )
            for row in rows.items
        ],
        next_cursor=rows.next_cursor,
    )
