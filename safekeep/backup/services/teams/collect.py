"""Backing up a user's Teams into the catalog: the teams it is the first owner of (settings,
members, channels with their members and tabs, every thread with its replies and inline
images) and its chats.

The catalog tree browse walks: team -> channel -> root message -> replies; chat -> message.
A message's external id is ``{channel or chat id}/{message id}`` (Teams message ids are
times in milliseconds, unique only within their thread). Edits, soft deletes and reactions
change a message's ``lastModifiedDateTime``, so each becomes a new version.

Where the delta state lives (``delta_state`` rows of this account and service): one per
channel (the messages delta link), one per team (``activity:{team}``: the last activity of
threads inside the re-read window, as JSON) and one per chat (``chat:{id}``: the newest
``lastModifiedDateTime`` stored, for the next run's ``$filter``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from safekeep.backup.catalog import CatalogPage, ItemRecord
from safekeep.backup.collect import CollectContext
from safekeep.backup.pipeline import gather_limited
from safekeep.backup.services.teams.reader import (
    HOSTED,
    ChannelRead,
    TeamsCursor,
    read_team,
)
from safekeep.backup.services.teams.search import message_fields, plain_text
from safekeep.graph.transport import json_bytes
from safekeep.tenants.catalog import repository as catalog

Json = dict[str, Any]
REREAD_DAYS = 30


async def collect(ctx: CollectContext) -> None:
    user_id = ctx.account.graph_id
    owned: set[str] = set()
    async for page in ctx.graph.paginate(f"/users/{user_id}/joinedTeams"):
        for team in page:
            members: list[Json] = []
            async for chunk in ctx.graph.paginate(f"/teams/{team['id']}/members"):
                members.extend(chunk)
            owners = sorted(str(m["userId"]) for m in members if "owner" in (m.get("roles") or []))
            if owners and owners[0] == user_id:
                owned.add(str(team["id"]))
                await _team(ctx, str(team["id"]))
    await _gone_teams(ctx, owned)
    await _chats(ctx)


async def _gone_teams(ctx: CollectContext, owned: set[str]) -> None:
    """A team this user no longer first-owns (deleted, or handed to another owner whose
    account takes it from now on) ends here with everything in it."""
    async with ctx.run.page() as page:
        current = await catalog.open_external_ids(
            page.session, ctx.run.account_id, ctx.run.service, {"team"}
        )
        for external_id in current:
            if external_id not in owned:
                await page.remove_subtree(external_id)
                await page.remove(external_id)


async def _team(ctx: CollectContext, team_id: str) -> None:
    states = await ctx.run.delta_links()
    cursor = TeamsCursor(
        delta_links={
            k: v.delta_link for k, v in states.items() if v.delta_link and k.startswith("19:")
        },
        activity=json.loads(states[f"activity:{team_id}"].delta_link or "{}")
        if f"activity:{team_id}" in states
        else {},
    )
    read = await read_team(ctx.graph, team_id, cursor, reread_days=REREAD_DAYS)
    team_doc = {"team": read.team, "members": read.members}
    # Each page's blobs are stored side by side before its transaction opens: the
    # transaction never waits on the blob store, and the blobs do not wait on each other.
    folders = await gather_limited(
        [
            _folder(ctx, team_id, "team", read.team["displayName"], None, team_doc),
            *(
                _folder(
                    ctx,
                    channel.channel["id"],
                    "channel",
                    channel.channel["displayName"],
                    team_id,
                    {
                        "channel": channel.channel,
                        "members": channel.members,
                        "tabs": channel.tabs,
                        "teamId": team_id,
                    },
                )
                for channel in read.channels
            ),
        ]
    )
    async with ctx.run.page() as page:
        await page.record_many(folders)
        seen = {channel.channel["id"] for channel in read.channels}
        await _gone_channels(ctx, page, team_id, seen)
    for channel in read.channels:
        path = f"/{read.team['displayName']}/{channel.channel['displayName']}"
        threads = await _threads(ctx, channel, path)
        async with ctx.run.page() as page:
            await page.record_many(threads)
            link = cursor.delta_links.get(channel.channel["id"])
            if link:
                await page.save_delta(channel.channel["id"], delta_link=link)
    horizon = (datetime.now(UTC) - timedelta(days=REREAD_DAYS)).isoformat()
    recent = {k: v for k, v in cursor.activity.items() if v.replace("Z", "+00:00") >= horizon}
    async with ctx.run.page() as page:
        await page.save_delta(f"activity:{team_id}", delta_link=json.dumps(recent))


async def _gone_channels(
    ctx: CollectContext, page: CatalogPage, team_id: str, seen: set[str]
) -> None:
    """A channel no longer listed was deleted: end it and everything in it."""
    below = await catalog.open_versions_under(
        page.session, ctx.run.account_id, ctx.run.service, team_id
    )
    for external_id, version in below:
        if version.kind == "channel" and external_id not in seen:
            await page.remove_subtree(external_id)
            await page.remove(external_id)


async def _folder(
    ctx: CollectContext, external_id: str, kind: str, name: str, parent: str | None, doc: Json
) -> ItemRecord:
    body = json_bytes(doc, sort_keys=True)
    return ItemRecord(
        external_id=external_id,
        kind=kind,
        name=name,
        parent_external_id=parent,
        size=len(body),
        change_key=hashlib.sha256(body).hexdigest(),
        document=await ctx.repo.put_bytes(body),
    )


async def _threads(ctx: CollectContext, channel: ChannelRead, path: str) -> list[ItemRecord]:
    """A channel's threads and their replies as records (their blobs stored), in order."""
    container = channel.channel["id"]
    pending = []
    for root in channel.threads.values():
        replies = root.get("replies") or []
        message = {k: v for k, v in root.items() if k not in ("replies", "replies@odata.context")}
        pending.append(
            message_record(ctx, container, message, container, path, channel.hosted, kind="thread")
        )
        pending.extend(
            message_record(ctx, container, reply, f"{container}/{root['id']}", path, channel.hosted)
            for reply in replies
        )
    return await gather_limited(pending)


