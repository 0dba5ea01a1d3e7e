"""Tenant scoping by construction.

A ``TenantScope`` is the set of tenants a caller may touch: one MSP's tenants, perhaps limited
to a few (a client portal's key). Only the helpers in this module create one, and every
repository function for a tenant-owned table takes one and filters by ``tenant_filter``. A row
outside the scope is simply not found, so another MSP's resource answers 404 and its existence
never leaks.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, bindparam, exists, false, select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import Tenant, TenantStatus
from safekeep.tenants.models.base import IdMixin

_MINT = object()

RowT = TypeVar("RowT", bound=IdMixin)


class Scope(enum.StrEnum):
    """What an API key may do. ``admin`` implies every other scope."""

    admin = "admin"
    read = "read"
    backup = "backup"
    restore = "restore"
    export = "export"


@dataclass(frozen=True, slots=True)
class TenantScope:
    msp_id: uuid.UUID
    # None: every tenant of the MSP; otherwise only these.
    tenant_ids: frozenset[uuid.UUID] | None
    _mint: object = field(repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self._mint is not _MINT:
            raise TypeError("TenantScope is made only by safekeep.tenants.scope helpers")

    @property
    def limited(self) -> bool:
        return self.tenant_ids is not None

    def allows(self, tenant_id: uuid.UUID) -> bool:
        return self.tenant_ids is None or tenant_id in self.tenant_ids

    def tenant_filter(self, tenant_id_column: Any) -> ColumnElement[bool]:
        """SQL that keeps only rows whose tenant belongs to this scope."""
        owned = select(Tenant.id).where(Tenant.msp_id == self.msp_id)
        clause: ColumnElement[bool] = tenant_id_column.in_(owned)
        if self.tenant_ids is not None:
            limited = tenant_id_column.in_(self.tenant_ids) if self.tenant_ids else false()
            clause = clause & limited
        return clause

    def bound(self) -> dict[str, Any]:
        """The values for ``bound_tenant_filter``'s parameters."""
        values: dict[str, Any] = {"scope_msp_id": self.msp_id}
        if self.tenant_ids is not None:
            values["scope_tenant_ids"] = list(self.tenant_ids)
        return values

    def tenant_row_filter(self) -> ColumnElement[bool]:
        """The same filter for the ``tenant`` table itself."""
        clause: ColumnElement[bool] = Tenant.msp_id == self.msp_id
        if self.tenant_ids is not None:
            clause = clause & (Tenant.id.in_(self.tenant_ids) if self.tenant_ids else false())
        return clause


def bound_tenant_filter(tenant_id_column: Any, *, limited: bool) -> ColumnElement[bool]:
    """``TenantScope.tenant_filter`` with bind parameters where the scope's values go, for a
    statement built once and executed with ``scope.bound()`` (``limited`` must be
    ``scope.limited``): building a statement costs more CPU than running it on a hot read."""
    owned = select(Tenant.id).where(Tenant.msp_id == bindparam("scope_msp_id"))
    clause: ColumnElement[bool] = tenant_id_column.in_(owned)
    if limited:
        clause = clause & tenant_id_column.in_(bindparam("scope_tenant_ids", expanding=True))
    return clause


def bound_tenant_rows(
    model: Any, columns: Iterable[Any], *, limited: bool, equal: Iterable[str]
) -> Select[Any]:
    """``columns`` of the rows of ``model`` under one tenant (parameter ``tenant_id``) that the
    scope sees, each column named in ``equal`` equal to the parameter of its name: the start of
    a list statement built once per shape, run with ``TenantScope.bound()`` and those values."""
    stmt = select(*columns).where(
        model.tenant_id == bindparam("tenant_id"),
        bound_tenant_filter(model.tenant_id, limited=limited),
        live_tenant(model.tenant_id),
    )
    for name in equal:
        stmt = stmt.where(getattr(model, name) == bindparam(name))
    return stmt


def live_tenant(tenant_id_column: Any) -> ColumnElement[bool]:
    """The row's tenant is not deleted. A list under one tenant filters by it as well as by
    the scope, so a page with rows proves the tenant visible and live: ``under_tenant`` asks
    about the tenant only when a page comes back empty (one statement instead of two)."""
    return exists().where(Tenant.id == tenant_id_column, Tenant.status != TenantStatus.deleted)


