from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache, wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Row, Select, bindparam, delete, event, inspect, select, update
from sqlalchemy import exists as sql_exists
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import object_session

from safekeep.db import read_rows
from safekeep.errors import NotFound
from safekeep.tenants.models import ConsentRequest, Job, JobKind, Policy, Tenant, TenantStatus
from safekeep.tenants.pagination import Page, keyset_order, keyset_values, page_of_rows
from safekeep.tenants.remembered import Remembered
from safekeep.tenants.rowlock import take_write_lock
from safekeep.tenants.scope import TenantScope, bound_tenant_row_filter

_P = ParamSpec("_P")
_R = TypeVar("_R", bound=Page[Any])


@cache
def _live(limited: bool, *columns: Any) -> Select[Any]:
    """A tenant (not deleted) within a scope, by id: built once per kind of scope."""
    return select(*columns).where(
        Tenant.id == bindparam("tenant_id"),
        Tenant.status != TenantStatus.deleted,
        bound_tenant_row_filter(limited=limited),
    )


async def get(session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID) -> Tenant | None:
    stmt = _live(scope.limited, Tenant)
    values = {"tenant_id": tenant_id, **scope.bound()}
    return (await session.execute(stmt, values)).scalar_one_or_none()


async def get_for_update(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID
) -> Tenant | None:
    """The tenant as ``get`` finds it, locked until commit and read afresh: what a write
    that judges the tenant first (``If-Match``) holds while it decides."""
    await take_write_lock(session, Tenant, Tenant.id == tenant_id)
    stmt = _live(scope.limited, Tenant).with_for_update()
    values = {"tenant_id": tenant_id, **scope.bound()}
    found = await session.execute(stmt.execution_options(populate_existing=True), values)
    return found.scalar_one_or_none()


async def read(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, columns: Sequence[str]
) -> Row[Any] | None:
    """``get``'s tenant as a row of ``columns``: for an answer, not for a change."""
    stmt = _live(scope.limited, *(getattr(Tenant, name) for name in columns))
    rows = await read_rows(session, stmt, {"tenant_id": tenant_id, **scope.bound()})
    return rows[0] if rows else None


async def exists(session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID) -> bool:
    """Whether ``get`` would find it, without loading it (list routes under a tenant)."""
    stmt = _live(scope.limited, Tenant.id)
    values = {"tenant_id": tenant_id, **scope.bound()}
    return bool(await read_rows(session, stmt, values))


