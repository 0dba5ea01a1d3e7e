"""Exchange Online mail: every folder and message of a mailbox, restorable as received mail.

Catalog kinds: ``mail_folder`` (a folder; ``parent_external_id`` None at the top of the
mailbox, and for Recoverable Items, which lives outside it) and ``message``.

What a version holds:

- ``content``: the message's exact MIME as Graph serves it at ``/messages/{id}/$value``
  (download and ``.eml`` export give these bytes back unchanged).
- ``document``: the message's Graph JSON with its attachment list (metadata, no
  ``contentBytes``: file attachment bytes are taken from the MIME; attached items carry
  their nested ``item``), which is what a restore creates the message from.
- ``meta`` of a message: ``subject``, ``from`` ({name, address}), ``to``/``cc``/``bcc``
  (lists of {name, address}), ``received_at``, ``sent_at`` (ISO 8601), ``is_read``,
  ``is_draft``, ``importance``, ``flag`` (flagStatus), ``categories``,
  ``internet_message_id``, ``conversation_id``, ``has_attachments``, ``attachments``
  ([{name, content_type, size, is_inline, kind: file|item|reference}]), ``folder_path``
  (at capture time, e.g. "/Inbox/Projects") and ``body_preview``.
- ``meta`` of a folder: ``well_known`` (inbox, sentitems, ... or None) and ``is_hidden``.

Policy switches: ``include_deleted_items`` and ``include_junk`` decide whether the messages
of Deleted Items and Junk Email (and their subfolders) are backed up; the folders themselves
are always listed. ``include_recoverable_items`` adds Recoverable Items (Deletions) as a
top-level folder of its own; a restore puts its messages in a "Recoverable Items" folder.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.backup.collect import CollectContext
from safekeep.backup.services.base import (
    Content,
    ContentReader,
    ExportContext,
    ExportEntry,
    RestoreContext,
    Selection,
    read_content,
)
from safekeep.backup.services.mail import collect as _collect
from safekeep.backup.services.mail import export as _export
from safekeep.backup.services.mail import fields as _fields
from safekeep.backup.services.mail import restore as _restore
from safekeep.errors import NotFound
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion

_QUOTES = re.compile(r'["\r\n]')


class MailService:
    name = "mail"
    folder_kinds = frozenset({_fields.FOLDER})

    async def collect(self, ctx: CollectContext) -> None:
        await _collect.collect(ctx)

    async def search_fields(
        self, version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
    ) -> SearchFields | None:
        return await _fields.search_fields(version, document, content)

    async def content(self, repo: TenantRepository, version: ItemVersion) -> Content:
        if version.kind != _fields.MESSAGE or not version.content:
            raise NotFound("A mail folder has no content of its own; download its messages")
        size = int(version.content.get("size") or version.size)

        def open_range(start: int, end_inclusive: int | None) -> AsyncIterator[bytes]:
            return read_content(repo, version, start=start, end_inclusive=end_inclusive)

        return Content(
            media_type="message/rfc822",
            filename=_QUOTES.sub("_", _export.eml_name(version)),
            size=size,
            etag=version.content_hash or str(version.id),
            rangeable=True,
            open=open_range,
        )

    async def restore(self, ctx: RestoreContext, selection: Selection) -> None:
        await _restore.restore(ctx, selection)

    def export(self, ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
        return _export.export(ctx, selection)


SERVICE = MailService()
