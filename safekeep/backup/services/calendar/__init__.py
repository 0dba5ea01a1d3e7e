"""Calendars: every calendar of a user and every event in it, with recurrence (series
masters holding their exceptions and cancelled occurrences), attendees, online-meeting
data and attachments.

Catalog kinds: ``calendar`` (a folder; meta: name, color, hex_color, is_default, owner,
can_edit) and ``event`` (a series master or a single event, parent = its calendar). An
event's ``document`` is its Graph JSON with ``attachments`` (file bytes as blobs, see
``collect``) and ``exceptionOccurrences``/``cancelledOccurrences``; it has no ``content``:
its original form is rendered as ICS on demand. Event meta: see ``document.meta_of``.

How the collector stays incremental with v1.0 only, and what it does about events outside
the delta window: see ``collect``. Restore rules: see ``restore``.
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
from safekeep.backup.services.calendar import collect as collector
from safekeep.backup.services.calendar import document as documents
from safekeep.backup.services.calendar import ics
from safekeep.backup.services.calendar import restore as restorer
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion

ICS_TYPE = "text/calendar; charset=utf-8"


def component(name: str) -> str:
    """One path component: a "/" in a subject or calendar name must not open a folder."""
    return safe_name(name.replace("/", "-"))


def ics_filename(version: ItemVersion) -> str:
    """Named like "2026-01-05 0900 Weekly sync.ics", so a folder listing sorts by date."""
    start = documents.offset_time((version.meta or {}).get("start"))
    stamp = f"{start:%Y-%m-%d %H%M} " if start else ""
    return component(f"{stamp}{version.name or 'event'}")[:140] + ".ics"


class CalendarService:
    name = "calendar"
    folder_kinds = frozenset({collector.CALENDAR_KIND})

    async def collect(self, ctx: CollectContext) -> None:
        await collector.collect(ctx)

    async def search_fields(
        self, version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
    ) -> SearchFields | None:
        if version.kind != collector.EVENT_KIND or document is None:
            return None
        return documents.search_fields(document, str((version.meta or {}).get("calendar") or ""))

    async def content(self, repo: TenantRepository, version: ItemVersion) -> Content:
        if version.kind != collector.EVENT_KIND or not version.document:
            raise ValueError("only events have an ICS form")

        return rendered_content(
            version,
            media_type=ICS_TYPE,
            filename=ics_filename(version),
            suffix="ics",
            render=lambda: _ics_stream(repo, version),
        )

    async def restore(self, ctx: RestoreContext, selection: Selection) -> None:
        await restorer.restore(ctx, selection)

    async def export(self, ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
        async for version in selection.items():
            if version.kind != collector.EVENT_KIND or not version.document:
                continue
            folder = selection.path_of(version.parent_external_id) or [
                str((version.meta or {}).get("calendar") or "Calendar")
            ]

            def opener(v: ItemVersion = version) -> AsyncIterator[bytes]:
                return _ics_stream(ctx.repo, v)

            yield ExportEntry(
                path="/".join([*(component(n) for n in folder), ics_filename(version)]),
                open=opener,
                version=version,
                modified_at=version.modified_at,
            )


async def _ics_stream(repo: TenantRepository, version: ItemVersion) -> AsyncIterator[bytes]:
    event = await read_document(repo, version)
    if event is None:
        return
    async for piece in ics.stream(repo, event):
        yield piece


SERVICE = CalendarService()
