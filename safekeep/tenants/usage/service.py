"""Seats and storage per tenant: what an MSP is billed for (``/v1/usage`` and the daily usage
sent to Stripe read the same figures). A deleted tenant's data is kept until purged, so its
accounts that hold data count as retained seats, and their bytes as stored, until then."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import TenantStatus
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
    status: TenantStatus  # a deleted tenant is listed while it still holds data


async def totals(session: AsyncSession, scope: TenantScope) -> Usage:
    """The sums over every tenant the scope sees, by the same definitions as ``page``."""
    row = await repository.totals(session, scope)
    return Usage(
        protected_seats=int(row.protected_seats),
        retained_seats=int(row.retained_seats),
        stored_bytes=int(row.stored_bytes),
    )


async def page(
    session: AsyncSession, scope: TenantScope, *, cursor: str | None, limit: int
) -> Page[TenantUsage]:
    """A page of the scope's tenants with their figures, newest tenant first: the live ones
    and the deleted ones still holding data."""
    rows = await repository.page(session, scope, cursor=cursor, limit=limit)
    return Page(
        items=[
            TenantUsage(
                tenant_id=row.id,
                name=row.name,
                status=TenantStatus(row.status),
                protected_seats=row.protected_seats,
                retained_seats=row.retained_seats,
                stored_bytes=row.stored_bytes,
            )
            for row in rows.items
        ],
        next_cursor=rows.next_cursor,
    )
