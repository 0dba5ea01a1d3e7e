"""Drive files in an export: each file as itself, in its folder tree."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from safekeep.backup.drive.model import FILE
from safekeep.backup.services.base import ExportEntry, Selection, read_content
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion


def file_entry(
    repo: TenantRepository, version: ItemVersion, folder_names: Sequence[str]
) -> ExportEntry:
    def open_stream() -> AsyncIterator[bytes]:
        return read_content(repo, version)

    return ExportEntry(
        path="/".join([*folder_names, version.name]),
        open=open_stream,
        version=version,
        modified_at=version.modified_at,
    )


async def export_files(
    repo: TenantRepository,
    selection: Selection,
    *,
    also: Callable[[ItemVersion], None] | None = None,
) -> AsyncIterator[ExportEntry]:
    """One entry per file version in the selection; other kinds go to ``also``."""
    async for version in selection.items():
        if version.kind == FILE and version.content:
            yield file_entry(repo, version, selection.path_of(version.parent_external_id))
        elif also is not None:
            also(version)
