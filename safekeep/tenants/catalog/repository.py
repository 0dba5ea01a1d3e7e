"""Queries of the item catalog: items, their versions, snapshots and delta state.

The backup engine writes through these; browse, restore, export and search read through them.
Every read for the API takes a TenantScope; the engine's writes are keyed by an account it
already loaded within its tenant's scope.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, TypeVar, TypeVarTuple

from sqlalchemy import (
    ColumnElement,
    Executable,
    Insert,
    Select,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep import registry
from safekeep.db import read_rows
from safekeep.tenants.models import (
    Account,
    DeltaState,
    EnumerationSeen,
    Export,
    ExportStatus,
    Item,
    ItemVersion,
    Policy,
    SkippedItem,
    Snapshot,
    SnapshotStatus,
)
from safekeep.tenants.models.base import new_id, table_of
from safekeep.tenants.models.item_version import NAME_KEY_CHARS, name_key
from safekeep.tenants.pagination import Page, keyset_page
from safekeep.tenants.scope import TenantScope, bound_tenant_filter, get_scoped

# --- snapshots -----------------------------------------------------------------------------


@cache
def _latest() -> Select[Snapshot]:
    return (
        select(Snapshot)
        .where(
            Snapshot.account_id == bindparam("account_id"), Snapshot.service == bindparam("service")
        )
        .order_by(Snapshot.seq.desc())
        .limit(1)
    )


async def latest_snapshot(
    session: AsyncSession, account_id: uuid.UUID, service: str
) -> Snapshot | None:
    """The account and service's newest snapshot: the running one if there is one (a run
    starts a snapshot only when none is running, so a running one is always the newest).
    Every backup task begins with it: the statement is built once."""
    values = {"account_id": account_id, "service": service}
    return (await session.execute(_latest(), values)).scalar_one_or_none()


@cache
def _next_snapshot() -> Insert:
    """The next snapshot of an account and service, its ``seq`` counted in the statement."""
    table = table_of(Snapshot)
    seq = (
        select(func.coalesce(func.max(table.c.seq), 0) + 1)
        .where(
            table.c.account_id == bindparam("n_account_id"),
            table.c.service == bindparam("n_service"),
        )
        .scalar_subquery()
    )
    return table.insert().values(seq=seq).returning(table.c.seq)


async def insert_next_snapshot(session: AsyncSession, values: Mapping[str, Any]) -> int:
    """Insert the account and service's next snapshot (``values``: every column but
    ``seq``) and return its seq: one statement where reading the newest and inserting after
    it were two, for a run that knows none is running (its task's claim saw none). A
    concurrent start of the same seq fails on the table's unique seq, as the two would."""
    params = {**values, "n_account_id": values["account_id"], "n_service": values["service"]}
    return int((await session.execute(_next_snapshot(), params)).scalar_one())


async def latest_complete(
    session: AsyncSession,
    scope: TenantScope,
    account_id: uuid.UUID,
    service: str,
    *,
    at: datetime | None = None,
) -> Snapshot | None:
    """The newest finished snapshot (at or before ``at`` when given)."""
    stmt = select(Snapshot).where(
        Snapshot.account_id == account_id,
        Snapshot.service == service,
        Snapshot.status.in_([SnapshotStatus.complete, SnapshotStatus.partial]),
        scope.tenant_filter(Snapshot.tenant_id),
    )
    if at is not None:
        stmt = stmt.where(Snapshot.completed_at <= at)
    stmt = stmt.order_by(Snapshot.seq.desc()).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_snapshot(
    session: AsyncSession, scope: TenantScope, snapshot_id: uuid.UUID
) -> Snapshot | None:
    return await get_scoped(session, scope, Snapshot, snapshot_id)


async def interrupt_snapshot(session: AsyncSession, snapshot_id: uuid.UUID) -> None:
    """Its task ended without finishing it (failed or cancelled): it shows so, rather than
    running for ever, until the account's next backup of the service resumes it. A snapshot
    that finished is left as it is."""
    await session.execute(
        update(Snapshot)
        .where(Snapshot.id == snapshot_id, Snapshot.status == SnapshotStatus.running)
        .values(status=SnapshotStatus.interrupted)
        .execution_options(synchronize_session=False)
    )


@cache
def _finish() -> Update:
    """``finish_snapshot``'s statement, built once on the Core table (``table_of``): every
    backup task ends with it."""
    snapshot, version = table_of(Snapshot).c, table_of(ItemVersion).c
    open_versions = select(func.count()).where(
        version.account_id == bindparam("f_account_id"),
        version.service == bindparam("f_service"),
        version.last_seq.is_(None),
    )
    return (
        update(table_of(Snapshot))
        .where(snapshot.id == bindparam("f_snapshot_id"))
        .values(
            status=bindparam("f_status"),
            completed_at=bindparam("f_completed_at"),
            items_added=snapshot.items_added + bindparam("f_added"),
            items_changed=snapshot.items_changed + bindparam("f_changed"),
            items_removed=snapshot.items_removed + bindparam("f_removed"),
            bytes_added=snapshot.bytes_added + bindparam("f_bytes_added"),
            skipped=bindparam("f_skipped"),
            items_total=open_versions.scalar_subquery(),
        )
    )


async def finish_snapshot(
    session: AsyncSession,
    snapshot_id: uuid.UUID,
    *,
    account_id: uuid.UUID,
    service: str,
    status: SnapshotStatus,
    completed_at: datetime,
    added: int,
    changed: int,
    removed: int,
    bytes_added: int,
    skipped: int,
) -> bool:
    """End a snapshot in one statement: its counters grow by this run's (a resumed snapshot
    keeps what earlier attempts recorded) and its total is the open versions counted now.
    False when the snapshot is gone."""
    values = {
        "f_snapshot_id": snapshot_id,
        "f_account_id": account_id,
        "f_service": service,
        "f_status": status,
        "f_completed_at": completed_at,
        "f_added": added,
        "f_changed": changed,
        "f_removed": removed,
        "f_bytes_added": bytes_added,
        "f_skipped": skipped,
    }
    result = await session.execute(_finish(), values)
    found = bool(result.rowcount)  # type: ignore[attr-defined]
    if found:
        await _account_backed_up(session, account_id, service, completed_at, bytes_added)
    return found


async def _account_backed_up(
    session: AsyncSession,
    account_id: uuid.UUID,
    service: str,
    completed_at: datetime,
    bytes_added: int,
) -> None:
    """The account's stored bytes grow with its snapshot's; its last backup, and its
    service's, are this one unless a later one finished first; and its least recent backup
    is the oldest of the last backups of the services it is backed up for now (read under
    the account's lock, after the snapshot's write: two services finishing at once are
    counted one after the other)."""
    kind, services_found, kept, wanted = (
        await session.execute(_account_backups(), {"g_account_id": account_id})
    ).one()
    last = dict(kept)
    if service not in last or last[service] < completed_at:
        last[service] = completed_at
    expected = registry.covered(
        kind, services_found, registry.defaults() if wanted is None else wanted
    )
    times = [last.get(name) for name in expected or last]
    await session.execute(
        _account_backed_up_update(),
        {
            "g_account_id": account_id,
            "g_bytes": bytes_added,
            "g_at": completed_at,
            "g_last": last,
            "g_least": None if None in times else min(t for t in times if t is not None),
        },
    )


@cache
def _account_backups() -> Select[tuple[Any, Any, Any, Any]]:
    """What the account's least recent backup is computed from, the account locked: its kind,
    what discovery found, each service's last backup, and its tenant's policy's services
    (None when the tenant has no policy row: a new tenant's defaults)."""
    account = table_of(Account).c
    policy = table_of(Policy)
    return (
        select(account.kind, account.services_found, account.last_backups, policy.c.services)
        .select_from(table_of(Account).outerjoin(policy, policy.c.tenant_id == account.tenant_id))
        .where(account.id == bindparam("g_account_id"))
        .with_for_update(of=table_of(Account))
    )


@cache
def _account_backed_up_update() -> Update:
    """The account's figures after a snapshot finished (built once, like ``_finish``)."""
    account = table_of(Account).c
    at = bindparam("g_at", type_=account.last_backup_at.type)
    return (
        update(table_of(Account))
        .where(account.id == bindparam("g_account_id"))
        .values(
            stored_bytes=account.stored_bytes + bindparam("g_bytes"),
            last_backup_at=case(
                (account.last_backup_at.is_(None) | (account.last_backup_at < at), at),
                else_=account.last_backup_at,
            ),
            last_backups=bindparam("g_last", type_=account.last_backups.type),
            least_recent_backup_at=bindparam("g_least", type_=account.least_recent_backup_at.type),
        )
    )


# --- items and versions -------------------------------------------------------------------


async def get_item(
    session: AsyncSession, account_id: uuid.UUID, service: str, external_id: str
) -> Item | None:
    stmt = select(Item).where(
        Item.account_id == account_id, Item.service == service, Item.external_id == external_id
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def items_with_open_versions(
    session: AsyncSession, account_id: uuid.UUID, service: str, external_ids: Collection[str]
) -> dict[str, tuple[Item, ItemVersion | None]]:
    """These items by Graph id, each with its open version if it has one: what recording a
    page needs to know, in one query."""
    if not external_ids:
        return {}
    stmt = (
        select(Item, ItemVersion)
        .outerjoin(
            ItemVersion, and_(ItemVersion.item_id == Item.id, ItemVersion.last_seq.is_(None))
        )
        .where(
            Item.account_id == account_id,
            Item.service == service,
            Item.external_id.in_(list(external_ids)),
        )
    )
    return {
        item.external_id: (item, version) for item, version in (await session.execute(stmt)).all()
    }


def _open_versions(*where: ColumnElement[bool]) -> Select[str, ItemVersion]:
    """Items' current versions beside their external ids, as delta pages and removals match
    them; callers add the account, service and what narrows it (on whichever table their
    index wants)."""
    return (
        select(Item.external_id, ItemVersion)
        .join(ItemVersion, ItemVersion.item_id == Item.id)
        .where(*where, ItemVersion.last_seq.is_(None))
    )


async def open_versions_by_external_ids(
    session: AsyncSession, account_id: uuid.UUID, service: str, external_ids: Collection[str]
) -> dict[str, ItemVersion]:
    """The current version of each of these items (one query for a whole delta page)."""
    if not external_ids:
        return {}
    stmt = _open_versions(
        Item.account_id == account_id,
        Item.service == service,
        Item.external_id.in_(list(external_ids)),
    )
    return {ext: version for ext, version in (await session.execute(stmt)).all()}


async def open_versions_under(
    session: AsyncSession, account_id: uuid.UUID, service: str, parent_external_id: str
) -> list[tuple[str, ItemVersion]]:
    stmt = _open_versions(
        ItemVersion.account_id == account_id,
        ItemVersion.service == service,
        ItemVersion.parent_external_id == parent_external_id,
    )
    return [(ext, v) for ext, v in (await session.execute(stmt)).all()]


async def open_version_keys(
    session: AsyncSession,
    account_id: uuid.UUID,
    service: str,
    kinds: Collection[str],
    *,
    parent_external_id: str | None = None,
) -> list[tuple[str, uuid.UUID, int]]:
    """(Graph id, version id, first_seq) of the open versions of these kinds (under one parent
    when given): what removing the unseen needs, a few dozen bytes a row rather than whole
    versions, so a folder of 100,000 messages costs megabytes, not a gigabyte."""
    return await _open_version_keys(session, account_id, service, kinds, parent_external_id)


async def _open_version_keys(
    session: AsyncSession,
    account_id: uuid.UUID,
    service: str,
    kinds: Collection[str],
    parent_external_id: str | None,
    *conditions: Any,
) -> list[tuple[str, uuid.UUID, int]]:
    """The one query behind ``open_version_keys`` and its unseen variant, narrowed by
    ``conditions``."""
    stmt = (
        select(Item.external_id, ItemVersion.id, ItemVersion.first_seq)
        .join(ItemVersion, ItemVersion.item_id == Item.id)
        .where(
            ItemVersion.account_id == account_id,
            ItemVersion.service == service,
            ItemVersion.kind.in_(list(kinds)),
            ItemVersion.last_seq.is_(None),
            *conditions,
        )
    )
    if parent_external_id is not None:
        stmt = stmt.where(ItemVersion.parent_external_id == parent_external_id)
    return [(e, i, f) for e, i, f in (await session.execute(stmt)).all()]


def _unseen(snapshot_id: uuid.UUID, collection: str) -> Any:
    seen = select(EnumerationSeen.external_id).where(
        EnumerationSeen.snapshot_id == snapshot_id,
        EnumerationSeen.collection == collection,
        EnumerationSeen.external_id == Item.external_id,
    )
    return ~seen.exists()


async def open_version_keys_unseen(
    session: AsyncSession,
    account_id: uuid.UUID,
    service: str,
    kinds: Collection[str],
    *,
    snapshot_id: uuid.UUID,
    collection: str,
    parent_external_id: str | None = None,
) -> list[tuple[str, uuid.UUID, int]]:
    """``open_version_keys`` of the items a full enumeration did not see (its rows in
    ``enumeration_seen``): the database compares, the worker holds only what is gone."""
    return await _open_version_keys(
        session, account_id, service, kinds, parent_external_id, _unseen(snapshot_id, collection)
    )


async def add_seen(
    session: AsyncSession, snapshot_id: uuid.UUID, collection: str, external_ids: Collection[str]
) -> None:
    """Remember that a full enumeration saw these (seeing one twice is fine)."""
    ids = sorted(set(external_ids))
    if not ids:
        return
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    for start in range(0, len(ids), 500):
        await session.execute(
            insert(EnumerationSeen)
            .values(
                [
                    {"snapshot_id": snapshot_id, "collection": collection, "external_id": e}
                    for e in ids[start : start + 500]
                ]
            )
            .on_conflict_do_nothing()
        )


async def clear_seen(session: AsyncSession, snapshot_id: uuid.UUID, collection: str) -> None:
    await session.execute(
        delete(EnumerationSeen).where(
            EnumerationSeen.snapshot_id == snapshot_id, EnumerationSeen.collection == collection
        )
    )


async def has_open_older(
    session: AsyncSession,
    account_id: uuid.UUID,
    service: str,
    kinds: Collection[str],
    seq: int,
    *,
    parent_external_id: str | None = None,
) -> bool:
    """Whether an open version of these kinds (under one parent when given) predates ``seq``."""
    stmt = select(ItemVersion.id).where(
        ItemVersion.account_id == account_id,
        ItemVersion.service == service,
        ItemVersion.kind.in_(list(kinds)),
        ItemVersion.last_seq.is_(None),
        ItemVersion.first_seq < seq,
    )
    if parent_external_id is not None:
        stmt = stmt.where(ItemVersion.parent_external_id == parent_external_id)
    return (await session.execute(stmt.limit(1))).first() is not None


async def end_versions(
    session: AsyncSession, version_ids: Sequence[uuid.UUID], *, last_seq: int, valid_to: datetime
) -> None:
    """Close these versions at ``last_seq`` (a few hundred ids a statement)."""
    for start in range(0, len(version_ids), 500):
        await session.execute(
            update(ItemVersion)
            .where(ItemVersion.id.in_(list(version_ids[start : start + 500])))
            .values(last_seq=last_seq, valid_to=valid_to)
            .execution_options(synchronize_session=False)
        )


async def open_external_ids(
    session: AsyncSession, account_id: uuid.UUID, service: str, kinds: Collection[str]
) -> dict[str, ItemVersion]:
    stmt = _open_versions(
        ItemVersion.account_id == account_id,
        ItemVersion.service == service,
        ItemVersion.kind.in_(list(kinds)),
    )
    return {ext: v for ext, v in (await session.execute(stmt)).all()}


async def delete_version(session: AsyncSession, version_id: uuid.UUID) -> None:
    await session.execute(delete(ItemVersion).where(ItemVersion.id == version_id))


@cache
def _mark_indexed() -> Update:
    version = table_of(ItemVersion).c
    return (
        update(table_of(ItemVersion))
        .where(version.id.in_(bindparam("m_ids", expanding=True)))
        .values(indexed=True)
    )


async def mark_indexed(session: AsyncSession, version_ids: Sequence[uuid.UUID]) -> None:
    """Every stored page ends with this: one cached Core statement (``table_of``)."""
    if version_ids:
        await session.execute(_mark_indexed(), {"m_ids": list(version_ids)})


async def stale_unindexed(
    session: AsyncSession, before: datetime, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(tenant, version) of versions first stored before ``before`` and still not known to be
    indexed, newest first (``ix_item_version_unindexed``): a document the search backend
    refuses for good stays behind, and must not keep versions lost since from being sent."""
    rows = await session.execute(
        select(ItemVersion.tenant_id, ItemVersion.id)
        .where(ItemVersion.indexed.is_(False), ItemVersion.valid_from < before)
        .order_by(ItemVersion.valid_from.desc())
        .limit(limit)
    )
    return [(tenant_id, version_id) for tenant_id, version_id in rows.all()]


async def versions_by_ids(
    session: AsyncSession, tenant_id: uuid.UUID, version_ids: Collection[uuid.UUID]
) -> list[ItemVersion]:
    stmt = select(ItemVersion).where(
        ItemVersion.tenant_id == tenant_id, ItemVersion.id.in_(list(version_ids))
    )
    return list((await session.execute(stmt)).scalars())


Ts = TypeVarTuple("Ts")


def at_seq(stmt: Select[*Ts], seq: int) -> Select[*Ts]:
    """Versions that are the item's state at snapshot ``seq``."""
    return stmt.where(
        ItemVersion.first_seq <= seq,
        or_(ItemVersion.last_seq.is_(None), ItemVersion.last_seq >= seq),
    )


def state_at(
    stmt: Select[*Ts], scope: TenantScope, account_id: uuid.UUID, service: str, seq: int
) -> Select[*Ts]:
    """An account and service as they were at snapshot ``seq``, within the caller's scope:
    the one filter browse, restore and export all read through."""
    return at_seq(
        stmt.where(
            ItemVersion.account_id == account_id,
            ItemVersion.service == service,
            scope.tenant_filter(ItemVersion.tenant_id),
        ),
        seq,
    )


# --- browse (scoped) ----------------------------------------------------------------------


async def children_at(
    session: AsyncSession,
    scope: TenantScope,
    account_id: uuid.UUID,
    service: str,
    seq: int,
    *,
    parent_external_id: str | None,
    after_name: tuple[str, uuid.UUID] | None,
    limit: int,
    kinds: Collection[str] | None = None,
) -> list[tuple[Item, ItemVersion]]:
    """Items directly under a folder (or at the root when None) as of ``seq``, by name: its
    first ``NAME_KEY_CHARS`` characters, then the item (the order of ``ix_item_version_children``).
    ``after_name`` is the last row's whole name and item."""
    stmt = state_at(
        select(Item, ItemVersion).join(ItemVersion, ItemVersion.item_id == Item.id),
        scope,
        account_id,
        service,
        seq,
    )
    if parent_external_id is None:
        stmt = stmt.where(ItemVersion.parent_external_id.is_(None))
    else:
        stmt = stmt.where(ItemVersion.parent_external_id == parent_external_id)
    if kinds:
        stmt = stmt.where(ItemVersion.kind.in_(list(kinds)))
    key = name_key(ItemVersion.name)
    if after_name is not None:
        name, item_id = after_name
        # Not a row value: SQLite seeks an expression's index column only by a plain range.
        at = literal(name[:NAME_KEY_CHARS], type_=ItemVersion.name.type)
        stmt = stmt.where(key >= at, or_(key > at, ItemVersion.item_id > item_id))
    stmt = stmt.order_by(key, ItemVersion.item_id).limit(limit)
    return [(i, v) for i, v in (await session.execute(stmt)).all()]


async def folder_at(
    session: AsyncSession,
    scope: TenantScope,
    account_id: uuid.UUID,
    service: str,
    seq: int,
    external_id: str,
) -> ItemVersion | None:
    """The folder with this Graph id as it was at ``seq`` (its name and parent)."""
    stmt = state_at(
        select(ItemVersion).join(Item, ItemVersion.item_id == Item.id),
        scope,
        account_id,
        service,
        seq,
    ).where(Item.account_id == account_id, Item.service == service, Item.external_id == external_id)
    return (await session.execute(stmt.limit(1))).scalar_one_or_none()


async def get_scoped_item(
    session: AsyncSession,
    scope: TenantScope,
    account_id: uuid.UUID,
    item_id: uuid.UUID,
) -> Item | None:
    stmt = select(Item).where(
        Item.id == item_id, Item.account_id == account_id, scope.tenant_filter(Item.tenant_id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def versions_of(
    session: AsyncSession,
    scope: TenantScope,
    item_id: uuid.UUID,
    *,
    before_seq: int | None = None,
    limit: int | None = None,
) -> list[ItemVersion]:
    """An item's versions, newest first (those that began before snapshot ``before_seq``,
    if given): read backwards along the item's ``(item_id, first_seq)`` key."""
    stmt = select(ItemVersion).where(
        ItemVersion.item_id == item_id, scope.tenant_filter(ItemVersion.tenant_id)
    )
    if before_seq is not None:
        stmt = stmt.where(ItemVersion.first_seq < before_seq)
    stmt = stmt.order_by(ItemVersion.first_seq.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def version_at(
    session: AsyncSession, scope: TenantScope, item_id: uuid.UUID, seq: int
) -> ItemVersion | None:
    stmt = at_seq(
        select(ItemVersion).where(
            ItemVersion.item_id == item_id, scope.tenant_filter(ItemVersion.tenant_id)
        ),
        seq,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_scoped_version(
    session: AsyncSession, scope: TenantScope, version_id: uuid.UUID
) -> ItemVersion | None:
    return await get_scoped(session, scope, ItemVersion, version_id)


async def items_by_ids(
    session: AsyncSession, scope: TenantScope, item_ids: Collection[uuid.UUID]
) -> list[Item]:
    if not item_ids:
        return []
    stmt = select(Item).where(Item.id.in_(list(item_ids)), scope.tenant_filter(Item.tenant_id))
    return list((await session.execute(stmt)).scalars())


@cache
def _external_ids(limited: bool) -> Select[uuid.UUID, str]:
    return select(Item.id, Item.external_id).where(
        Item.id.in_(bindparam("item_ids", expanding=True)),
        bound_tenant_filter(Item.tenant_id, limited=limited),
    )


async def external_ids(
    session: AsyncSession, scope: TenantScope, item_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Graph ids of the items the scope sees, by item id (a search page's links): two columns
    of a statement built once, not whole entities."""
    if not item_ids:
        return {}
    values = {"item_ids": list(item_ids), **scope.bound()}
    return dict(
        tuple(row) for row in await read_rows(session, _external_ids(scope.limited), values)
    )


# --- delta state --------------------------------------------------------------------------

KeptT = TypeVar("KeptT", DeltaState, SkippedItem)


def _kept_for(model: type[KeptT], account_id: uuid.UUID, service: str) -> Select[KeptT]:
    """Delta tokens and unreadable items are both kept per account and service."""
    return select(model).where(model.account_id == account_id, model.service == service)


async def delta_state(
    session: AsyncSession, account_id: uuid.UUID, service: str, collection: str
) -> DeltaState | None:
    stmt = _kept_for(DeltaState, account_id, service).where(DeltaState.collection == collection)
    return (await session.execute(stmt)).scalar_one_or_none()


async def delta_states(
    session: AsyncSession, account_id: uuid.UUID, service: str
) -> list[DeltaState]:
    values = {"k_account_id": account_id, "k_service": service}
    return list((await session.execute(_delta_states(), values)).scalars())


@cache
def _delta_states() -> Select[DeltaState]:
    """Every backup task reads its delta links: the statement is built once."""
    return select(DeltaState).where(
        DeltaState.account_id == bindparam("k_account_id"),
        DeltaState.service == bindparam("k_service"),
    )


async def delete_delta_state(session: AsyncSession, state_id: uuid.UUID) -> None:
    await session.execute(delete(DeltaState).where(DeltaState.id == state_id))


async def save_delta_states(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    service: str,
    finished: Mapping[str, str],
    resumable: Mapping[str, tuple[str | None, int | None]],
    now: datetime,
) -> None:
    """Where delta stands for many collections at once: ``finished`` passes set their delta
    link (and clear any resume point); ``resumable`` ones set only their resume point (link,
    snapshot seq), keeping the delta link they had. One upsert per kind, sent once with
    every collection's row (executemany of one cached statement), not a read and a write per
    collection: an unchanged mailbox moves the links of all its folders in every run."""
    dialect = session.get_bind().dialect.name
    base = {"tenant_id": tenant_id, "account_id": account_id, "service": service}
    done = [
        {**base, "id": new_id(), "collection": c, "delta_link": link, "updated_at": now}
        for c, link in finished.items()
    ]
    resume = [
        {
            **base,
            "id": new_id(),
            "collection": c,
            "resume_link": link,
            "resume_seq": seq,
            "updated_at": now,
        }
        for c, (link, seq) in resumable.items()
    ]
    connection = await session.connection()
    for rows, upsert in ((done, _finish_delta(dialect)), (resume, _resume_delta(dialect))):
        if rows:
            await connection.execute(upsert, rows)


@cache
def _finish_delta(dialect: str) -> Executable:
    return _delta_upsert(dialect, {"delta_link", "updated_at"}, clear_resume=True)


@cache
def _resume_delta(dialect: str) -> Executable:
    return _delta_upsert(dialect, {"resume_link", "resume_seq", "updated_at"}, clear_resume=False)


def _delta_upsert(dialect: str, columns: set[str], *, clear_resume: bool) -> Executable:
    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    names = ["id", "tenant_id", "account_id", "service", "collection", *sorted(columns)]
    stmt = insert(DeltaState).values({name: bindparam(name) for name in names})
    set_: dict[str, Any] = {name: stmt.excluded[name] for name in sorted(columns)}
    if clear_resume:
        set_.update(resume_link=None, resume_seq=None)
    return stmt.on_conflict_do_update(
        index_elements=["account_id", "service", "collection"], set_=set_
    )


async def versions_at(
    session: AsyncSession,
    scope: TenantScope,
    account_id: uuid.UUID,
    service: str,
    seq: int,
    *,
    kinds: Collection[str] | None = None,
    exclude_kinds: Collection[str] | None = None,
    parents: Collection[str] | None = None,
    item_ids: Collection[uuid.UUID] | None = None,
    after_item_id: uuid.UUID | None = None,
    limit: int = 500,
) -> list[ItemVersion]:
    """The state of an account and service at snapshot ``seq``, filtered, in item order (for
    restore and export, which page through it to keep memory bounded)."""
    stmt = state_at(select(ItemVersion), scope, account_id, service, seq)
    if kinds is not None:
        stmt = stmt.where(ItemVersion.kind.in_(list(kinds)))
    if exclude_kinds:
        stmt = stmt.where(ItemVersion.kind.not_in(list(exclude_kinds)))
    if parents is not None:
        stmt = stmt.where(ItemVersion.parent_external_id.in_(list(parents)))
    if item_ids is not None:
        stmt = stmt.where(ItemVersion.item_id.in_(list(item_ids)))
    if after_item_id is not None:
        stmt = stmt.where(ItemVersion.item_id > after_item_id)
    stmt = stmt.order_by(ItemVersion.item_id).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def external_ids_of(
    session: AsyncSession, item_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, str]:
    if not item_ids:
        return {}
    stmt = select(Item.id, Item.external_id).where(Item.id.in_(list(item_ids)))
    return {i: e for i, e in (await session.execute(stmt)).all()}


# --- items a backup could not read -----------------------------------------------------------


async def skipped_items(
    session: AsyncSession, account_id: uuid.UUID, service: str
) -> list[SkippedItem]:
    values = {"k_account_id": account_id, "k_service": service}
    return list((await session.execute(_skipped_items(), values)).scalars())


@cache
def _skipped_items() -> Select[SkippedItem]:
    """Every backup task reads what earlier runs skipped: the statement is built once."""
    return (
        select(SkippedItem)
        .where(
            SkippedItem.account_id == bindparam("k_account_id"),
            SkippedItem.service == bindparam("k_service"),
        )
        .order_by(SkippedItem.created_at)
    )


async def skipped_item(
    session: AsyncSession, account_id: uuid.UUID, service: str, external_id: str
) -> SkippedItem | None:
    stmt = _kept_for(SkippedItem, account_id, service).where(SkippedItem.external_id == external_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def delete_skipped(
    session: AsyncSession, account_id: uuid.UUID, service: str, external_ids: Collection[str]
) -> None:
    if external_ids:
        await session.execute(
            delete(SkippedItem).where(
                SkippedItem.account_id == account_id,
                SkippedItem.service == service,
                SkippedItem.external_id.in_(list(external_ids)),
            )
        )


# --- exports ---------------------------------------------------------------------------------


async def get_export(
    session: AsyncSession, scope: TenantScope, export_id: uuid.UUID
) -> Export | None:
    return await get_scoped(session, scope, Export, export_id)


async def list_exports(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> Page[Export]:
    stmt = select(Export).where(
        Export.tenant_id == tenant_id, scope.tenant_filter(Export.tenant_id)
    )
    return await keyset_page(session, stmt, Export, cursor=cursor, limit=limit)


async def expired_exports(session: AsyncSession, now: datetime, limit: int) -> list[Export]:
    stmt = (
        select(Export)
        .where(Export.status == ExportStatus.ready, Export.expires_at <= now)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


# --- purge and retention -------------------------------------------------------------------


async def delete_account_catalog(session: AsyncSession, account_id: uuid.UUID) -> int:
    """Every catalog row of an account (versions, items, snapshots, delta state, skips)."""
    removed = await session.execute(delete(ItemVersion).where(ItemVersion.account_id == account_id))
    await session.execute(delete(Item).where(Item.account_id == account_id))
    await session.execute(delete(DeltaState).where(DeltaState.account_id == account_id))
    await session.execute(delete(SkippedItem).where(SkippedItem.account_id == account_id))
    await session.execute(delete(Snapshot).where(Snapshot.account_id == account_id))
    await session.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(stored_bytes=0, last_backup_at=None, last_backups={}, least_recent_backup_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(removed.rowcount or 0)  # type: ignore[attr-defined]


async def expired_version_ids(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    before: datetime,
    limit: int,
    held: Collection[uuid.UUID] = (),
    *,
    after: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Versions that stopped being current before ``before`` (retention is over for them),
    but for accounts ``held`` (a detection keeps their clean versions): up to ``limit`` of
    them in id order, after ``after`` (the last of the previous batch), so that a sweep reads
    each of the tenant's versions once rather than the kept ones again for every batch."""
    stmt = select(ItemVersion.id).where(
        ItemVersion.tenant_id == tenant_id,
        ItemVersion.valid_to.is_not(None),
        ItemVersion.valid_to < before,
    )
    if after is not None:
        stmt = stmt.where(ItemVersion.id > after)
    if held:
        stmt = stmt.where(ItemVersion.account_id.not_in(list(held)))
    stmt = stmt.order_by(ItemVersion.id).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def delete_versions(session: AsyncSession, version_ids: Collection[uuid.UUID]) -> None:
    ids = list(version_ids)
    for start in range(0, len(ids), 500):
        await session.execute(
            delete(ItemVersion).where(ItemVersion.id.in_(ids[start : start + 500]))
        )


async def delete_orphan_items(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    """Items none of whose versions remain."""
    has_version = select(ItemVersion.item_id).where(ItemVersion.tenant_id == tenant_id)
    result = await session.execute(
        delete(Item).where(Item.tenant_id == tenant_id, Item.id.not_in(has_version))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def blob_refs(
    session: AsyncSession, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[tuple[uuid.UUID, list[dict[str, object]]]]:
    """(version id, every ContentRef it names) of a tenant's versions, in id order: the blob
    garbage collector's mark phase."""
    stmt = select(
        ItemVersion.id, ItemVersion.content, ItemVersion.document, ItemVersion.refs
    ).where(ItemVersion.tenant_id == tenant_id)
    if after is not None:
        stmt = stmt.where(ItemVersion.id > after)
    stmt = stmt.order_by(ItemVersion.id).limit(limit)
    rows = (await session.execute(stmt)).all()
    return [(i, [r for r in (c, d, *(refs or [])) if r]) for i, c, d, refs in rows]
