"""Writing files back into a drive: folders created as needed, files uploaded (one PUT when
small, an upload session in 320 KiB-multiple fragments when large) straight from the store,
checked against the hash Graph computes on arrival, and their modified time put back.

A file is already there when the file at its path holds exactly the backed-up bytes: the
same cTag (the same driveItem, its content unchanged), or the same hashes Graph computed
(``quickXorHash``, ``sha256Hash``) and the same size. That is how a file Safekeep restored
earlier is recognised, since a drive has one file per name and its hashes are Graph's own.
The same driveItem is *not* already there when its bytes changed since the restore point:
ransomware that encrypts a synced file in place keeps its id and name. ``skip`` and
``overwrite`` leave a file that is already there alone (counted as such); under ``skip`` a
file with other bytes holding the name is not touched and the item is reported as not
restored; ``overwrite`` replaces its content (``replace``: Microsoft 365 keeps the replaced
content in the file's version history) and says so in the report; ``keep_both`` always
writes, letting Graph pick a free name (``rename``). ``conflictBehavior=fail`` enforces
``skip`` against races. A folder that exists is used as it is.

A SharePoint document library (``DriveTarget.library``; not a OneDrive) writes its properties
into the Office Open XML files it receives, so what it stores never has the backup's size and
hashes: ``check_upload`` lets such a file through with a note instead of failing it, and a
file already at its path counts as already there when its package holds every part of the
backup's with the same bytes, SharePoint's own parts aside (``same_document``), which is
what an earlier restore into the library left.

After restoring a whole drive (or whole folders) in place, ``observe_strays`` lists the
drive as it is now and reports, without touching them, files that were not in the restore
point: after ransomware these are the encrypted copies (same item, new name and bytes), so
the job report says which they are and what each used to be.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import structlog

from safekeep.backup.drive.delta import closing
from safekeep.backup.drive.model import hashes_of, is_folder, same_content
from safekeep.backup.drive.office import (
    PACKAGE_COMPARE_MAX,
    package_parts,
    rewritten_on_arrival,
    same_document,
    spooled,
)
from safekeep.backup.restore.failures import retries_the_job
from safekeep.backup.services.base import RestoreContext, Selection, read_content
from safekeep.graph.errors import AuthError, Conflict, GraphError
from safekeep.storage.errors import StorageError
from safekeep.tenants.models import ItemVersion

log = structlog.get_logger(__name__)

RESTORE_CONCURRENCY = 4  # uploads in flight per drive
LISTING_CACHE = 256  # target folders whose children we remember (LRU)

Json = dict[str, Any]


def q(value: str) -> str:
    return quote(value, safe="")


def path_key(names: Sequence[str]) -> str:
    """How two paths are compared: OneDrive names are case-insensitive."""
    return "/" + "/".join(n.casefold() for n in names)


_K = TypeVar("_K")
_V = TypeVar("_V")


class RestoreFailed(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


async def made_once(
    lock: asyncio.Lock,
    made: dict[_K, _V | RestoreFailed],
    key: _K,
    make: Callable[[], Coroutine[Any, Any, _V]],
) -> _V:
    """``make()`` for ``key``, run once under ``lock`` however many items ask at once. A
    ``RestoreFailed`` is kept too: every item under a target that could not be made fails
    with the same reason instead of trying again."""
    async with lock:
        found = made.get(key)
        if found is None:
            try:
                found = await make()
            except RestoreFailed as exc:
                found = exc
            made[key] = found
    if isinstance(found, RestoreFailed):
        raise found
    return found


@dataclass(frozen=True)
class Placed:
    """What restoring one file came to in the target: the driveItem that holds it, whether
    it was there already (nothing written), and what the report should note beside it."""

    item: Json
    existing: bool = False
    note: str | None = None


@dataclass
class DriveTarget:
    drive_id: str
    root_id: str
    throttle_key: str
    # A SharePoint document library (Graph's driveType "documentLibrary"), which writes its
    # properties into the Office files it receives; never a user's OneDrive ("business").
    library: bool = False


class DriveWriter:
    """Puts versions into one target drive; folder ids and listings are cached."""

    def __init__(self, ctx: RestoreContext, target: DriveTarget) -> None:
        self.ctx = ctx
        self.target = target
        self._folders: dict[str, str] = {path_key([]): target.root_id}
        self._listings: OrderedDict[str, dict[str, Json]] = OrderedDict()
        self._lock = asyncio.Lock()  # folder creation and listing: one at a time
        self.slots = asyncio.Semaphore(RESTORE_CONCURRENCY)

    # ---- folders -------------------------------------------------------------------

    async def _children(self, folder_id: str) -> dict[str, Json]:
        listing = self._listings.get(folder_id)
        if listing is not None:
            self._listings.move_to_end(folder_id)
            return listing
        listing = {}
        path = f"/drives/{q(self.target.drive_id)}/items/{q(folder_id)}/children"
        # file: its hashes; cTag: the same driveItem with its content unchanged
        params = {"$select": "id,name,cTag,file,folder,package,size", "$top": 1000}
        async for page in self.ctx.graph.paginate(
            path, params=params, mailbox=self.target.throttle_key
        ):
            for child in page:
                listing[str(child.get("name") or "").casefold()] = child
        self._listings[folder_id] = listing
        while len(self._listings) > LISTING_CACHE:
            self._listings.popitem(last=False)
        return listing

    def _remember(self, folder_id: str, child: Json) -> None:
        listing = self._listings.get(folder_id)
        if listing is not None and child.get("name"):
            listing[str(child["name"]).casefold()] = child

    async def folder(self, names: Sequence[str]) -> str:
        """The id of the folder at ``names`` below the root, created where missing."""
        key = path_key(names)
        known = self._folders.get(key)
        if known is not None:
            return known
        async with self._lock:
            parent = self.target.root_id
            for depth in range(1, len(names) + 1):
                here = path_key(names[:depth])
                found = self._folders.get(here)
                if found is None:
                    found = await self._folder_in(parent, names[depth - 1])
                    self._folders[here] = found
                parent = found
            return parent

    async def _folder_in(self, parent_id: str, name: str) -> str:
        existing = (await self._children(parent_id)).get(name.casefold())
        if existing is not None:
            if not is_folder(existing):
                raise RestoreFailed(
                    "name_conflict", f"a file named {name!r} is where a folder should be"
                )
            return str(existing["id"])
        try:
            created = await self.ctx.graph.request_json(
                "POST",
                f"/drives/{q(self.target.drive_id)}/items/{q(parent_id)}/children",
                json={"name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail"},
                mailbox=self.target.throttle_key,
                expected=(200, 201),
            )
        except Conflict:  # created meanwhile by someone else: look again
            self._listings.pop(parent_id, None)
            existing = (await self._children(parent_id)).get(name.casefold())
            if existing is None or not is_folder(existing):
                raise
            return str(existing["id"])
        assert created is not None
        self._remember(parent_id, created)
        return str(created["id"])

    # ---- files ---------------------------------------------------------------------

    async def put(self, version: ItemVersion, folder_names: Sequence[str]) -> None:
        """Restore one file version and report what happened (never raises for the item)."""
        report = self.ctx.report
        try:
            placed = await self._put(version, folder_names)
        except RestoreFailed as exc:
            await report.failed(version, code=exc.code, detail=exc.detail)
            return
        except AuthError:
            raise
        except (GraphError, StorageError) as exc:
            if retries_the_job(exc):  # the store or Graph unavailable: the job is tried again
                raise
            code = exc.reason if isinstance(exc, GraphError) else "storage_error"
            await report.failed(version, code=code, detail=str(exc))
            return
        if placed is None:
            return
        target_id = str(placed.item.get("id") or "") or None
        if placed.existing:
            await report.existing(version, target_id=target_id)
            return
        await report.restored(version, target_id=target_id, note=placed.note)

    async def _put(self, version: ItemVersion, folder_names: Sequence[str]) -> Placed | None:
        """Put the version's file in its folder under the restore's conflict rule; None when
        the rule skipped it (reported here)."""
        parent_id = await self.folder(folder_names)
        name = version.name
        where = "/" + "/".join([*folder_names, name])
        async with self._lock:
            listing = await self._children(parent_id)
            existing = listing.get(name.casefold())
        if self.ctx.conflict == "keep_both" and self.ctx.retry:
            earlier = await self._earlier_copy(version, listing)
            if earlier is not None:  # placed by an earlier attempt of this job
                return Placed(earlier)
        behaviour = "fail"
        notes: list[str] = []
        if existing is not None:
            if self.ctx.conflict != "keep_both" and await self._already_there(version, existing):
                return Placed(existing, existing=True)
            changed = self._changed_in_place(version, existing)
            if self.ctx.conflict == "skip":
                reason = (
                    f"not restored: the file at {where} is this item, its content changed "
                    "since the restore point (conflict rule skip)"
                    if changed
                    else f"not restored: another file is at {where}"
                )
                await self.ctx.report.skipped(version, reason=reason)
                return None
            if is_folder(existing):
                raise RestoreFailed("name_conflict", f"{where} is a folder in the target")
            if self.ctx.conflict == "overwrite":
                behaviour = "replace"
                notes.append(
                    "replaced its content changed since the restore point (the replaced "
                    "content stays in the file's version history)"
                    if changed
                    else f"replaced another file at {where}"
                )
            else:
                behaviour = "rename"
        try:
            created = await self._upload(version, parent_id, name, behaviour)
        except Conflict:
            if self.ctx.conflict == "skip":
                await self.ctx.report.skipped(
                    version, reason=f"not restored: another file appeared at {where}"
                )
                return None
            behaviour = "replace" if self.ctx.conflict == "overwrite" else "rename"
            if behaviour == "replace":
                notes.append(f"replaced a file that appeared at {where} during the restore")
            created = await self._upload(version, parent_id, name, behaviour)
        rewritten = check_upload(version, created, library=self.target.library)
        if rewritten:
            notes.append(rewritten)
        self._remember(parent_id, created)
        refused = await self._set_times(version, created)
        if refused:
            notes.append(refused)
        return Placed(created, note="; ".join(notes) if notes else None)

    async def _earlier_copy(self, version: ItemVersion, listing: Mapping[str, Json]) -> Json | None:
        """Under ``keep_both``, on a later attempt of the job: the copy an earlier attempt put
        in the folder, so that it is not written twice. A driveItem takes no hidden stamp
        (Graph has no extended properties on files), so the copy is known by what that
        attempt left: this version's bytes at its name, or at the name Graph's ``rename``
        gives it ("name 1.ext", "name 2.ext"...), in a file that is not the backed-up
        driveItem itself (restoring in place, the original is still there beside the copy).
        A file just like it that was there before the job began, at one of those names, is
        taken for the copy too; only a retried job that had not reached the item yet meets
        that, and the item's bytes are in the folder all the same."""
        backed_up = (version.meta or {}).get("id")
        for candidate in _copy_names(version.name, listing):
            if backed_up and candidate.get("id") == backed_up:
                continue
            if await self._already_there(version, candidate):
                return candidate
        return None

    @staticmethod
    def _same(version: ItemVersion, existing: Json) -> bool:
        """Does the file in the target hold exactly this version's bytes?"""
        return not is_folder(existing) and same_content(version, existing)

    async def _already_there(self, version: ItemVersion, existing: Json) -> bool:
        """This version's bytes are in the target file, or, in a library, this version's Office
        document as SharePoint keeps it (its own properties written in, every other part of
        the package the backup's): what an earlier restore there left."""
        if self._same(version, existing):
            return True
        if not (self.target.library and rewritten_on_arrival(version.name)):
            return False
        if is_folder(existing) or not version.content or existing.get("id") is None:
            return False
        size = existing.get("size")
        if not isinstance(size, int) or max(size, version.size) > PACKAGE_COMPARE_MAX:
            return False
        url = f"/drives/{q(self.target.drive_id)}/items/{q(str(existing['id']))}/content"
        try:
            async with (
                spooled(self.ctx.graph.stream(url, mailbox=self.target.throttle_key)) as there,
                spooled(read_content(self.ctx.repo, version)) as backed_up,
            ):
                stored, backup = await asyncio.gather(
                    asyncio.to_thread(package_parts, there),
                    asyncio.to_thread(package_parts, backed_up),
                )
        except AuthError:
            raise
        except GraphError as exc:  # cannot read it: not known to be the same
            if retries_the_job(exc):
                raise
            log.info("restore_compare_failed", item=existing.get("id"), error=str(exc))
            return False
        return backup is not None and stored is not None and same_document(backup, stored)

    def _changed_in_place(self, version: ItemVersion, existing: Json) -> bool:
        """Is the file in the target this very driveItem (restoring in place), with other
        bytes now?"""
        in_place = self.ctx.folder_mode == "original" and self.ctx.target.id == self.ctx.source.id
        item_id = (version.meta or {}).get("id")
        return bool(in_place and item_id and existing.get("id") == item_id)

    async def _upload(
        self, version: ItemVersion, parent_id: str, name: str, behaviour: str
    ) -> Json:
        if not version.content:
            raise RestoreFailed("no_content", "this version has no stored bytes")

        async def chunks() -> AsyncIterator[bytes]:
            async with closing(read_content(self.ctx.repo, version)) as stream:
                async for piece in stream:
                    yield piece

        return await self.ctx.graph.upload_drive_file(
            self.target.drive_id,
            parent_id,
            name,
            version.size,
            chunks(),
            conflict=behaviour,  # type: ignore[arg-type]
            mailbox=self.target.throttle_key,
        )

    async def _set_times(self, version: ItemVersion, created: Json) -> str | None:
        """Put back the file's own times (``fileSystemInfo`` is writable in Graph); what
        Graph refused, as a note for the report (the bytes are back all the same)."""
        meta = version.meta or {}
        times = {
            k: v
            for k, v in (
                ("createdDateTime", meta.get("fs_created_at")),
                ("lastModifiedDateTime", meta.get("fs_modified_at")),
            )
            if v
        }
        if not times or not created.get("id"):
            return None
        try:
            await self.ctx.graph.request_json(
                "PATCH",
                f"/drives/{q(self.target.drive_id)}/items/{q(str(created['id']))}",
                json={"fileSystemInfo": times},
                mailbox=self.target.throttle_key,
                expected=(200,),
            )
        except GraphError as exc:  # the bytes are back; a time Graph refuses is only a note
            log.info("restore_times_refused", item=created.get("id"), error=str(exc))
            return f"its created and modified times were not put back ({exc.reason})"
        return None


