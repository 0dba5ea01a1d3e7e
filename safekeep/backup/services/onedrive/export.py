"""A drive as files, in their tree (``drive.export``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from safekeep.backup.drive.export import export_files
from safekeep.backup.services.base import ExportContext, ExportEntry, Selection


def export(ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
    return export_files(ctx.repo, selection)
