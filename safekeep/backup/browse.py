"""Browsing backed-up data as it was at a point in time. Reads only our database and blob
store, so it works while Microsoft 365 is down."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep import registry
from safekeep.backup.context import open_repository
from safekeep.backup.services import module_for
from safekeep.backup.services.base import Content
from safekeep.errors import InvalidCursor, NotFound, UnprocessableEntity
from safekeep.instants import OutOfRange, as_utc
from safekeep.runtime import Runtime
from safekeep.tenants.account import service as account_service
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Account, Item, ItemVersion, Snapshot
from safekeep.tenants.pagination import decode_cursor, encode_cursor
from safekeep.tenants.scope import TenantScope
from safekeep.tenants.tenant import service as tenant_service
from safekeep.text import storable_text


@dataclass(frozen=True)
class PointInTime:
    snapshot: Snapshot

    @property
    def seq(self) -> int:
        return self.snapshot.seq


def parse_at(value: str | None) -> datetime | uuid.UUID | None:
    """``at`` is a timestamp (ISO 8601; UTC when it has no zone) or a snapshot id."""
    if value is None or value == "":
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UnprocessableEntity(
            "`at` must be an ISO 8601 timestamp or a snapshot id",
            errors=[{"loc": ["query", "at"], "msg": "not a timestamp or snapshot id"}],
        ) from exc
    try:
        return as_utc(parsed)
    except OutOfRange as exc:
        raise UnprocessableEntity(
            f"`at` {exc}", errors=[{"loc": ["query", "at"], "msg": str(exc)}]
        ) from exc


async def point_in_time(
    session: AsyncSession,
    scope: TenantScope,
    account: Account,
    service: str,
    at: datetime | uuid.UUID | None,
) -> PointInTime:
    if service not in registry.names():
        raise UnprocessableEntity(f"Unknown service {service!r}")
    if isinstance(at, uuid.UUID):
        snapshot = await catalog.get_snapshot(session, scope, at)
        if snapshot is None or snapshot.account_id != account.id or snapshot.service != service:
            raise NotFound("No such snapshot for this account and service")
        if snapshot.completed_at is None:
            raise UnprocessableEntity("That snapshot has not finished")
    else:
        snapshot = await catalog.latest_complete(session, scope, account.id, service, at=at)
        if snapshot is None:
            raise NotFound("No finished backup of this account and service at that time")
    return PointInTime(snapshot)


async def load_account(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> Account:
    await tenant_service.get(session, scope, tenant_id)
    return await account_service.get(session, scope, tenant_id, account_id)


@dataclass
class Listing:
    point: PointInTime
    folder: tuple[Item, ItemVersion] | None
    entries: list[tuple[Item, ItemVersion]]
    next_cursor: str | None


async def list_children(
    session: AsyncSession,
    scope: TenantScope,
    account: Account,
    service: str,
    *,
    at: datetime | uuid.UUID | None,
    folder_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> Listing:
    point = await point_in_time(session, scope, account, service, at)
    parent_external: str | None = None
    folder: tuple[Item, ItemVersion] | None = None
    if folder_id is not None:
        item = await catalog.get_scoped_item(session, scope, account.id, folder_id)
        if item is None or item.service != service:
            raise NotFound("No such folder")
        version = await catalog.version_at(session, scope, item.id, point.seq)
        if version is None:
            raise NotFound("That folder did not exist at that point in time")
        if version.kind not in module_for(service).folder_kinds:
            raise UnprocessableEntity("That item is not a folder")
        parent_external = item.external_id
        folder = (item, version)
    after = None
    if cursor:
        value = decode_cursor(cursor)
        try:
            name, item_id = value["n"], uuid.UUID(value["i"])
            # Names are stored as storable text (safekeep.text): any other is not ours.
            if not isinstance(name, str) or storable_text(name) != name:
                raise ValueError("not a stored name")
            after = (name, item_id)
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidCursor("The cursor is not one this API returned") from exc
    rows = await catalog.children_at(
        session,
        scope,
        account.id,
        service,
        point.seq,
        parent_external_id=parent_external,
        after_name=after,
        limit=limit + 1,
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        item, version = rows[-1]
        next_cursor = encode_cursor({"n": version.name, "i": str(item.id)})
    return Listing(point, folder, rows, next_cursor)


MAX_SEQ = 2**31 - 1  # snapshot numbers are INTEGER columns (``Snapshot.seq``, ``first_seq``)
FOLDER_DEPTH = 64  # deeper chains are cut (a loop in bad data must not spin)


class FolderPaths:
    """Folder paths (``/Inbox/Projects``) of one account and service as they were at any
    snapshot, so a partner can find an item where Microsoft 365 shows it; ``/`` at the top.

    A folder version holds from its ``first_seq`` to its ``last_seq``: each one read is kept
    and answers every snapshot in that span, so the paths of an item's hundreds of versions
    in folders that did not change cost one read per folder, not one per version and
    folder."""

    def __init__(
        self, session: AsyncSession, scope: TenantScope, account_id: uuid.UUID, service: str
    ) -> None:
        self._session = session
        self._scope = scope
        self._account_id = account_id
        self._service = service
        self._held: dict[str, list[ItemVersion]] = {}  # by the folder's Graph id
        self._absent: set[tuple[str, int]] = set()

    async def _folder(self, external_id: str, seq: int) -> ItemVersion | None:
        for version in self._held.get(external_id, ()):
            if version.first_seq <= seq and (version.last_seq is None or seq <= version.last_seq):
                return version
        if (external_id, seq) in self._absent:
            return None
        found = await catalog.folder_at(
            self._session, self._scope, self._account_id, self._service, seq, external_id
        )
        if found is None:
            self._absent.add((external_id, seq))
        else:
            self._held.setdefault(external_id, []).append(found)
        return found

    async def path(self, parent_external_id: str | None, seq: int) -> str:
        """The path of the folder ``parent_external_id`` as it was at snapshot ``seq``."""
        names: list[str] = []
        current = parent_external_id
        seen: set[str] = set()
        while current is not None and current not in seen and len(names) < FOLDER_DEPTH:
            seen.add(current)
            folder = await self._folder(current, seq)
            if folder is None:
                break
            names.append(folder.name)
            current = folder.parent_external_id
        return "/" + "/".join(reversed(names))


async def item_at(
    session: AsyncSession,
    scope: TenantScope,
    account: Account,
    item_id: uuid.UUID,
    *,
    at: datetime | uuid.UUID | None,
    version_id: uuid.UUID | None = None,
) -> tuple[Item, ItemVersion]:
    item = await catalog.get_scoped_item(session, scope, account.id, item_id)
    if item is None:
        raise NotFound("No such item")
    if version_id is not None:
        version = await catalog.get_scoped_version(session, scope, version_id)
        if version is None or version.item_id != item.id:
            raise NotFound("No such version of this item")
        return item, version
    point = await point_in_time(session, scope, account, item.service, at)
    version = await catalog.version_at(session, scope, item.id, point.seq)
    if version is None:
        raise NotFound("The item did not exist at that point in time")
    return item, version


@dataclass(frozen=True)
class Versions:
    item: Item
    versions: list[ItemVersion]  # newest first
    next_cursor: str | None


async def versions(
    session: AsyncSession,
    scope: TenantScope,
    account: Account,
    item_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> Versions:
    """A page of an item's versions, newest first; the cursor names the snapshot the last
    one shown began in."""
    item = await catalog.get_scoped_item(session, scope, account.id, item_id)
    if item is None:
        raise NotFound("No such item")
    before = None
    if cursor:
        value = decode_cursor(cursor).get("s")
        # An int, not a bool (which JSON keeps apart, and Python would take for 0 or 1), in
        # the range of the snapshot numbers' column (PostgreSQL's INTEGER refuses 2**31).
        if type(value) is not int or not 1 <= value <= MAX_SEQ:
            raise InvalidCursor("The cursor is not one this API returned")
        before = value
    rows = await catalog.versions_of(session, scope, item.id, before_seq=before, limit=limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"s": rows[-1].first_seq})
    return Versions(item, rows, next_cursor)


async def content(
    runtime: Runtime, session: AsyncSession, account: Account, version: ItemVersion
) -> Content:
    tenant = await tenant_service.get_including_deleted(session, account.tenant_id)
    repo = await open_repository(runtime, tenant)
    return await module_for(version.service).content(repo, version)