def looked_up_tenant_visible(tenant_id_column: Any, *, limited: bool) -> ColumnElement[bool]:
    """The row's tenant is live and the scope sees it, asked of the tenant by its key for each
    row (a scalar subquery, which PostgreSQL does not turn into a join): for the MSP-wide
    lists, whose rows already name their MSP. As an ``EXISTS``, PostgreSQL planned walks of
    the MSP's every tenant and each one's rows instead (see ``job.repository``). The
    tenant's own MSP is checked, so a row's ``msp_id`` can only narrow what a key sees."""
    tenant = (
        select(Tenant.id)
        .where(
            Tenant.id == tenant_id_column,
            Tenant.status != TenantStatus.deleted,
            bound_tenant_row_filter(limited=limited),
        )
        .scalar_subquery()
    )
    return tenant.is_not(None)


def bound_msp_rows(
    model: Any, columns: Iterable[Any], *, limited: bool, equal: Iterable[str]
) -> Select[Any]:
    """``bound_tenant_rows`` across every live tenant the scope sees, for a model whose rows
    name their tenant's MSP (``msp_id``): rows of the scope's MSP (a key limited to some
    tenants: of those tenants, which their index finds), each one's tenant checked by
    ``looked_up_tenant_visible``."""
    stmt = select(*columns).where(
        model.msp_id == bindparam("scope_msp_id"),
        looked_up_tenant_visible(model.tenant_id, limited=limited),
    )
    if limited:
        stmt = stmt.where(model.tenant_id.in_(bindparam("scope_tenant_ids", expanding=True)))
    for name in equal:
        stmt = stmt.where(getattr(model, name) == bindparam(name))
    return stmt


def bound_tenant_row_filter(*, limited: bool) -> ColumnElement[bool]:
    """``TenantScope.tenant_row_filter`` with bind parameters (see ``bound_tenant_filter``)."""
    clause: ColumnElement[bool] = Tenant.msp_id == bindparam("scope_msp_id")
    if limited:
        clause = clause & Tenant.id.in_(bindparam("scope_tenant_ids", expanding=True))
    return clause


async def get_scoped(
    session: AsyncSession,
    scope: TenantScope,
    model: type[RowT],
    row_id: uuid.UUID,
    *,
    tenant_id: uuid.UUID | None = None,
) -> RowT | None:
    """One tenant-owned row by id, or None when it is outside the scope (or, when the URL names
    a tenant, under another one): every repository's "get" is this one query."""
    table: Any = model  # every tenant-owned model has ``tenant_id``; IdMixin does not say so
    stmt = select(model).where(table.id == row_id, scope.tenant_filter(table.tenant_id))
    if tenant_id is not None:
        stmt = stmt.where(table.tenant_id == tenant_id)
    return (await session.execute(stmt)).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an MSP's API key with its scopes and tenant limit."""

    msp_id: uuid.UUID
    api_key_id: uuid.UUID | None
    scopes: frozenset[Scope]
    tenant_ids: frozenset[uuid.UUID] | None

    @property
    def actor(self) -> str:
        return f"api_key:{self.api_key_id}" if self.api_key_id else "system"

    def has(self, scope: Scope) -> bool:
        return Scope.admin in self.scopes or scope in self.scopes

    @property
    def scope(self) -> TenantScope:
        return scope_for(self)


def scope_for(principal: Principal) -> TenantScope:
    return TenantScope(principal.msp_id, principal.tenant_ids, _MINT)


def scope_for_tenant(msp_id: uuid.UUID, tenant_id: uuid.UUID) -> TenantScope:
    """For workers and system tasks that act on one tenant they already know."""
    return TenantScope(msp_id, frozenset({tenant_id}), _MINT)


def scope_for_msp(msp_id: uuid.UUID) -> TenantScope:
    """For MSP-wide system tasks (usage reports, the CLI)."""
    return TenantScope(msp_id, None, _MINT)


def system_principal(msp_id: uuid.UUID) -> Principal:
    return Principal(msp_id, None, frozenset({Scope.admin}), None)
