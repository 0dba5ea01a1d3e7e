from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Row, Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.db import read_rows
from safekeep.tenants.models import Account, Snapshot
from safekeep.tenants.pagination import Page, keyset_order, keyset_values, page_of_rows
from safekeep.tenants.rowlock import one_for_update, take_write_lock
from safekeep.tenants.scope import TenantScope, bound_msp_rows, bound_tenant_rows, get_scoped


async def get(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> Account | None:
    return await get_scoped(session, scope, Account, account_id, tenant_id=tenant_id)


async def get_for_update(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> Account | None:
    """The account as ``get`` finds it, locked until commit and read afresh: what protecting
    a seat, asking for its purge and running that purge hold while each decides, so that
    they settle one after the other. PostgreSQL locks the row (``FOR UPDATE``). SQLite has
    no row locks and a ``SELECT`` takes no lock at all (the transaction begins at its first
    write), so there a write that changes nothing comes first: it takes the database's
    write lock, which serialises the deciders as the row lock does."""
    await take_write_lock(session, Account, Account.id == account_id)
    return await one_for_update(
        session,
        Account,
        Account.id == account_id,
        Account.tenant_id == tenant_id,
        scope.tenant_filter(Account.tenant_id),
    )


@cache
def _page(
    columns: tuple[str, ...],
    limited: bool,
    equal: tuple[str, ...],
    search: bool,
    stale: bool,
    after: bool,
    across: bool = False,
) -> Select[Any]:
    """The statement of one shape of accounts page (which filters, whether after a cursor,
    under one tenant or ``across`` the MSP's), built once: only bind values change between
    requests. Across the MSP the page walks the MSP's seats in page order."""
    rows = bound_msp_rows if across else bound_tenant_rows
    stmt = rows(Account, [getattr(Account, name) for name in columns], limited=limited, equal=equal)
    if search:
        pattern: Any = bindparam("pattern")
        stmt = stmt.where(
            func.lower(Account.display_name).like(pattern, escape="\\")
            | func.lower(func.coalesce(Account.principal_name, "")).like(pattern, escape="\\")
        )
    if stale:
        since: Any = bindparam("since", type_=Account.least_recent_backup_at.type)
        least = Account.least_recent_backup_at
        stmt = stmt.where(least.is_(None) | (least < since))
    return keyset_order(stmt, Account, after=after)


def _literally(text: str) -> str:
    """``text`` as a LIKE pattern that matches itself: a name search for "50%" or "a_b" finds
    those characters, not any character or run."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_page(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID | None,
    *,
    columns: Sequence[str],
    kind: str | None,
    state: str | None,
    protected: bool | None,
    search: str | None,
    not_backed_up_since: datetime | None = None,
    cursor: str | None,
    limit: int,
) -> Page[Row[Any]]:
    """A page of a tenant's accounts, or (``tenant_id`` None) of every live tenant's the
    scope sees, as rows of ``columns`` (what a list shows, not whole entities: loading 50
    ORM objects cost more than the rest of the request). ``id`` and ``created_at`` must be
    among them (the cursor)."""
    given: dict[str, Any] = {
        name: value for name, value in (("kind", kind), ("state", state)) if value
    }
    if protected is not None:
        given["protected"] = protected
    stale = not_backed_up_since is not None
    stmt = _page(
        tuple(columns),
        scope.limited,
        tuple(given),
        bool(search),
        stale,
        bool(cursor),
        tenant_id is None,
    )
    under = {} if tenant_id is None else {"tenant_id": tenant_id}
    values = {**under, **scope.bound(), **keyset_values(cursor, limit), **given}
    if search:
        values["pattern"] = f"%{_literally(search.lower())}%"
    if stale:
        values["since"] = not_backed_up_since
    return page_of_rows(await read_rows(session, stmt, values), limit)


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