async def make_folder(
    ctx: RestoreContext, writer: DriveWriter, version: ItemVersion, names: Sequence[str]
) -> None:
    """Make a folder in scope, so that an empty one comes back too; one that cannot be made
    is reported as failed (its files, if it has any, each report it as well)."""
    try:
        await writer.folder(names)
    except AuthError:
        raise
    except RestoreFailed as exc:
        await ctx.report.failed(version, code=exc.code, detail=exc.detail)
    except GraphError as exc:
        if retries_the_job(exc):
            raise
        await ctx.report.failed(version, code=exc.reason, detail=str(exc))


def _copy_names(name: str, listing: Mapping[str, Json]) -> list[Json]:
    """The files of a folder's ``listing`` at ``name`` or at a name Graph's ``rename``
    conflict behaviour makes of it ("report.docx" -> "report 1.docx", "report 2.docx"...)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = name, "", ""
    suffix = re.escape((dot + ext).casefold())
    renamed = re.compile(re.escape(stem.casefold()) + r" [0-9]+" + suffix)
    return [
        child
        for key, child in listing.items()
        if not is_folder(child) and (key == name.casefold() or renamed.fullmatch(key))
    ]


def check_upload(version: ItemVersion, created: Json, *, library: bool = False) -> str | None:
    """Graph hashes what it stored: it must be the backed-up bytes, else the item failed.
    Except in a SharePoint library (``library``), which rewrites Office Open XML files on
    arrival (property promotion: it writes its properties into the package), so that their
    size and hashes never match: there such a file is restored, and the returned note says
    why its bytes differ. None when the bytes are the backup's."""
    try:
        _check_bytes(version, created)
    except RestoreFailed as exc:
        if not (library and rewritten_on_arrival(version.name)):
            raise
        return (
            "SharePoint rewrote this document on arrival (a library writes its properties "
            f"into Office files), so its bytes differ from the backup's ({exc.detail})"
        )
    return None


