"""Calendars as files: one ``.ics`` per event (series with their exceptions) in a folder per
calendar."""

from __future__ import annotations

from collections.abc import AsyncIterator

from safekeep.backup.services.base import ExportContext, ExportEntry, Selection
from safekeep.backup.services.calendar.render import FORM


def export(ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
    return FORM.export(ctx, selection)
