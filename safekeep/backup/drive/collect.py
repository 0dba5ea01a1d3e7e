"""Backing up one drive (a user's OneDrive, a SharePoint document library) by Graph delta.

Per page: items whose eTag, parent and name match the stored version cost nothing; folders
are recorded from the page alone; a file whose content is unchanged (same cTag, or the same
hash and size: a move or a rename) gets a new version that reuses the stored content; only
new or edited files are downloaded, a few at a time, each streamed from Graph straight into
the chunked, encrypted store (never whole in memory) and checked against Graph's hashes
(``sha256Hash`` when given, ``quickXorHash`` always when given: a mismatch is a retry, then
a skip). Then the page's versions, removals and link commit in one transaction.

A file that cannot be read after ``ITEM_ATTEMPTS`` tries is recorded as skipped with its
reason and tried again at the start of the next run (``retry_skipped``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from urllib.parse import quote

import structlog

from safekeep.backup.catalog import CatalogPage, ItemRecord
from safekeep.backup.collect import ITEM_ATTEMPTS, CollectContext, KeptBytes
from safekeep.backup.detection import HEAD_BYTES, head_entropy
from safekeep.backup.drive.delta import DeltaSpec, Json, closing, run_delta
from safekeep.backup.drive.model import (
    FILE,
    FOLDER,
    document_bytes,
    drive_search_fields,
    extractable,
    hashes_of,
    is_folder,
    item_meta,
    parse_time,
    same_content,
)
from safekeep.backup.drive.quickxor import QuickXorHash
from safekeep.backup.pipeline import gather_bounded
from safekeep.graph.client import BatchRequest
from safekeep.graph.errors import AuthError, GraphError, NotFound, Throttled, TransientError
from safekeep.runtime import unit_of_work
from safekeep.storage.repository import ContentRef
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import DeltaState, ItemVersion

log = structlog.get_logger(__name__)

DELTA_PAGE_SIZE = 500  # Corso's choice; Graph caps drive delta pages at 1,000 (tests lower it)
FETCH_CONCURRENCY = 4  # downloads in flight per drive (the per-user concurrency Graph allows)
# Corso's delta preferences: report items that left our view as deleted, and walk into
# folders the app can read even below ones it cannot.
DELTA_PREFER = {"Prefer": "deltashowremovedasdeleted, deltatraversepermissiongaps"}
FOLDER_CHANGE_KEY = "folder"  # a folder's version changes only with its name or parent
BACKOFF_SECONDS = 0.5


class ContentMismatch(Exception):
    """What we stored is not what Graph says the file is (changed mid-download, or broken)."""

    reason = "hash_mismatch"


def q(value: str) -> str:
    return quote(value, safe="")


@dataclass
class DriveSource:
    """One drive and where its tree hangs in the account's catalog."""

    drive_id: str
    root_id: str
    top: str | None  # parent_external_id of the root's children (None, or the library item)
    throttle_key: str  # the user or site id: Graph limits concurrency per user/site


