"""Backing up a user's contact folders and contacts by Graph delta.

Folders: the default folder (``/contactFolders/contacts``, the root: contacts under
``/users/{id}/contacts`` live in it) plus every folder from ``/contactFolders/delta``
(flat, with ``parentFolderId``; the default folder's own parent is a hidden mailbox root, so
it is kept at the top). Contacts: ``/contactFolders/{id}/contacts/delta`` per folder, whose
pages carry new contacts whole, so those are not fetched item by item.

Graph may send an update as the contact's id and only the properties that changed ("Resource
representation in the delta query response", delta-query-overview). Such an entry is never
stored as a version: the contact is read again by id, 20 per ``$batch`` (a 404 means it is
gone). Reading it, rather than merging the entry onto the stored document, keeps the version
exactly what Graph holds whatever the stored one is (an older engine's document, one kept
without its photo, one from before a resync) and costs a request only for a contact whose
change key moved. A partial folder entry is completed from the folder's stored version
(name and parent: all that is kept), or read from Graph when it is not stored. The first
request of every
folder's round goes through ``$batch`` (20 per call), the first call also carrying the folder
tree's delta request, so an unchanged mailbox of up to 19 folders costs one request. The
default folder's id is remembered (delta state ``root``), asked for again only after a
resync of the folder tree or when its round answers 404 (the folder was deleted and made
again: the new one is backed up from scratch, the old one's items end, their versions kept).

Delta state: collection ``folders`` for the folder tree, the folder id for its contacts.
A first pass saves its resume link page by page (an interrupted first backup resumes). A
pass after a 410 (resync) compares change keys (an unchanged contact costs nothing and gets
no new version) and closes what it did not see; it keeps the old link until it completes,
so an interrupted resync simply starts again. ``Prefer: IdType="ImmutableId"`` keeps a
contact's id when it moves between folders: a move is one item with a new parent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import structlog

from safekeep.backup.catalog import CatalogPage, ItemRecord
from safekeep.backup.collect import CollectContext
from safekeep.backup.outlook import MailboxReader
from safekeep.backup.pipeline import gather_limited
from safekeep.backup.services.contacts.search import (
    CONTACT_KIND,
    FOLDER_KIND,
    PRIVATE,
    fields_of,
    meta_of,
    modified_at,
)
from safekeep.graph.client import BatchRequest, DeltaPage, prefer
from safekeep.graph.errors import BadRequest, Forbidden, GraphError, NotFound, ResyncRequired
from safekeep.graph.transport import json_bytes
from safekeep.runtime import unit_of_work
from safekeep.storage.repository import ContentRef
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import DeltaState, ItemVersion, SkippedItem

log = structlog.get_logger(__name__)

SERVICE = "contacts"
FOLDERS = "folders"
# The default folder's id, remembered (a delta state whose link is the id): it is asked for
# only on the first run, a resync of the tree, or when its round answers 404.
ROOT = "root"
PAGE_SIZE = 200
BATCH_SIZE = 20


# What a contact's standard representation always carries (Graph sends every property,
# null when empty) and an update sent as its changed properties lacks: ``createdDateTime``
# never changes.
CONTACT_SHAPE = frozenset(
    {"createdDateTime", "lastModifiedDateTime", "changeKey", "parentFolderId", "displayName"}
)
FOLDER_KEPT = ("displayName", "parentFolderId")  # what _folder_record keeps of a folder


def _is_whole(contact: dict[str, Any]) -> bool:
    return contact.keys() >= CONTACT_SHAPE


def _is_stored(version: ItemVersion | None, contact: dict[str, Any], folder_id: str) -> bool:
    """This state of the contact is already stored: nothing to fetch or record."""
    return (
        version is not None
        and contact.get("changeKey") is not None
        and version.change_key == contact.get("changeKey")
        and version.parent_external_id == folder_id
    )


def _folder_change_key(folder: dict[str, Any]) -> str:
    # Contact folders carry no changeKey: their name and parent are all that can change.
    return json.dumps([folder.get("displayName"), folder.get("parentFolderId")])


@dataclass
class _Pass:
    """One folder's round: where it starts and whether it must close what it misses."""

    folder_id: str
    link: str
    resync: bool = False  # a full pass after a 410: close unseen, no resume links
    seen: set[str] = field(default_factory=set)