def under_tenant(
    query: Callable[Concatenate[AsyncSession, TenantScope, uuid.UUID, _P], Awaitable[_R]],
) -> Callable[Concatenate[AsyncSession, TenantScope, uuid.UUID, _P], Awaitable[_R]]:
    """``query`` (a page under one tenant) behind the check that the scope sees that tenant:
    a list under an unknown or another MSP's tenant answers 404, not an empty page. The
    query filters by the scope and by ``live_tenant``, so only an empty page needs the
    check. The services of accounts, jobs, snapshots and detections list through this."""

    @wraps(query)
    async def checked(
        session: AsyncSession,
        scope: TenantScope,
        tenant_id: uuid.UUID,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        page = await query(session, scope, tenant_id, *args, **kwargs)
        if not page.items and not await exists(session, scope, tenant_id):
            raise NotFound("No such tenant")
        return page

    return checked


async def get_including_deleted(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID
) -> Tenant | None:
    stmt = select(Tenant).where(Tenant.id == tenant_id, scope.tenant_row_filter())
    return (await session.execute(stmt)).scalar_one_or_none()


@cache
def _page(columns: tuple[str, ...], limited: bool, by_consent: bool, after: bool) -> Select[Any]:
    """The statement of one shape of tenants page, built once (see ``keyset_order``)."""
    stmt = select(*(getattr(Tenant, name) for name in columns)).where(
        bound_tenant_row_filter(limited=limited), Tenant.status != TenantStatus.deleted
    )
    if by_consent:
        stmt = stmt.where(Tenant.consent_state == bindparam("consent_state"))
    return keyset_order(stmt, Tenant, after=after)


async def list_page(
    session: AsyncSession,
    scope: TenantScope,
    *,
    columns: Sequence[str],
    consent_state: str | None,
    cursor: str | None,
    limit: int,
) -> Page[Row[Any]]:
    """A page of the scope's tenants as rows of ``columns`` (``id`` and ``created_at`` among
    them: the cursor), newest first."""
    stmt = _page(tuple(columns), scope.limited, bool(consent_state), bool(cursor))
    values = {**scope.bound(), **keyset_values(cursor, limit)}
    if consent_state:
        values["consent_state"] = consent_state
    return page_of_rows(await read_rows(session, stmt, values), limit)


async def list_all(session: AsyncSession, scope: TenantScope) -> list[Tenant]:
    stmt = (
        select(Tenant)
        .where(scope.tenant_row_filter(), Tenant.status != TenantStatus.deleted)
        .order_by(Tenant.created_at)
    )
    return list((await session.execute(stmt)).scalars())


async def existing_ids(
    session: AsyncSession, scope: TenantScope, tenant_ids: Collection[uuid.UUID]
) -> frozenset[uuid.UUID]:
    if not tenant_ids:
        return frozenset()
    stmt = select(Tenant.id).where(
        Tenant.id.in_(list(tenant_ids)),
        Tenant.status != TenantStatus.deleted,
        scope.tenant_row_filter(),
    )
    return frozenset((await session.execute(stmt)).scalars())


async def get_policy(session: AsyncSession, tenant: Tenant) -> Policy:
    policy = await session.get(Policy, tenant.id)
    if policy is None:  # every tenant is created with one; this only guards old rows
        policy = Policy(tenant_id=tenant.id)
        session.add(policy)
        await session.flush()
    return policy


async def due_tenant_ids(session: AsyncSession, now: datetime, limit: int) -> list[uuid.UUID]:
    """System query (the scheduler): active, consented tenants whose next backup is due."""
    stmt = (
        select(Tenant.id)
        .where(
            Tenant.status == TenantStatus.active,
            Tenant.consent_state == "granted",
            Tenant.next_backup_at.is_not(None),
            Tenant.next_backup_at <= now,
        )
        .order_by(Tenant.next_backup_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def claim_due(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    expected: datetime,
    next_at: datetime,
    now: datetime,
) -> bool:
    """Move a tenant's next backup forward only if nobody else did: the compare-and-set that
    lets several scheduler replicas run without enqueuing a tenant twice. ``expected`` must
    still be due: a replica that read the row after another had claimed it sees the new slot
    (in the future) and must not claim that one too, which would push the tenant a second
    interval away."""
    stmt = (
        update(Tenant)
        .where(
            Tenant.id == tenant_id,
            Tenant.next_backup_at == expected,
            Tenant.next_backup_at <= now,
        )
        .values(next_backup_at=next_at)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def get_system(session: AsyncSession, tenant_id: uuid.UUID) -> Tenant | None:
    """Unscoped load for system code that derives the scope from the row itself (workers,
    the consent callback whose stored state names the tenant)."""
    return await session.get(Tenant, tenant_id)


async def directory_owner(
    session: AsyncSession, entra_tenant_id: str, *, excluding: uuid.UUID
) -> uuid.UUID | None:
    """System query: the live tenant (of any MSP) already bound to this Entra directory."""
    stmt = select(Tenant.id).where(
        Tenant.entra_tenant_id == entra_tenant_id,
        Tenant.status != TenantStatus.deleted,
        Tenant.id != excluding,
    )
    return (await session.execute(stmt)).scalars().first()


async def add_consent_request(session: AsyncSession, request: ConsentRequest) -> None:
    """Store a new request, and forget the tenant's expired ones."""
    await session.execute(
        delete(ConsentRequest).where(
            ConsentRequest.tenant_id == request.tenant_id,
            ConsentRequest.expires_at < request.created_at,
        )
    )
    session.add(request)
    await session.flush()


async def burn_consent_request(session: AsyncSession, state_hash: str, now: datetime) -> Any | None:
    """Mark an unused request used in one statement, so of two concurrent answers with the
    same state only one gets a row back."""
    stmt = (
        update(ConsentRequest)
        .where(ConsentRequest.state_hash == state_hash, ConsentRequest.used_at.is_(None))
        .values(used_at=now)
        .returning(
            ConsentRequest.tenant_id,
            ConsentRequest.client_id,
            ConsentRequest.authority,
            ConsentRequest.flow_sealed,
            ConsentRequest.expires_at,
        )
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).one_or_none()


async def consent_request_exists(session: AsyncSession, state_hash: str) -> bool:
    stmt = select(ConsentRequest.id).where(ConsentRequest.state_hash == state_hash)
    return (await session.execute(stmt)).first() is not None


@dataclass(frozen=True, slots=True)
class InScope:
    """The tenants a scope reaches: ``every`` one, deleted ones included (their data is still
    kept), and those of them that are ``live``."""

    every: frozenset[uuid.UUID]
    live: frozenset[uuid.UUID]


# The tenants of each scope as an API process last read them (a search reads them on every
# request). At most REMEMBER_SECONDS old when another process created or deleted a tenant; a
# process that writes a tenant forgets them when it commits (see _forget_scopes).
SCOPES: Remembered[tuple[uuid.UUID, frozenset[uuid.UUID] | None], InScope] = Remembered()


async def in_scope(session: AsyncSession, scope: TenantScope) -> InScope:
    """The tenants the scope reaches, remembered for a moment (see ``SCOPES``): a tenant
    created in another API process up to REMEMBER_SECONDS ago may be missing from them, and
    one it deleted still ``live``. Ask ``exists`` about a tenant that is not ``live``."""
    key = (scope.msp_id, scope.tenant_ids)
    known = SCOPES.get(key)
    if known is None:
        generation = SCOPES.generation
        rows = await read_rows(session, _in_scope(scope.limited), scope.bound())
        known = InScope(
            every=frozenset(row.id for row in rows),
            live=frozenset(row.id for row in rows if row.status != TenantStatus.deleted),
        )
        SCOPES.put(key, known, generation)
    return known


@cache
def _in_scope(limited: bool) -> Select[uuid.UUID, TenantStatus]:
    return select(Tenant.id, Tenant.status).where(bound_tenant_row_filter(limited=limited))


def _forget_scopes(_mapper: Any, _connection: Any, tenant: Tenant) -> None:
    """A tenant created through the ORM makes this process forget the scopes it remembers,
    now and when the write commits (a flush's rows always belong to a session)."""
    session = object_session(tenant)
    assert session is not None
    SCOPES.forget_with(session)


def _forget_scopes_on_status(mapper: Any, connection: Any, tenant: Tenant) -> None:
    """The same when a tenant's status changes (deleted)."""
    if inspect(tenant).attrs.status.history.has_changes():
        _forget_scopes(mapper, connection, tenant)


event.listen(Tenant, "after_insert", _forget_scopes)
event.listen(Tenant, "after_update", _forget_scopes_on_status)


async def due_retention(session: AsyncSession, since: datetime) -> list[Tenant]:
    """System query (the scheduler): tenants whose policy limits how long data is kept and
    that have had no purge job since ``since``; one statement, however many tenants."""
    purged = sql_exists().where(
        Job.tenant_id == Tenant.id, Job.kind == JobKind.purge, Job.created_at >= since
    )
    stmt = (
        select(Tenant)
        .join(Policy, Policy.tenant_id == Tenant.id)
        .where(Policy.retention_days.is_not(None), ~purged)
    )
    return list((await session.execute(stmt)).scalars())
