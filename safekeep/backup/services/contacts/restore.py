"""Putting contacts back: ``POST /contactFolders/{id}/contacts`` with every writable field,
then ``PUT /contacts/{id}/photo/$value`` when the contact had a photo.

Folders: "original" maps the backed-up default folder onto the target's default folder and
finds (or creates) each folder below it by name; "new" creates ``ctx.new_folder_name`` under
the target's default folder and rebuilds the tree below it there (the default folder's own
contacts land directly in the new folder). Conflict: the target folder holds the contact itself
(same Graph id, restoring in place) or a copy Safekeep restored earlier from the same item
(``restore/identity.py``, stamped once its photo is in: a contact whose photo failed is
never taken as restored); two people of the same name and address are still two contacts.
``overwrite`` creates the restored contact first and then deletes the existing one, so a
failure never loses both.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import structlog

from safekeep.backup.outlook import Created, ItemRestore
from safekeep.backup.restore import identity
from safekeep.backup.restore.failures import retries_the_job
from safekeep.backup.services.base import RestoreContext, Selection
from safekeep.backup.services.contacts.search import PRIVATE
from safekeep.graph.errors import Conflict, GraphError
from safekeep.storage.repository import ContentRef
from safekeep.tenants.models import ItemVersion

log = structlog.get_logger(__name__)

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


class ContactsRestore(ItemRestore):
    noun = "contact"
    items = "contacts"

    def __init__(self, ctx: RestoreContext, selection: Selection) -> None:
        super().__init__(ctx, selection)
        self._root: str | None = None
        self._children: dict[str, dict[str, str]] = {}  # parent -> lower name -> id
        self._mapped: dict[str | None, str] = {}
        self._lock = asyncio.Lock()

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
            created = str((await self.post(listing, {"displayName": name}))["id"])
        except Conflict:
            if refresh:  # created meanwhile by someone else, yet not listed: give up
                raise
            return await self._child(parent, name, refresh=True)
        known[name.casefold()] = created
        return created

    async def container(self, source_parent: str | None) -> str:
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

    def listing(self, container: str) -> str:
        return f"{self.base}/contactFolders/{quote(container, safe='')}/contacts"

    # ---- one contact ---------------------------------------------------------------------

    async def create(
        self, container: str, version: ItemVersion, contact: dict[str, Any]
    ) -> Created:
        # Stamped by ``ItemRestore`` once its photo is in too; at once when it has none.
        photo = (contact.get(PRIVATE) or {}).get("photo") or {}
        marks = (
            identity.started(version, self.ctx.job_id)
            if photo.get("content")
            else identity.stamp(version, self.ctx.job_id)
        )
        body = {**payload(contact), "singleValueExtendedProperties": marks}
        new_id = str((await self.post(self.listing(container), body))["id"])
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
            except Exception as exc:
                if retries_the_job(exc):  # the store or Graph unavailable: the retry adds it
                    await self.discard(new_id)
                    raise
                if not isinstance(exc, GraphError):
                    raise
                return Created(new_id, problem=f"created as {new_id} but its photo failed: {exc}")
        return Created(new_id, stamped=not photo.get("content"))


async def restore(ctx: RestoreContext, selection: Selection) -> None:
    await ContactsRestore(ctx, selection).restore()