class ContactsCollector(MailboxReader):
    def __init__(self, ctx: CollectContext) -> None:
        super().__init__(ctx)
        self.headers = prefer(max_page_size=PAGE_SIZE, immutable_id=True)
        self.names: dict[str, str] = {}
        self.parents: dict[str, str | None] = {}
        self.root_id = ""
        self.tree_changed = False  # folders recorded or ended since they were loaded

    async def collect(self) -> None:
        states, retries = await self._load()
        remembered = states.get(ROOT)
        root: dict[str, Any] | None = None
        if remembered is not None and remembered.delta_link:
            self.root_id = remembered.delta_link
        else:
            root = await self._learn_root()
        tree = states.get(FOLDERS)
        tree_link = (tree.resume_link or tree.delta_link) if tree is not None else None
        early: dict[str, DeltaPage | GraphError] = {}
        early_passes: list[_Pass] = []
        if tree_link and root is None:
            # The usual case: the tree's round and the first folders' rounds share one
            # ``$batch`` (an unchanged mailbox then costs one request in all); the tree's
            # page is still applied before any contact page.
            early_passes = [
                self._pass_for(fid, states.get(fid)) for fid in list(self.names)[: BATCH_SIZE - 1]
            ]
            early = await self._first_pages([_Pass(FOLDERS, tree_link), *early_passes])
        resynced = await self._folders(tree, early.pop(FOLDERS, None))
        if resynced and root is None:
            root = await self._learn_root()  # a resync re-reads everything, the root too
        if self.tree_changed:
            await self._load_folders()
        await self._retry_skipped(retries)
        done = {one.folder_id for one in early_passes}
        missing = await self._run_passes(
            [one for one in early_passes if one.folder_id in self.names], early
        )
        missing |= await self._run_passes(
            [self._pass_for(fid, states.get(fid)) for fid in self.names if fid not in done]
        )
        # The remembered default folder gone (Graph answered 404): learn it again; a new one
        # is backed up from scratch, the old one ends with what it held.
        if (
            self.root_id in missing
            and root is None
            and await self._learn_root() is not None
            and self.root_id not in missing
        ):
            await self._load_folders()
            await self._run_passes([self._pass_for(self.root_id, None)])
        stale = [key for key in states if key not in (FOLDERS, ROOT) and key not in self.names]
        if stale:
            async with self.run.page() as cat:
                for key in stale:
                    await cat.drop_delta(key)

    async def _load(self) -> tuple[dict[str, DeltaState], list[SkippedItem]]:
        """Delta states, the stored folders and the items earlier runs skipped, in one
        transaction (a transaction each was much of an unchanged mailbox's time)."""
        account_id = self.run.account_id
        async with unit_of_work(self.ctx.runtime) as session:
            states = await catalog.delta_states(session, account_id, SERVICE)
            folders = await catalog.open_external_ids(session, account_id, SERVICE, [FOLDER_KIND])
            retries = await catalog.skipped_items(session, account_id, SERVICE)
        self.names = {fid: v.name for fid, v in folders.items()}
        self.parents = {fid: v.parent_external_id for fid, v in folders.items()}
        return {s.collection: s for s in states}, retries

    async def _learn_root(self) -> dict[str, Any] | None:
        """Read the default folder (the tree's root) and remember its id, so that later runs
        need not ask (it changes only if the folder is deleted and made again, which its
        round's 404 or a resync tells us). Returns it, or None when it did not change."""
        root = await self.graph.get_json(
            f"{self.base}/contactFolders/contacts",
            headers=prefer(immutable_id=True),
            mailbox=self.user,
        )
        old, self.root_id = self.root_id, str(root["id"])
        self.tree_changed = True
        async with self.run.page() as cat:
            if old and old != self.root_id:
                log.info("contacts_root_changed", old=old, new=self.root_id)
                await self._drop_folder(cat, old)
            await cat.record(self._folder_record(root))
            await cat.save_delta(ROOT, delta_link=self.root_id)
        return root if old != self.root_id else None

    # ---- folders -------------------------------------------------------------------------

    def _folder_record(self, folder: dict[str, Any]) -> ItemRecord:
        folder_id = str(folder["id"])
        parent = folder.get("parentFolderId")
        parent_id = (
            None if folder_id == self.root_id or not parent or parent == folder_id else parent
        )
        name = str(folder.get("displayName") or "Contacts")
        return ItemRecord(
            external_id=folder_id,
            kind=FOLDER_KIND,
            name=name,
            parent_external_id=str(parent_id) if parent_id else None,
            change_key=_folder_change_key(folder),
            meta={"name": name, "is_default": folder_id == self.root_id},
        )

    async def _folders(
        self, state: DeltaState | None, first: DeltaPage | GraphError | None = None
    ) -> bool:
        """The folder tree's round (``first``: its first page, fetched with the folders'
        rounds); True when it had to start again (a resync)."""
        if state is not None and (state.resume_link or state.delta_link):
            link = state.resume_link or state.delta_link or ""
            try:
                if isinstance(first, ResyncRequired):
                    raise first
                page = first if isinstance(first, DeltaPage) else None  # else: ask again
                await self._folder_round(link, resync=False, first=page)
                return False
            except ResyncRequired:
                log.info("contact_folders_resync", account_id=str(self.run.account_id))
                await self._folder_round(f"{self.base}/contactFolders/delta", resync=True)
                return True
        await self._folder_round(f"{self.base}/contactFolders/delta", resync=False)
        return False

    async def _tree_pages(self, link: str, first: DeltaPage | None) -> AsyncIterator[DeltaPage]:
        if first is not None:
            yield first
            if not first.next_link:
                return
            link = first.next_link
        async with self.delta_pages(link, self.headers) as pages:
            async for page in pages:
                yield page

    async def _folder_round(
        self, link: str, *, resync: bool, first: DeltaPage | None = None
    ) -> None:
        """A first pass saves resume links (nothing older exists to close); a resync pass
        keeps the old link until it ends, then closes the folders it did not see."""
        seen: set[str] = {self.root_id}
        async for page in self._tree_pages(link, first):
            if not page.items and not page.next_link and not resync and page.delta_link:
                self.run.quiet(FOLDERS, page.delta_link)
                continue
            self.tree_changed = True
            values = await self._whole_folders(page.items)
            async with self.run.page() as cat:
                for value in values:
                    folder_id = str(value.get("id") or "")
                    if not folder_id or folder_id == self.root_id:
                        continue
                    if "@removed" in value:
                        await self._drop_folder(cat, folder_id)
                        seen.discard(folder_id)
                        continue
                    seen.add(folder_id)
                    await cat.record(self._folder_record(value))
                if page.next_link:
                    if not resync:
                        await cat.save_delta(FOLDERS, resume_link=page.next_link)
                    continue
                if resync:
                    stored = await catalog.open_external_ids(
                        cat.session, self.run.account_id, SERVICE, [FOLDER_KIND]
                    )
                    for folder_id in stored:
                        if folder_id not in seen:
                            await self._drop_folder(cat, folder_id)
                await cat.save_delta(FOLDERS, delta_link=page.delta_link)
            await self.ctx.progress()

    async def _whole_folders(self, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The page's folder entries with their name and parent (``whole_folders``)."""

        def stored_fields(version: ItemVersion) -> dict[str, Any]:
            kept = {"displayName": version.name, "parentFolderId": version.parent_external_id}
            return {k: v for k, v in kept.items() if v is not None}

        return await self.whole_folders(values, FOLDER_KEPT, stored_fields, "contactFolders")

    async def _drop_folder(self, cat: CatalogPage, folder_id: str) -> None:
        await cat.remove_subtree(folder_id)
        await cat.remove(folder_id)
        await cat.drop_delta(folder_id)

    async def _load_folders(self) -> None:
        async with unit_of_work(self.ctx.runtime) as session:
            stored = await catalog.open_external_ids(
                session, self.run.account_id, SERVICE, [FOLDER_KIND]
            )
        self.names = {fid: v.name for fid, v in stored.items()}
        self.parents = {fid: v.parent_external_id for fid, v in stored.items()}

    def folder_path(self, folder_id: str | None) -> str:
        names: list[str] = []
        current = folder_id
        guard: set[str] = set()
        while current and current in self.names and current not in guard:
            guard.add(current)
            names.append(self.names[current])
            current = self.parents.get(current)
        return "/" + "/".join(reversed(names))

    # ---- contacts ------------------------------------------------------------------------

    async def _run_passes(
        self, passes: list[_Pass], fetched: dict[str, DeltaPage | GraphError] | None = None
    ) -> set[str]:
        """Each folder's round, 20 first pages per ``$batch`` (or as ``fetched`` already);
        returns the folders Graph no longer finds."""
        missing: set[str] = set()
        for start in range(0, len(passes), BATCH_SIZE):
            group = passes[start : start + BATCH_SIZE]
            firsts = fetched if fetched is not None else await self._first_pages(group)
            for one in group:
                if not await self._contacts(one, firsts.get(one.folder_id)):
                    missing.add(one.folder_id)
        return missing

    def _pass_for(self, folder_id: str, state: DeltaState | None) -> _Pass:
        fresh = f"{self.base}/contactFolders/{quote(folder_id, safe='')}/contacts/delta"
        if state is None or not (state.resume_link or state.delta_link):
            return _Pass(folder_id, fresh)
        return _Pass(folder_id, state.resume_link or state.delta_link or fresh)

    async def _first_pages(self, group: list[_Pass]) -> dict[str, DeltaPage | GraphError]:
        """The first page of each folder's round, up to 20 folders per ``$batch``."""
        requests = [
            BatchRequest(id=str(n), method="GET", url=one.link, headers=self.headers)
            for n, one in enumerate(group)
        ]
        out: dict[str, DeltaPage | GraphError] = {}
        for n, answer in enumerate(await self.graph.batch(requests, mailbox=self.user)):
            folder_id = group[n].folder_id
            if answer.ok and isinstance(answer.body, dict):
                out[folder_id] = DeltaPage(
                    list(answer.body.get("value") or []),
                    answer.body.get("@odata.nextLink"),
                    answer.body.get("@odata.deltaLink"),
                )
            elif answer.error is not None:
                out[folder_id] = answer.error
        return out

    async def _contacts(self, one: _Pass, first: DeltaPage | GraphError | None) -> bool:
        """One folder's round; False when Graph no longer finds the folder (gone since the
        folder pass: the next one closes it, or the default folder was made again)."""
        if isinstance(first, ResyncRequired):
            first = None
            one = self._resync(one)
        elif isinstance(first, NotFound):
            log.info("contact_folder_gone", folder_id=one.folder_id)
            return False
        elif isinstance(first, GraphError):
            first = None  # ask again on its own; the client's retries apply there
        try:
            try:
                await self._round(one, first)
            except ResyncRequired:
                await self._round(self._resync(one), None)
        except NotFound:
            log.info("contact_folder_gone", folder_id=one.folder_id)
            return False
        except (BadRequest, Forbidden) as exc:  # one unreadable folder must not cost the rest
            await self.unreadable(
                one.folder_id, self.names.get(one.folder_id), exc, "contact folder"
            )
        return True

    def _resync(self, one: _Pass) -> _Pass:
        log.info("contacts_resync", folder_id=one.folder_id)
        fresh = f"{self.base}/contactFolders/{quote(one.folder_id, safe='')}/contacts/delta"
        return _Pass(one.folder_id, fresh, resync=True)

    async def _round(self, one: _Pass, first: DeltaPage | None) -> None:
        if first is not None:
            await self._page(one, first)
            link = first.next_link
        else:
            link = one.link
        if link is None:
            return
        async with self.delta_pages(link, self.headers) as pages:
            async for page in pages:
                await self._page(one, page)

    async def _page(self, one: _Pass, page: DeltaPage) -> None:
        last: dict[str, dict[str, Any] | None] = {}
        for item in page.items:
            contact_id = str(item.get("id") or "")
            if not contact_id:
                continue
            last.pop(contact_id, None)
            last[contact_id] = None if "@removed" in item else item
        stored = await self.run.current(list(last)) if last else {}
        changed: list[dict[str, Any]] = []
        for contact_id, value in last.items():
            if value is None:
                one.seen.discard(contact_id)
                continue
            one.seen.add(contact_id)
            if not _is_stored(stored.get(contact_id), value, one.folder_id):
                changed.append(value)
        changed, gone, failed = await self._whole_contacts(changed)
        changed = [c for c in changed if not _is_stored(stored.get(str(c["id"])), c, one.folder_id)]
        for contact_id in gone:
            last[contact_id] = None
            one.seen.discard(contact_id)
        removals = [contact_id for contact_id, value in last.items() if value is None]
        if not changed and not removals and not page.next_link and not one.resync:
            if page.delta_link:
                self.run.quiet(one.folder_id, page.delta_link)
            return
        photos, unreadable = await self._photos([str(c["id"]) for c in changed])
        # Stored side by side, up to 16 at once: one after the other, a page of 100 contacts
        # waited for 100 to 200 round trips to the blob store.
        records = await gather_limited(
            self._record(
                one.folder_id,
                c,
                photos.get(str(c["id"])),
                photo_missing=str(c["id"]) in unreadable,
            )
            for c in changed
        )
        async with self.run.page() as cat:
            await cat.preload(list(last))
            for record in records:
                await cat.record(record)
            for contact_id, value in last.items():
                if value is None:
                    await cat.remove(contact_id, only_if_parent=one.folder_id)
            if page.next_link:
                if not one.resync:
                    await cat.save_delta(one.folder_id, resume_link=page.next_link)
            else:
                if one.resync:
                    await cat.remove_unseen(
                        [CONTACT_KIND], one.seen, parent_external_id=one.folder_id
                    )
                await cat.save_delta(one.folder_id, delta_link=page.delta_link)
        for record in records:
            if record.external_id in unreadable:
                await self._photo_unreadable(
                    record.external_id, record.name, unreadable, one.folder_id
                )
        for contact_id, error in failed.items():  # the retry pass reads them next run
            version = stored.get(contact_id)
            await self.ctx.skip(
                item_ref=contact_id,
                name=version.name if version is not None else None,
                code=str(error.reason),
                detail=str(error),
                collection=one.folder_id,
            )
        await self.ctx.progress()

    async def _whole_contacts(
        self, entries: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[str], dict[str, GraphError]]:
        """The changed contacts whole: an entry that is not (an update sent as its changed
        properties) is read again by id, 20 per ``$batch``. Returns the whole contacts, the
        ids Graph no longer finds, and those it could not read, with the error."""
        partial = [str(e["id"]) for e in entries if not _is_whole(e)]
        if not partial:
            return entries, [], {}
        answers = await self.batch_get(
            [f"/contacts/{quote(contact_id, safe='')}" for contact_id in partial]
        )
        read: dict[str, dict[str, Any]] = {}
        gone: list[str] = []
        failed: dict[str, GraphError] = {}
        for contact_id, answer in zip(partial, answers, strict=True):
            if answer.ok and isinstance(answer.body, dict) and answer.body.get("id"):
                read[contact_id] = answer.body
            elif isinstance(answer.error, NotFound):
                gone.append(contact_id)
            else:
                failed[contact_id] = answer.error or GraphError(
                    answer.status, "NoBody", "empty answer"
                )
        whole = [
            read.get(str(e["id"]), e)
            for e in entries
            if str(e["id"]) not in gone and str(e["id"]) not in failed
        ]
        return whole, gone, failed

    async def _photo_unreadable(
        self, contact_id: str, name: str | None, unreadable: dict[str, str], folder_id: str
    ) -> None:
        """Skip a contact whose photo ``_photos`` could not read, with its reason, for the
        next run to try again (from the delta pass and the retry pass alike)."""
        await self.ctx.skip(
            item_ref=contact_id,
            name=name,
            code="photo_unreadable",
            detail=unreadable[contact_id],
            collection=folder_id,
        )

    async def _photos(
        self, contact_ids: list[str]
    ) -> tuple[dict[str, tuple[str, bytes]], dict[str, str]]:
        """Contact photos (Graph has no "has a photo" flag: 404 means none), 20 per
        ``$batch``; binary answers come back base64-encoded in the batch's JSON. Also
        returns the contacts whose photo could not be read, with the reason."""
        answers = await self.batch_get(
            [f"/contacts/{quote(contact_id, safe='')}/photo/$value" for contact_id in contact_ids]
        )
        found: dict[str, tuple[str, bytes]] = {}
        failed: dict[str, str] = {}
        for n, answer in enumerate(answers):
            if answer.ok and isinstance(answer.body, str) and answer.body:
                headers = {k.lower(): v for k, v in answer.headers.items()}
                content_type = headers.get("content-type", "image/jpeg")
                found[contact_ids[n]] = (content_type, answer.binary())
            elif not answer.ok and not isinstance(answer.error, NotFound):
                failed[contact_ids[n]] = str(answer.error)
                log.warning(
                    "contact_photo_unreadable", contact_id=contact_ids[n], status=answer.status
                )
        return found, failed

    async def _record(
        self,
        folder_id: str,
        contact: dict[str, Any],
        photo: tuple[str, bytes] | None = None,
        *,
        photo_missing: bool = False,
    ) -> ItemRecord:
        """``photo_missing``: the contact is kept without the photo it has, under a change
        key of its own, so that the retry next run stores a new, complete version."""
        contact = {k: v for k, v in contact.items() if k != "@odata.context"}
        size = 0
        refs: list[ContentRef] = []
        if photo is not None:
            ref = await self.ctx.repo.put_bytes(photo[1])
            refs.append(ref)
            size = ref.size
            contact[PRIVATE] = {"photo": {"contentType": photo[0], "content": ref.to_json()}}
        data = json_bytes(contact, sort_keys=True)
        document = await self.ctx.repo.put_bytes(data)
        folder_path = self.folder_path(folder_id)
        name = (
            str(contact.get("displayName") or "")
            or str(contact.get("fileAs") or "")
            or next((str(e.get("address")) for e in contact.get("emailAddresses") or []), "")
            or "(no name)"
        )
        return ItemRecord(
            external_id=str(contact["id"]),
            kind=CONTACT_KIND,
            name=name,
            parent_external_id=folder_id,
            size=len(data) + size,
            modified_at=modified_at(contact),
            change_key=(
                f"{contact.get('changeKey')}#photo-missing"
                if photo_missing
                else contact.get("changeKey")
            ),
            document=document,
            refs=refs,
            meta=meta_of(contact, folder_path),
            search=fields_of(contact, folder_path),
        )

    async def _retry_skipped(self, rows: list[SkippedItem]) -> None:
        """Contacts an earlier run could not store whole (their photo failed): read them
        again by id, photo included."""
        resolved: list[str] = []
        for row in rows:
            try:
                contact = await self._get_contact(row.external_id)
            except NotFound:
                resolved.append(row.external_id)
                continue
            except GraphError as exc:
                await self.ctx.skip(
                    item_ref=row.external_id,
                    name=row.name,
                    code=str(exc.reason),
                    detail=str(exc),
                    collection=row.collection,
                )
                continue
            folder_id = str(contact.get("parentFolderId") or row.collection or self.root_id)
            if folder_id not in self.names:
                resolved.append(row.external_id)
                continue
            photos, unreadable = await self._photos([row.external_id])
            if row.external_id in unreadable:
                await self._photo_unreadable(row.external_id, row.name, unreadable, folder_id)
                continue
            record = await self._record(folder_id, contact, photos.get(row.external_id))
            async with self.run.page() as cat:
                await cat.record(record)
            resolved.append(row.external_id)
        if resolved:
            await self.ctx.resolved(resolved)

    async def _get_contact(self, contact_id: str) -> dict[str, Any]:
        return await self.get_item(
            f"{self.base}/contacts/{quote(contact_id, safe='')}", prefer(immutable_id=True)
        )


async def collect(ctx: CollectContext) -> None:
    await ContactsCollector(ctx).collect()