def _check_bytes(version: ItemVersion, created: Json) -> None:
    hashes = (created.get("file") or {}).get("hashes") or {}
    sha256 = hashes.get("sha256Hash")
    if sha256 and version.content_hash and sha256.lower() != version.content_hash:
        raise RestoreFailed("hash_mismatch", f"Graph stored sha256 {sha256.lower()}")
    stored_qx = ((version.meta or {}).get("hashes") or {}).get("quickXorHash")
    quickxor = hashes.get("quickXorHash")
    if quickxor and stored_qx and quickxor != stored_qx:
        raise RestoreFailed("hash_mismatch", f"Graph stored quickXorHash {quickxor}")
    size = created.get("size")
    if isinstance(size, int) and size != version.size:
        raise RestoreFailed("size_mismatch", f"Graph stored {size} bytes of {version.size}")


def folders_in_scope(selection: Selection) -> list[tuple[str, list[str]]]:
    """Every folder a whole or folder-scoped restore covers, with its path, parents first."""
    if not (selection.whole or selection.roots):
        return []
    chosen: list[tuple[str, list[str]]] = []
    for external_id in selection.folders:
        if selection.roots is not None and not _below(selection, external_id, selection.roots):
            continue
        chosen.append((external_id, selection.path_of(external_id)))
    return sorted(chosen, key=lambda pair: len(pair[1]))


