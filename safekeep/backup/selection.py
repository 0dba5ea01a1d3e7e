"""What a restore or export covers: accounts and services, a point in time, and the items.

Shared by restore and export so that "the same scopes" really are the same code.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from safekeep import registry
from safekeep.backup.services import module_for
from safekeep.backup.services.base import Selection
from safekeep.errors import UnprocessableEntity
from safekeep.runtime import Runtime, unit_of_work
from safekeep.tenants.account import repository as account_repository
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Account, AccountState, ItemVersion, Snapshot, Tenant
from safekeep.tenants.scope import TenantScope

PAGE = 200


@dataclass(frozen=True)
class Unit:
    """One account and service, and the snapshot it is read at."""

    account: Account
    service: str
    snapshot: Snapshot


@dataclass(frozen=True)
class Scope:
    """Parsed from a job's params (validated at the API)."""

    type: str  # items | folders | service | account | tenant
    account_id: uuid.UUID | None
    service: str | None
    item_ids: tuple[uuid.UUID, ...]
    at: datetime | None
    snapshot_id: uuid.UUID | None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Scope:
        s = params["scope"]
        return cls(
            type=s["type"],
            account_id=uuid.UUID(s["account_id"]) if s.get("account_id") else None,
            service=s.get("service"),
            item_ids=tuple(uuid.UUID(i) for i in s.get("item_ids") or ()),
            at=datetime.fromisoformat(params["at"]) if params.get("at") else None,
            snapshot_id=uuid.UUID(params["snapshot_id"]) if params.get("snapshot_id") else None,
        )


async def resolve_units(
    runtime: Runtime, tenant_scope: TenantScope, tenant: Tenant, scope: Scope
) -> list[Unit]:
    """Every account and service in scope with the snapshot to read (the newest finished one
    at or before the point in time). Accounts with no such snapshot are left out."""
    async with unit_of_work(runtime) as session:
        at = scope.at
        pinned: Snapshot | None = None
        if scope.snapshot_id is not None:
            pinned = await catalog.get_snapshot(session, tenant_scope, scope.snapshot_id)
            if pinned is None:
                raise UnprocessableEntity("No such snapshot")
            at = pinned.completed_at
        if scope.account_id is not None:
            account = await account_repository.get(
                session, tenant_scope, tenant.id, scope.account_id
            )
            accounts = [account] if account is not None else []
        else:
            accounts = await account_repository.all_for_tenant(session, tenant_scope, tenant.id)
        units: list[Unit] = []
        for account in accounts:
            if account.state == AccountState.purged:
                continue
            services = [scope.service] if scope.service else list(registry.of_kind(account.kind))
            for service in services:
                if (
                    pinned is not None
                    and pinned.account_id == account.id
                    and pinned.service == service
                ):
                    snapshot: Snapshot | None = pinned
                else:
                    snapshot = await catalog.latest_complete(
                        session, tenant_scope, account.id, service, at=at
                    )
                if snapshot is not None:
                    units.append(Unit(account, service, snapshot))
    return units


async def _pages(
    runtime: Runtime, tenant_scope: TenantScope, unit: Unit, limit: int, **filters: Any
) -> AsyncIterator[tuple[list[ItemVersion], dict[uuid.UUID, str]]]:
    """The unit's versions at its snapshot (``catalog.versions_at`` filters), in item order,
    a page at a time with their Graph ids; each page is read in a short transaction of its
    own, so a long restore or export holds none open."""
    after: uuid.UUID | None = None
    while True:
        async with unit_of_work(runtime) as session:
            page = await catalog.versions_at(
                session,
                tenant_scope,
                unit.account.id,
                unit.service,
                unit.snapshot.seq,
                after_item_id=after,
                limit=limit,
                **filters,
            )
            if not page:
                return
            ids = await catalog.external_ids_of(session, [v.item_id for v in page])
        yield page, ids
        after = page[-1].item_id


async def build_selection(
    runtime: Runtime, tenant_scope: TenantScope, unit: Unit, scope: Scope
) -> Selection:
    module = module_for(unit.service)
    folder_kinds = list(module.folder_kinds)
    folders: dict[str, Any] = {}
    async for page, ids in _pages(runtime, tenant_scope, unit, 1000, kinds=folder_kinds):
        for version in page:
            folders[ids[version.item_id]] = version
    roots: set[str] | None = None
    item_ids = list(scope.item_ids) if scope.type == "items" else None
    if scope.type == "folders":
        async with unit_of_work(runtime) as session:
            ids = await catalog.external_ids_of(session, scope.item_ids)
        roots = {ids[i] for i in scope.item_ids if i in ids and ids[i] in folders}
        if not roots:
            raise UnprocessableEntity("None of the chosen folders existed at that point in time")
    parents: set[str] | None = None
    if roots is not None:
        parents = set(roots)
        grew = True
        while grew:  # every folder below a chosen one
            below = {e for e, f in folders.items() if f.parent_external_id in parents} - parents
            grew = bool(below)
            parents |= below

    async def items() -> AsyncIterator[Any]:
        async for page, graph_ids in _pages(
            runtime,
            tenant_scope,
            unit,
            PAGE,
            exclude_kinds=folder_kinds,
            parents=parents,
            item_ids=item_ids,
        ):
            for version in page:
                if version.item_id in graph_ids:
                    selection.graph_ids[version] = graph_ids[version.item_id]
                yield version

    selection = Selection(
        folders=folders,
        items=items,
        roots=roots,
        whole=scope.type in ("service", "account", "tenant"),
    )
    return selection
