"""Contacts as files: one ``.vcf`` per contact in its folder path."""

from __future__ import annotations

from collections.abc import AsyncIterator

from safekeep.backup.services.base import ExportContext, ExportEntry, Selection
from safekeep.backup.services.contacts.render import FORM


def export(ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
    return FORM.export(ctx, selection)