def _below(selection: Selection, external_id: str | None, roots: set[str]) -> bool:
    seen: set[str] = set()
    while external_id is not None and external_id not in seen:
        if external_id in roots:
            return True
        seen.add(external_id)
        folder = selection.folders.get(external_id)
        external_id = folder.parent_external_id if folder is not None else None
    return False


@dataclass
class Expected:
    """What the restore point held, to tell strays from restored files afterwards: path
    digests (8 bytes each, so a big drive stays small in memory) and, per Graph id, the path
    each file had then and a digest of its hashes (to tell a moved file from a rewritten one)."""

    paths: set[bytes] = field(default_factory=set)
    by_id: dict[str, tuple[str, bytes | None]] = field(default_factory=dict)

    @staticmethod
    def digest(key: str) -> bytes:
        return hashlib.blake2b(key.encode(), digest_size=8).digest()

    @classmethod
    def content_digest(cls, hashes: Mapping[str, Any], size: int | None) -> bytes | None:
        """Graph's quickXorHash (every drive has it) and the size, or None without one."""
        quickxor = hashes.get("quickXorHash")
        return cls.digest(f"{str(quickxor).lower()}:{size}") if quickxor else None

    def add(self, names: Sequence[str], version: ItemVersion) -> None:
        self.paths.add(self.digest(path_key(names)))
        meta = version.meta or {}
        if meta.get("id"):
            content = self.content_digest(meta.get("hashes") or {}, version.size)
            self.by_id[str(meta["id"])] = ("/" + "/".join(names), content)

    def __contains__(self, names: object) -> bool:
        assert isinstance(names, list | tuple)
        return self.digest(path_key(names)) in self.paths