class FolderTree:
    """Folder names and parents, to give each version the path it had at capture.

    Loaded from the catalog's current folders, kept current as pages arrive. Delta's
    ``parentReference.path`` is not used: Graph documents it as absent from delta, business
    drives send it anyway, and after a folder's rename it is stale for every unchanged item
    below (delta does not return them), so ids and parents are what we track. Only folders:
    its size is the drive's folder count.
    """

    def __init__(
        self,
        entries: dict[str, tuple[str, str | None]] | None = None,
        loader: Callable[[], Awaitable[dict[str, tuple[str, str | None]]]] | None = None,
    ) -> None:
        self.entries = entries or {}
        self._loader = loader

    @classmethod
    async def load(cls, ctx: CollectContext, kinds: Collection[str]) -> FolderTree:
        tree = cls.deferred(ctx, kinds)
        await tree.ready()
        return tree

    @classmethod
    def deferred(cls, ctx: CollectContext, kinds: Collection[str]) -> FolderTree:
        """A tree read from the catalog only when a path is first needed: an unchanged
        drive's round never needs one, and reading every folder was a cost of its own."""

        async def load() -> dict[str, tuple[str, str | None]]:
            async with unit_of_work(ctx.runtime) as session:
                found = await catalog.open_external_ids(
                    session, ctx.account.id, ctx.service, list(kinds)
                )
            return {ext: (v.name, v.parent_external_id) for ext, v in found.items()}

        return cls(loader=load)

    async def ready(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loaded = await loader()
            loaded.update(self.entries)  # what was set meanwhile is newer
            self.entries = loaded

    def set(self, external_id: str, name: str, parent: str | None) -> None:
        self.entries[external_id] = (name, parent)

    def drop(self, external_id: str) -> None:
        self.entries.pop(external_id, None)

    def path(self, parent: str | None, name: str) -> str:
        names = [name]
        seen: set[str] = set()
        while parent is not None and parent in self.entries and parent not in seen:
            seen.add(parent)
            folder_name, parent = self.entries[parent]
            names.append(folder_name)
        return "/" + "/".join(reversed(names))


def verify(ref: ContentRef, item: Json, quickxor: QuickXorHash | None) -> None:
    """Raise ContentMismatch unless size and every hash Graph gave agree with our bytes."""
    size = item.get("size")
    if isinstance(size, int) and size != ref.size:
        raise ContentMismatch(f"got {ref.size} bytes, Graph says {size}")
    hashes = hashes_of(item)
    sha256 = hashes.get("sha256Hash")
    if sha256 and sha256.lower() != ref.sha256:
        raise ContentMismatch(f"sha256 {ref.sha256} differs from Graph's {sha256.lower()}")
    expected_qx = hashes.get("quickXorHash")
    if expected_qx and quickxor is not None and quickxor.b64digest() != expected_qx:
        raise ContentMismatch(
            f"quickXorHash {quickxor.b64digest()} differs from Graph's {expected_qx}"
        )


class DriveCollector:
    """Turns a drive's delta pages into catalog versions (one instance per drive and run)."""

    def __init__(self, ctx: CollectContext, source: DriveSource, tree: FolderTree) -> None:
        self.ctx = ctx
        self.source = source
        self.tree = tree
        self._slots = asyncio.Semaphore(FETCH_CONCURRENCY)
        self.skipped: set[str] = set()  # ids skipped in this run

    # ---- the delta round -----------------------------------------------------------

    def spec(self) -> DeltaSpec:
        return DeltaSpec(
            collection=self.source.drive_id,
            path=f"/drives/{q(self.source.drive_id)}/root/delta",
            params={"$top": DELTA_PAGE_SIZE},
            headers=dict(DELTA_PREFER),
            mailbox=self.source.throttle_key,
        )

    async def run(self, states: dict[str, DeltaState]) -> None:
        await run_delta(self.ctx, self.spec(), self, states)

    def parent_of(self, item: Json) -> str | None:
        parent = (item.get("parentReference") or {}).get("id")
        if not parent or parent == self.source.root_id:
            return self.source.top
        return str(parent)

    async def prepare(
        self, items: list[Json], seen: set[str] | None
    ) -> Callable[[CatalogPage], Awaitable[None]]:
        if items:
            await self.tree.ready()
        for item in items:
            if "root" in item and "deleted" not in item and item.get("id"):
                # The root as Graph names it now (a resync's enumeration starts with it):
                # the owner keeps its remembered root id in step with this.
                self.source.root_id = str(item["id"])
        items = [i for i in items if "root" not in i and i.get("id") != self.source.root_id]
        gone = [i for i in items if "deleted" in i]
        live = [i for i in items if "deleted" not in i]
        for item in live:  # folders first, so files of this page get their full path
            if is_folder(item):
                self.tree.set(str(item["id"]), str(item.get("name") or ""), self.parent_of(item))
        current = await self.ctx.run.current([str(i["id"]) for i in items])
        work: list[Json] = []
        for item in live:
            item_id = str(item["id"])
            if seen is not None:
                seen.add(item_id)
            previous = current.get(item_id)
            if previous is not None and self._unchanged(previous, item):
                continue
            work.append(item)
        records = await self._records(work, current)
        removals = [(str(i["id"]), current.get(str(i["id"]))) for i in gone]

        async def apply(cat: CatalogPage) -> None:
            await cat.preload([r.external_id for r in records] + [r for r, _ in removals])
            for record in records:
                await cat.record(record)
            for item_id, previous in removals:
                if previous is not None and previous.kind != FILE:
                    await cat.remove_subtree(item_id)
                await cat.remove(item_id)
                self.tree.drop(item_id)

        return apply

    def _unchanged(self, previous: ItemVersion, item: Json) -> bool:
        key = FOLDER_CHANGE_KEY if is_folder(item) else item.get("eTag")
        return (
            previous.change_key == key
            and previous.parent_external_id == self.parent_of(item)
            and previous.name == item.get("name")
        )

    async def _records(
        self, items: list[Json], current: dict[str, ItemVersion]
    ) -> list[ItemRecord]:
        async def one(item: Json) -> ItemRecord | None:
            async with self._slots:
                return await self.record_for(item, current.get(str(item["id"])))

        results = await gather_bounded(one(i) for i in items)
        return [r for r in results if r is not None]

    # ---- one item ------------------------------------------------------------------

    async def record_for(self, item: Json, previous: ItemVersion | None) -> ItemRecord | None:
        """The version to record for ``item``, its bytes stored; None when it could not be
        read (then it is skipped, with the reason) or vanished meanwhile."""
        item_id = str(item["id"])
        name = str(item.get("name") or item_id)
        parent = self.parent_of(item)
        path = self.tree.path(parent, name)
        meta = item_meta(item, drive_id=self.source.drive_id, path=path)
        fs = item.get("fileSystemInfo") or {}
        modified = parse_time(fs.get("lastModifiedDateTime") or item.get("lastModifiedDateTime"))
        repo = self.ctx.repo
        if is_folder(item):
            document = await repo.put_bytes(document_bytes(item))
            fields = await drive_search_fields(
                FOLDER,
                name,
                0,
                modified,
                meta,
                _nothing,
                tenant_id=repo.tenant_id,
                content_hash=None,
            )
            return ItemRecord(
                external_id=item_id,
                kind=FOLDER,
                name=name,
                parent_external_id=parent,
                modified_at=modified,
                change_key=FOLDER_CHANGE_KEY,
                document=document,
                meta=meta,
                search=fields,
            )
        if previous is not None and previous.kind == FILE and same_content(previous, item):
            assert previous.content is not None
            content = ContentRef.from_json(previous.content)
            if "head_entropy" in (previous.meta or {}):  # same bytes: same entropy
                meta["head_entropy"] = previous.meta["head_entropy"]

            async def stored() -> bytes | None:
                return await repo.read_bytes(content)

            read: Callable[[], Awaitable[bytes | None]] = stored
        else:
            fetched = await self._download(item, name)
            if fetched is None:
                return None
            content, kept, head = fetched
            meta["head_entropy"] = head_entropy(head)  # for ransomware detection

            async def in_hand() -> bytes | None:
                return kept

            read = in_hand
        document = await repo.put_bytes(document_bytes(item))
        fields = await drive_search_fields(
            FILE,
            name,
            content.size,
            modified,
            meta,
            read,
            tenant_id=repo.tenant_id,
            content_hash=content.sha256,
        )
        return ItemRecord(
            external_id=item_id,
            kind=FILE,
            name=name,
            parent_external_id=parent,
            size=content.size,
            modified_at=modified,
            change_key=item.get("eTag"),
            content=content,
            document=document,
            meta=meta,
            search=fields,
        )

    async def _download(
        self, item: Json, name: str
    ) -> tuple[ContentRef, bytes | None, bytes] | None:
        item_id = str(item["id"])
        url = f"/drives/{q(self.source.drive_id)}/items/{q(item_id)}/content"
        size = int(item.get("size") or 0)
        mime = (item.get("file") or {}).get("mimeType")
        keep_text = extractable(name, mime, size)
        failure: Exception | None = None
        for attempt in range(ITEM_ATTEMPTS):
            quickxor = QuickXorHash() if hashes_of(item).get("quickXorHash") else None
            # Only bytes of the size Graph gave pass ``verify``: past it, none are kept.
            kept = KeptBytes(size) if keep_text else None
            head = bytearray()

            async def source(
                qx: QuickXorHash | None = quickxor,
                buffer: KeptBytes | None = kept,
                first: bytearray = head,
            ) -> AsyncIterator[bytes]:
                async with closing(
                    self.ctx.graph.stream(url, mailbox=self.source.throttle_key)
                ) as stream:
                    async for chunk in stream:
                        if qx is not None:
                            qx.update(chunk)
                        if buffer is not None:
                            buffer.add(chunk)
                        if len(first) < HEAD_BYTES:
                            first += chunk[: HEAD_BYTES - len(first)]
                        yield chunk

            try:
                async with closing(source()) as chunks:
                    ref = await self.ctx.repo.put_stream(chunks)
                verify(ref, item, quickxor)
                return ref, kept.value if kept is not None else None, bytes(head)
            except NotFound:
                return None  # deleted since the page was listed: the next round says so
            except (AuthError, Throttled):
                raise  # not this item's fault: the whole task must stop and retry later
            except (TransientError, ContentMismatch) as exc:
                failure = exc
                log.info("drive_item_retry", item=item_id, attempt=attempt + 1, error=str(exc))
                await asyncio.sleep(BACKOFF_SECONDS * (attempt + 1))
            except GraphError as exc:  # refused for this item (403 malware, 400...): no retry
                failure = exc
                break
        assert failure is not None
        self.skipped.add(item_id)
        await self.ctx.skip(
            item_ref=item_id,
            name=name,
            code=str(getattr(failure, "reason", "unreadable")),
            detail=f"{self.tree.path(self.parent_of(item), name)}: {failure}",
            collection=self.source.drive_id,
        )
        return None

    # ---- after a full re-enumeration ---------------------------------------------

    async def remove_unseen(self, cat: CatalogPage, seen: set[str]) -> None:
        # (The folder tree keeps entries for folders ended here: only paths of live
        # parents are ever looked up, and it is shared with the site's other libraries.)
        if self.source.top is None:
            await cat.remove_unseen([FOLDER, FILE], seen)
        else:
            await remove_unseen_below(cat, self.source.top, seen)

    # ---- items skipped by earlier runs ----------------------------------------------

    async def retry_skipped(self, refs: list[str]) -> None:
        """Fetch earlier skips again by id; resolve those now stored or gone."""
        if not refs:
            return
        await self.tree.ready()
        requests = [
            BatchRequest(
                id=str(n),
                method="GET",
                url=f"/drives/{q(self.source.drive_id)}/items/{q(ref)}",
            )
            for n, ref in enumerate(refs)
        ]
        answers = await self.ctx.graph.batch(requests)
        resolved: list[str] = []
        found: list[Json] = []
        for ref, answer in zip(refs, answers, strict=True):
            if answer.status == 404:
                resolved.append(ref)
            elif answer.ok and isinstance(answer.body, dict) and "deleted" not in answer.body:
                found.append(answer.body)
        current = await self.ctx.run.current([str(i["id"]) for i in found])
        records = await self._records(found, current)
        async with self.ctx.run.page() as cat:
            await cat.preload([r.external_id for r in records])
            for record in records:
                await cat.record(record)
        # Stored now, or vanished while we fetched it: either way no longer to retry.
        resolved.extend(str(i["id"]) for i in found if str(i["id"]) not in self.skipped)
        if resolved:
            await self.ctx.resolved(sorted(set(resolved)))


async def remove_unseen_below(cat: CatalogPage, top: str, seen: set[str]) -> None:
    """``remove_unseen`` for one subtree of the account (a library of a site)."""
    stack = [top]
    while stack:
        parent = stack.pop()
        for external_id, version in await catalog.open_versions_under(
            cat.session, cat.run.account_id, cat.run.service, parent
        ):
            if external_id in seen:
                if version.kind != FILE:
                    stack.append(external_id)
                continue
            if version.kind != FILE:
                await cat.remove_subtree(external_id)
            await cat.remove(external_id)


async def _nothing() -> bytes | None:
    return None