async def message_record(
    ctx: CollectContext,
    container: str,
    message: Json,
    parent: str,
    path: str,
    hosted: dict[str, bytes],
    *,
    kind: str = "message",
) -> ItemRecord:
    """A message as a catalog item: ``thread`` for a channel's root message (a folder whose
    children are its replies), ``message`` for a reply or a chat message."""
    refs = []
    stored: dict[str, Json] = {}
    for hosted_id in HOSTED.findall((message.get("body") or {}).get("content") or ""):
        data = hosted.get(f"{message['id']}/{hosted_id}")
        if data is not None:
            ref = await ctx.repo.put_bytes(data)
            refs.append(ref)
            stored[hosted_id] = ref.to_json()
    doc = {"message": message, "container": container, "path": path, "hostedContents": stored}
    body = json_bytes(doc, sort_keys=True)
    text = plain_text(message)
    return ItemRecord(
        external_id=f"{container}/{message['id']}",
        kind=kind,
        name=(message.get("subject") or text[:80] or "(no text)"),
        parent_external_id=parent,
        size=len(body),
        modified_at=_when(message.get("lastModifiedDateTime") or message["createdDateTime"]),
        change_key=f"{message.get('lastModifiedDateTime')}|{message.get('deletedDateTime')}|{message.get('etag')}",
        document=await ctx.repo.put_bytes(body),
        refs=refs,
        meta={"created": message["createdDateTime"]},
        search=message_fields(doc),
    )


async def _chats(ctx: CollectContext) -> None:
    states = await ctx.run.delta_links()
    chats: list[Json] = []
    async for page in ctx.graph.paginate(
        f"/users/{ctx.account.graph_id}/chats", params={"$expand": "members"}
    ):
        chats.extend(page)
    for chat in chats:
        key = f"chat:{chat['id']}"
        since = states[key].delta_link if key in states else None
        params = {"$top": "50", "$orderby": "lastModifiedDateTime desc"}
        if since:
            params["$filter"] = f"lastModifiedDateTime gt {since}"
        messages: list[Json] = []
        async for page in ctx.graph.paginate(f"/chats/{chat['id']}/messages", params=params):
            messages.extend(page)
        hosted = await _chat_hosted(ctx, chat["id"], messages)
        name = chat.get("topic") or ", ".join(
            sorted(str(m.get("displayName")) for m in chat.get("members") or [])
        )
        records = await gather_limited(
            [
                _folder(ctx, chat["id"], "chat", name, None, {"chat": chat}),
                *(
                    message_record(ctx, chat["id"], message, chat["id"], f"/Chats/{name}", hosted)
                    for message in messages
                ),
            ]
        )
        async with ctx.run.page() as cat:
            await cat.record_many(records)
            newest = max((m["lastModifiedDateTime"] for m in messages), default=since)
            if newest:
                await cat.save_delta(key, delta_link=newest)


async def _chat_hosted(ctx: CollectContext, chat_id: str, messages: list[Json]) -> dict[str, bytes]:
    import base64

    found: dict[str, bytes] = {}
    for message in messages:
        for hosted_id in HOSTED.findall((message.get("body") or {}).get("content") or ""):
            answer = await ctx.graph.get_json(
                f"/chats/{chat_id}/messages/{message['id']}/hostedContents/{hosted_id}"
            )
            found[f"{message['id']}/{hosted_id}"] = base64.b64decode(
                answer.get("contentBytes") or ""
            )
    return found


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
