"""Restoring into a user's drive by path (``drive.restore``); in place, files present now that
were not at the restore point are reported (``drive.observe_strays``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from safekeep.backup.drive import restore as drive
from safekeep.backup.drive.model import FILE
from safekeep.backup.services.base import RestoreContext, Selection
from safekeep.backup.services.onedrive.collect import user_drive
from safekeep.tenants.models import ItemVersion


async def restore_drive(
    ctx: RestoreContext,
    selection: Selection,
    writer: drive.DriveWriter,
    versions: AsyncIterator[ItemVersion],
    *,
    folder_names: Any,
    top: Sequence[str],
) -> drive.Expected:
    """Restore ``versions`` (files) through ``writer``; folders in scope are created first so
    that empty ones come back too. ``folder_names(version)`` is where each goes below
    ``top``. Returns what the restore point held (for ``drive.observe_strays``)."""
    expected = drive.Expected()
    for external_id, names in drive.folders_in_scope(selection):
        await drive.make_folder(ctx, writer, selection.folders[external_id], [*top, *names])

    async def work(version: ItemVersion) -> None:
        if version.kind != FILE:
            return
        names = folder_names(version)
        expected.add([*names, version.name], version)
        await writer.put(version, [*top, *names])

    await drive.run_bounded(writer.slots, versions, work)
    return expected


async def restore(ctx: RestoreContext, selection: Selection) -> None:
    user_id = ctx.target.graph_id
    drive_id, root_id = await user_drive(ctx.graph, user_id)
    target = drive.DriveTarget(drive_id=drive_id, root_id=root_id, throttle_key=user_id)
    writer = drive.DriveWriter(ctx, target)
    top = [ctx.new_folder_name] if ctx.folder_mode == "new" else []
    expected = await restore_drive(
        ctx,
        selection,
        writer,
        selection.items(),
        folder_names=lambda v: selection.path_of(v.parent_external_id),
        top=top,
    )
    in_place = ctx.folder_mode == "original" and ctx.target.id == ctx.source.id
    if in_place and (selection.whole or selection.roots):
        under = None if selection.whole else [selection.path_of(r) for r in selection.roots or ()]
        await drive.observe_strays(ctx, target, expected, under=under)