async def observe_strays(
    ctx: RestoreContext,
    target: DriveTarget,
    expected: Expected,
    *,
    under: Sequence[Sequence[str]] | None,
    shown_prefix: Sequence[str] = (),
) -> int:
    """Report files now in the drive (below ``under``, or anywhere) that the restore point
    did not have. Returns how many."""
    parents: dict[str, tuple[str, str | None]] = {}
    files: list[tuple[str, str, str | None, bytes | None]] = []
    path = f"/drives/{q(target.drive_id)}/root/delta"
    params = {
        "$select": "id,name,size,parentReference,file,folder,package,root,deleted",
        "$top": 1000,
    }
    async with closing(ctx.graph.delta(path, params=params, mailbox=target.throttle_key)) as pages:
        async for page in pages:
            for item in page.items:
                if "deleted" in item or "root" in item or item.get("id") == target.root_id:
                    continue
                parent = (item.get("parentReference") or {}).get("id")
                parent = None if parent in (None, target.root_id) else str(parent)
                if is_folder(item):
                    parents[str(item["id"])] = (str(item.get("name") or ""), parent)
                else:
                    content = Expected.content_digest(hashes_of(item), item.get("size"))
                    files.append((str(item["id"]), str(item.get("name") or ""), parent, content))

    def names_of(name: str, parent: str | None) -> list[str]:
        names = [name]
        seen: set[str] = set()
        while parent is not None and parent in parents and parent not in seen:
            seen.add(parent)
            folder, parent = parents[parent]
            names.append(folder)
        return list(reversed(names))

    scopes = [path_key(u) for u in under] if under is not None else None
    found = 0
    for graph_id, name, parent, content in files:
        names = names_of(name, parent)
        if names in expected:
            continue
        if scopes is not None and not any(
            path_key(names).startswith(s.rstrip("/") + "/") for s in scopes
        ):
            continue
        shown = "/" + "/".join([*shown_prefix, *names])
        before, kept = expected.by_id.get(graph_id, (None, None))
        if before is not None and content is not None and content == kept:
            detail = (
                f"Not in the restore point under this name. This file was {before} then and "
                "has since been moved or renamed, its bytes unchanged; the restore put the "
                "original back and left this copy untouched."
            )
        elif before is not None:
            detail = (
                f"Not in the restore point. This file was {before} then and has since been "
                "renamed and rewritten (as ransomware does); the restore put the original "
                "back and left this copy untouched."
            )
        else:
            detail = "Not in the restore point: created or moved here after it; left untouched."
        await ctx.report.observed(code="not_in_restore_point", name=shown, detail=detail)
        found += 1
    return found


async def run_bounded(
    slots: asyncio.Semaphore,
    items: AsyncIterator[ItemVersion],
    work: Callable[[ItemVersion], Coroutine[Any, Any, None]],
) -> None:
    """``work(version)`` for every streamed version, ``slots`` at a time: memory holds only
    the versions in flight. ``work`` reports item failures itself; anything it raises
    (consent withdrawn, the store unreachable) stops the whole restore."""
    pending: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []

    def done(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            errors.append(task.exception())  # type: ignore[arg-type]

    try:
        async for version in items:
            if errors:
                raise errors[0]
            await slots.acquire()
            task = asyncio.create_task(work(version))
            pending.add(task)
            task.add_done_callback(done)
        if pending:
            await asyncio.wait(set(pending))
        if errors:
            raise errors[0]
    except BaseException:
        for task in list(pending):
            task.cancel()
        if pending:
            await asyncio.wait(set(pending))
        raise
