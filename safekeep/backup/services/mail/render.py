"""A message's original form, as browse and download hand it out: the exact MIME backed up,
served with ranges."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from safekeep.backup.services.base import Content, read_content
from safekeep.backup.services.mail.export import eml_name
from safekeep.backup.services.mail.search import MESSAGE
from safekeep.errors import NotFound
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion

_QUOTES = re.compile(r'["\r\n]')


async def content(repo: TenantRepository, version: ItemVersion) -> Content:
    if version.kind != MESSAGE or not version.content:
        raise NotFound("A mail folder has no content of its own; download its messages")
    size = int(version.content.get("size") or version.size)

    def open_range(start: int, end_inclusive: int | None) -> AsyncIterator[bytes]:
        return read_content(repo, version, start=start, end_inclusive=end_inclusive)

    return Content(
        media_type="message/rfc822",
        filename=_QUOTES.sub("_", eml_name(version)),
        size=size,
        etag=version.content_hash or str(version.id),
        rangeable=True,
        open=open_range,
    )
