"""Backing up a user's drive: by delta from its root (``drive.collect``), after trying again
the files earlier runs skipped.

The drive id and its root item's id are asked for once and remembered (delta state ``root``,
whose link holds both as JSON): an unchanged drive then costs its delta round and nothing
else. They are learned again when Graph says they changed: the drive's delta answers 404 (the
user's OneDrive was deleted and provisioned again: the new drive is backed up from scratch,
the old one's items end with their versions kept), or a delta page shows a root item under
another id (a resync's re-enumeration starts with the root).
"""

from __future__ import annotations

import json

import structlog

from safekeep.backup.catalog import CatalogPage
from safekeep.backup.collect import CollectContext
from safekeep.backup.drive.collect import DriveCollector, DriveSource, FolderTree, q
from safekeep.backup.drive.delta import RESYNC_SUFFIX
from safekeep.backup.drive.model import FILE, FOLDER
from safekeep.graph.client import GraphClient
from safekeep.graph.errors import NotFound
from safekeep.runtime import unit_of_work
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import DeltaState, SkippedItem

log = structlog.get_logger(__name__)

SERVICE = "onedrive"
ROOT = "root"  # never a drive id (those are long base64 strings)


async def user_drive(graph: GraphClient, user_id: str) -> tuple[str, str]:
    """The user's drive id and root item id, in one request (the root names its drive)."""
    root = await graph.get_json(
        f"/users/{q(user_id)}/drive/root",
        params={"$select": "id,parentReference"},
        mailbox=user_id,
    )
    return str(root["parentReference"]["driveId"]), str(root["id"])


def remembered(state: DeltaState | None) -> tuple[str, str] | None:
    """The drive and root ids kept by an earlier run, if any."""
    if state is None or not state.delta_link:
        return None
    try:
        kept = json.loads(state.delta_link)
        return str(kept["drive_id"]), str(kept["root_id"])
    except (ValueError, KeyError, TypeError):
        return None


async def remember(cat: CatalogPage, drive_id: str, root_id: str) -> None:
    await cat.save_delta(ROOT, delta_link=json.dumps({"drive_id": drive_id, "root_id": root_id}))


async def _load(ctx: CollectContext) -> tuple[dict[str, DeltaState], list[SkippedItem]]:
    """Delta states and earlier skips, in one transaction."""
    async with unit_of_work(ctx.runtime) as session:
        states = await catalog.delta_states(session, ctx.account.id, SERVICE)
        retries = await catalog.skipped_items(session, ctx.account.id, SERVICE)
    return {s.collection: s for s in states}, retries


async def _learn(
    ctx: CollectContext, old: tuple[str, str] | None, retries: list[SkippedItem]
) -> tuple[str, str]:
    """Ask Graph for the drive and root ids and remember them. A different drive replaces
    the old one: what the old drive held ends now (its versions stay restorable)."""
    drive_id, root_id = await user_drive(ctx.graph, ctx.account.graph_id)
    async with ctx.run.page() as cat:
        if old is not None and old[0] != drive_id:
            log.info("onedrive_drive_replaced", old=old[0], new=drive_id)
            await cat.remove_unseen([FOLDER, FILE], set())
            await cat.drop_delta(old[0])
            await cat.drop_delta(old[0] + RESYNC_SUFFIX)
        await remember(cat, drive_id, root_id)
    if old is not None and old[0] != drive_id:
        gone = [r.external_id for r in retries if r.collection == old[0]]
        if gone:
            await ctx.resolved(gone)
    return drive_id, root_id


async def _collect_drive(
    ctx: CollectContext,
    ids: tuple[str, str],
    states: dict[str, DeltaState],
    retries: list[SkippedItem],
) -> None:
    drive_id, root_id = ids
    user_id = ctx.account.graph_id
    source = DriveSource(drive_id=drive_id, root_id=root_id, top=None, throttle_key=user_id)
    collector = DriveCollector(ctx, source, FolderTree.deferred(ctx, [FOLDER]))
    await collector.retry_skipped([r.external_id for r in retries if r.collection == drive_id])
    await collector.run(states)
    if source.root_id != root_id:  # a delta page showed the root under a new id
        async with ctx.run.page() as cat:
            await remember(cat, drive_id, source.root_id)


async def collect(ctx: CollectContext) -> None:
    states, retries = await _load(ctx)
    known = remembered(states.get(ROOT))
    ids = known or await _learn(ctx, None, retries)
    try:
        await _collect_drive(ctx, ids, states, retries)
    except NotFound:
        if known is None:
            raise  # just asked Graph: nothing newer to learn
        learned = await _learn(ctx, known, retries)
        if learned[0] == known[0]:
            raise  # the same drive: not a replaced one, a real failure
        await _collect_drive(ctx, learned, await ctx.run.delta_links(), [])
