"""Mail as files: one ``.eml`` per message (the exact MIME backed up) in its folder path, and
on request one ``.mbox`` per folder (mboxrd) next to the folder of the same name."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from safekeep.backup.services.base import ExportContext, ExportEntry, Selection, read_content
from safekeep.backup.services.mail import mime
from safekeep.backup.services.mail.search import MESSAGE, parse_when
from safekeep.runtime import unit_of_work
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import ItemVersion

MBOX_PAGE = 200
_SLASHES = re.compile(r"[/\\]+")


def file_stem(subject: str | None, fallback: str = "(no subject)") -> str:
    """A subject usable as a file name: no path separators, a sane length."""
    cleaned = _SLASHES.sub("_", (subject or "").strip()) or fallback
    return cleaned[:120]


def eml_name(version: ItemVersion) -> str:
    return file_stem((version.meta or {}).get("subject") or version.name) + ".eml"


def _opener(repo: TenantRepository, version: ItemVersion) -> Callable[[], AsyncIterator[bytes]]:
    return lambda: read_content(repo, version)


def _mbox_opener(
    ctx: ExportContext, version_ids: list[uuid.UUID]
) -> Callable[[], AsyncIterator[bytes]]:
    return lambda: mbox_stream(ctx, version_ids)


async def mbox_stream(ctx: ExportContext, version_ids: list[uuid.UUID]) -> AsyncIterator[bytes]:
    """One folder's messages as mboxrd, read back page by page (memory stays bounded)."""
    for start in range(0, len(version_ids), MBOX_PAGE):
        wanted = version_ids[start : start + MBOX_PAGE]
        async with unit_of_work(ctx.runtime) as session:
            found = await catalog.versions_by_ids(session, ctx.account.tenant_id, wanted)
        by_id = {v.id: v for v in found}
        for version_id in wanted:
            version = by_id.get(version_id)
            if version is None or not version.content:
                continue
            meta: dict[str, Any] = version.meta or {}
            sender = (meta.get("from") or {}).get("address")
            yield mime.mbox_separator(sender, parse_when(meta.get("received_at")))
            async for chunk in mime.mboxrd_escape(read_content(ctx.repo, version)):
                yield chunk
            yield b"\n"


async def export(ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
    want_mbox = bool(ctx.options.get("mbox"))
    by_folder: dict[str | None, list[uuid.UUID]] = {}
    async for version in selection.items():
        if version.kind != MESSAGE or not version.content:
            continue
        folder = [file_stem(n, "folder") for n in selection.path_of(version.parent_external_id)]
        yield ExportEntry(
            path="/".join([*folder, eml_name(version)]),
            open=_opener(ctx.repo, version),
            version=version,
            modified_at=parse_when((version.meta or {}).get("received_at")),
        )
        if want_mbox:
            by_folder.setdefault(version.parent_external_id, []).append(version.id)
    for parent, ids in by_folder.items():
        folder = [file_stem(n, "folder") for n in selection.path_of(parent)] or ["Mailbox"]
        yield ExportEntry(
            path="/".join(folder) + ".mbox",
            open=_mbox_opener(ctx, ids),
            version=None,
        )
