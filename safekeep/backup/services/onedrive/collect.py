"""Backing up a user's drive: by delta from its root (``drive.collect``), after trying again
the files earlier runs skipped."""

from __future__ import annotations

from safekeep.backup.collect import CollectContext
from safekeep.backup.drive.collect import DriveCollector, DriveSource, FolderTree, q
from safekeep.backup.drive.model import FOLDER
from safekeep.graph.client import GraphClient


async def user_drive(graph: GraphClient, user_id: str) -> tuple[str, str]:
    """The user's drive id and root item id, in one request (the root names its drive)."""
    root = await graph.get_json(
        f"/users/{q(user_id)}/drive/root",
        params={"$select": "id,parentReference"},
        mailbox=user_id,
    )
    return str(root["parentReference"]["driveId"]), str(root["id"])


async def collect(ctx: CollectContext) -> None:
    user_id = ctx.account.graph_id
    drive_id, root_id = await user_drive(ctx.graph, user_id)
    source = DriveSource(drive_id=drive_id, root_id=root_id, top=None, throttle_key=user_id)
    collector = DriveCollector(ctx, source, await FolderTree.load(ctx, [FOLDER]))
    retries = [r.external_id for r in await ctx.retries() if r.collection == drive_id]
    await collector.retry_skipped(retries)
    await collector.run(await ctx.run.delta_links())
