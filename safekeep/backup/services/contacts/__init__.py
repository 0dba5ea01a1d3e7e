"""Contacts: every contact folder of a user (the default "Contacts" folder at the top, its
child folders below) and every contact with all its fields.

Catalog kinds: ``contact_folder`` (a folder; meta: name, is_default) and ``contact`` (parent
= its folder; meta: see ``document.meta_of``). A contact's ``document`` is its Graph JSON;
its original form is rendered as a vCard 3.0 (``text/vcard``, photo inline) on demand, so
it has no ``content``. A contact's photo is a blob referenced from the document as
``_safekeep.photo.content``. Collection: see ``collect``; restore rules: see ``restore``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.backup.collect import CollectContext
from safekeep.backup.export.zipper import safe_name
from safekeep.backup.services.base import (
    Content,
    ContentReader,
    ExportContext,
    ExportEntry,
    RestoreContext,
    Selection,
    read_document,
    rendered_content,
)
from safekeep.backup.services.contacts import collect as collector
from safekeep.backup.services.contacts import document as documents
from safekeep.backup.services.contacts import restore as restorer
from safekeep.storage.repository import ContentRef, TenantRepository
from safekeep.tenants.models import ItemVersion

VCARD_TYPE = "text/vcard; charset=utf-8"


def component(name: str) -> str:
    """One path component: a "/" in a name must not open a folder."""
    return safe_name(name.replace("/", "-"))


def vcf_filename(version: ItemVersion) -> str:
    return component(version.name or "contact")[:140] + ".vcf"


class ContactsService:
    name = "contacts"
    folder_kinds = frozenset({collector.FOLDER_KIND})

    async def collect(self, ctx: CollectContext) -> None:
        await collector.collect(ctx)

    async def search_fields(
        self, version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
    ) -> SearchFields | None:
        if version.kind != collector.CONTACT_KIND or document is None:
            return None
        return documents.search_fields(document, str((version.meta or {}).get("folder") or "/"))

    async def content(self, repo: TenantRepository, version: ItemVersion) -> Content:
        if version.kind != collector.CONTACT_KIND or not version.document:
            raise ValueError("only contacts have a vCard form")

        return rendered_content(
            version,
            media_type=VCARD_TYPE,
            filename=vcf_filename(version),
            suffix="vcf",
            render=lambda: _vcard(repo, version),
        )

    async def restore(self, ctx: RestoreContext, selection: Selection) -> None:
        await restorer.restore(ctx, selection)

    async def export(self, ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
        async for version in selection.items():
            if version.kind != collector.CONTACT_KIND or not version.document:
                continue

            def opener(v: ItemVersion = version) -> AsyncIterator[bytes]:
                return _vcard(ctx.repo, v)

            folder = selection.path_of(version.parent_external_id) or ["Contacts"]
            yield ExportEntry(
                path="/".join([*(component(n) for n in folder), vcf_filename(version)]),
                open=opener,
                version=version,
                modified_at=version.modified_at,
            )


async def _vcard(repo: TenantRepository, version: ItemVersion) -> AsyncIterator[bytes]:
    contact = await read_document(repo, version)
    if contact is None:
        return
    photo = ((contact.get(documents.PRIVATE) or {}).get("photo")) or None
    image = None
    if photo and photo.get("content"):
        data = await repo.read_bytes(ContentRef.from_json(photo["content"]))
        image = (str(photo.get("contentType") or "image/jpeg"), data)
    yield documents.vcard(contact, image)


SERVICE = ContactsService()
