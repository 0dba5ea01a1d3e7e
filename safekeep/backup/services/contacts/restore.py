"""Putting contacts back: ``POST /contactFolders/{id}/contacts`` with every writable field,
then ``PUT /contacts/{id}/photo/$value`` when the contact had a photo.

Folders: "original" maps the backed-up default folder onto the target's default folder and
finds (or creates) each folder below it by name; "new" creates ``ctx.new_folder_name`` under
the target's default folder and rebuilds the tree below it there (the default folder's own
contacts land directly in the new folder). Conflict: the target folder holds the contact itself
(same Graph id, restoring in place) or a copy Safekeep restored earlier from the same item
(``restore/identity.py``); two people of the same name and address are still two contacts.
``overwrite`` creates the restored contact first and then deletes the existing one, so a
failure never loses both.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import quote

import structlog

from safekeep.backup.restore import identity
from safekeep.backup.services.base import RestoreContext, Selection, read_document, restore_each
from safekeep.backup.services.contacts.document import PRIVATE
from safekeep.graph.client import prefer
from safekeep.graph.errors import Conflict, GraphError, NotFound
from safekeep.storage.repository import ContentRef
from safekeep.tenants.models import ItemVersion

log = structlog.get_logger(__name__)

CONCURRENCY = 4
INDEX_PAGE_SIZE = 500
WRITABLE = (
    "assistantName",
    "birthday",
    "businessAddress",
    "businessHomePage",
    "businessPhones",
    "categories",
    "children",
    "companyName",
    "department",
    "displayName",
    "emailAddresses",
    "fileAs",
    "generation",
    "givenName",
    "homeAddress",
    "homePhones",
    "imAddresses",
    "initials",
    "jobTitle",
    "manager",
    "middleName",
    "mobilePhone",
    "nickName",
    "officeLocation",
    "otherAddress",
    "personalNotes",
    "profession",
    "spouseName",
    "surname",
    "title",
    "yomiCompanyName",
    "yomiGivenName",
    "yomiSurname",
)


def payload(contact: dict[str, Any]) -> dict[str, Any]:
    return {k: contact[k] for k in WRITABLE if contact.get(k) is not None}


class ContactsRestore:
    def __init__(self, ctx: RestoreContext, selection: Selection) -> None:
        self.ctx = ctx
        self.selection = selection
        self.graph = ctx.graph
        self.user = ctx.target.graph_id
        self.base = f"/users/{quote(self.user, safe='')}"
        self.headers = prefer(immutable_id=True)
        self._root: str | None = None
        self._children: dict[str, dict[str, str]] = {}  # parent -> lower name -> id
        self._mapped: dict[str | None, str] = {}
        self._indexes: dict[str, identity.TargetIndex] = {}
        self._lock = asyncio.Lock()
        self.in_place = identity.in_place(ctx.source.id, ctx.target.id, ctx.folder_mode)

    async def restore(self) -> None:
        await restore_each(self.ctx, self.selection, self._restore_one, concurrency=CONCURRENCY)

    # ---- folders -------------------------------------------------------------------------

    async def _root_folder(self) -> str:
        if self._root is None:
            root = await self.graph.get_json(
                f"{self.base}/contactFolders/contacts", headers=self.headers, mailbox=self.user
            )
            self._root = str(root["id"])
            if self.ctx.folder_mode == "new":
                self._root = await self._child(self._root, self.ctx.new_folder_name)
        return self._root

    async def _child(self, parent: str, name: str, *, refresh: bool = False) -> str:
        """The folder ``name`` under ``parent``, created if missing."""
        listing = f"{self.base}/contactFolders/{quote(parent, safe='')}/childFolders"
        known = self._children.get(parent)
        if known is None or refresh:
            known = {}
            async for values in self.graph.paginate(
                listing, headers=self.headers, mailbox=self.user
            ):
                for folder in values:
                    known[str(folder.get("displayName") or "").casefold()] = str(folder["id"])
            self._children[parent] = known
        found = known.get(name.casefold())
        if found is not None:
            return found
        try:
            created = await self.graph.request_json(
                "POST",
                listing,
                json={"displayName": name},
                headers=self.headers,
                mailbox=self.user,
                expected=(201, 200),
            )
        except Conflict:
            if refresh:  # created meanwhile by someone else, yet not listed: give up
                raise
            return await self._child(parent, name, refresh=True)
        assert created is not None
        known[name.casefold()] = str(created["id"])
        return str(created["id"])

    async def _target_folder(self, source_parent: str | None) -> str:
        """The target folder for items of ``source_parent`` (created along the way)."""
        async with self._lock:
            if source_parent in self._mapped:
                return self._mapped[source_parent]
            chain: list[ItemVersion] = []
            current = source_parent
            while current is not None and current in self.selection.folders:
                folder = self.selection.folders[current]
                if folder in chain:
                    break
                chain.append(folder)
                current = folder.parent_external_id
            chain.reverse()
            if chain and (chain[0].meta or {}).get("is_default"):
                chain = chain[1:]  # the default folder maps onto the target's root
            target = await self._root_folder()
            for folder in chain:
                target = await self._child(target, folder.name)
            self._mapped[source_parent] = target
            return target

    async def _index(self, folder_id: str) -> identity.TargetIndex:
        async with self._lock:
            index = self._indexes.get(folder_id)
            if index is None:
                index = identity.TargetIndex()
                async for values in self.graph.paginate(
                    f"{self.base}/contactFolders/{quote(folder_id, safe='')}/contacts",
                    params={"$select": "id", "$expand": identity.EXPAND},
                    headers=prefer(max_page_size=INDEX_PAGE_SIZE, immutable_id=True),
                    mailbox=self.user,
                ):
                    for contact in values:
                        index.add(contact)
                self._indexes[folder_id] = index
            return index

    # ---- one contact ---------------------------------------------------------------------

    async def _restore_one(self, version: ItemVersion) -> None:
        contact = await read_document(self.ctx.repo, version)
        if contact is None:
            await self.ctx.report.failed(
                version, code="no_document", detail="this version has no stored contact"
            )
            return
        folder_id = await self._target_folder(version.parent_external_id)
        existing: list[str] = []
        index: identity.TargetIndex | None = None
        if self.ctx.conflict != "keep_both":
            index = await self._index(folder_id)
            graph_id = self.selection.external_id(version) if self.in_place else None
            existing = index.existing(version, graph_id)
            if existing and self.ctx.conflict == "skip":
                await self.ctx.report.existing(version, target_id=existing[0])
                return
        created = await self.graph.request_json(
            "POST",
            f"{self.base}/contactFolders/{quote(folder_id, safe='')}/contacts",
            json={**payload(contact), "singleValueExtendedProperties": identity.stamp(version)},
            headers=self.headers,
            mailbox=self.user,
            expected=(201, 200),
        )
        assert created is not None
        new_id = str(created["id"])
        if index is not None:
            index.remember(version, new_id)
        photo = (contact.get(PRIVATE) or {}).get("photo") or {}
        problem = None
        if photo.get("content"):
            try:
                await self.graph.request_json(
                    "PUT",
                    f"{self.base}/contacts/{quote(new_id, safe='')}/photo/$value",
                    content=await self.ctx.repo.read_bytes(ContentRef.from_json(photo["content"])),
                    headers={"Content-Type": str(photo.get("contentType") or "image/jpeg")},
                    mailbox=self.user,
                    expected=(200, 204),
                )
            except GraphError as exc:
                problem = f"created as {new_id} but its photo failed: {exc}"
        for old in existing if self.ctx.conflict == "overwrite" else []:
            with contextlib.suppress(NotFound):
                await self.graph.request_json(
                    "DELETE",
                    f"{self.base}/contacts/{quote(old, safe='')}",
                    headers=self.headers,
                    mailbox=self.user,
                    expected=(204, 200),
                )
        if index is not None:
            index.forget(existing)
        if problem is not None:
            await self.ctx.report.failed(version, code="partially_restored", detail=problem)
            return
        await self.ctx.report.restored(version, target_id=new_id)


async def restore(ctx: RestoreContext, selection: Selection) -> None:
    await ContactsRestore(ctx, selection).restore()
