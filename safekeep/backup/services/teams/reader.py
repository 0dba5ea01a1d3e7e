"""Reading one team from Graph: settings, members, channels with their members and tabs,
every thread (root message and replies) with its hosted contents. ``collect`` stores what it
returns as versions.

How changes are followed, and why two mechanisms:

* ``/teams/{id}/channels/{id}/messages/delta`` gives the root messages created or changed
  since the last round (edits, soft deletes, reactions on the root). It only covers the last
  eight months, so the first run reads every thread with ``/messages?$expand=replies`` and
  then completes one delta round for its link.
* Replies, and reactions or edits on replies, do not bring their root back into the delta.
  Every run therefore re-reads the replies of the threads active within ``reread_days``
  (root created, or last reply, inside the window). A reply edited in a thread quiet for
  longer than the window is missed until that thread becomes active again; that bound is the
  price of not re-reading every thread on every run.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from safekeep.graph.client import GraphClient

Json = dict[str, Any]
PAGE = 50  # Graph's largest $top for channel messages and replies
HOSTED = re.compile(r"/hostedContents/([^/\"']+)/\$value")


@dataclass
class TeamsCursor:
    """What one run leaves for the next: a delta link per channel and each thread's last
    activity (for the re-read window)."""

    delta_links: dict[str, str] = field(default_factory=dict)
    activity: dict[str, str] = field(default_factory=dict)  # "channel/root" -> ISO time


@dataclass
class ChannelRead:
    channel: Json
    members: list[Json]
    tabs: list[Json]
    threads: dict[str, Json] = field(default_factory=dict)  # root id -> root with replies
    hosted: dict[str, bytes] = field(default_factory=dict)  # "message/hosted" -> bytes


@dataclass
class TeamRead:
    team: Json
    members: list[Json]
    channels: list[ChannelRead]
    requests: int = 0


async def read_team(
    graph: GraphClient,
    team_id: str,
    cursor: TeamsCursor,
    *,
    reread_days: int = 30,
    now: datetime | None = None,
    known_hosted: set[str] | None = None,
) -> TeamRead:
    """The team's structure in full (it is small) and the threads that changed since
    ``cursor`` (every thread when the cursor is empty); ``cursor`` is updated in place."""
    now = now or datetime.now(UTC)
    team = await graph.get_json(f"/teams/{team_id}")
    members = await _all(graph, f"/teams/{team_id}/members")
    channels: list[ChannelRead] = []
    for channel in await _all(graph, f"/teams/{team_id}/channels"):
        base = f"/teams/{team_id}/channels/{channel['id']}"
        read = ChannelRead(
            channel=channel,
            members=await _all(graph, f"{base}/members"),
            tabs=await _all(graph, f"{base}/tabs", {"$expand": "teamsApp"}),
        )
        if channel["id"] in cursor.delta_links:
            await _incremental(graph, base, read, cursor, now - timedelta(days=reread_days))
        else:
            await _full(graph, base, read, cursor)
        await _hosted(graph, base, read, known_hosted or set())
        channels.append(read)
    return TeamRead(team=team, members=members, channels=channels)


async def _all(graph: GraphClient, path: str, params: dict[str, str] | None = None) -> list[Json]:
    values: list[Json] = []
    async for page in graph.paginate(path, params=params):
        values.extend(page)
    return values


async def _full(graph: GraphClient, base: str, read: ChannelRead, cursor: TeamsCursor) -> None:
    params = {"$top": str(PAGE), "$expand": "replies"}
    async for page in graph.paginate(f"{base}/messages", params=params):
        for root in page:
            await _complete_replies(graph, base, root)
            _keep(read, cursor, root)
    link = None
    async for delta in graph.delta(f"{base}/messages/delta", params={"$expand": "replies"}):
        link = delta.delta_link or link
    if link:
        cursor.delta_links[read.channel["id"]] = link


async def _incremental(
    graph: GraphClient, base: str, read: ChannelRead, cursor: TeamsCursor, horizon: datetime
) -> None:
    channel_id = read.channel["id"]
    link = cursor.delta_links[channel_id]
    async for delta in graph.delta(link):
        for root in delta.items:
            await _complete_replies(graph, base, root)
            _keep(read, cursor, root)
        link = delta.delta_link or link
    cursor.delta_links[channel_id] = link
    for key, last in list(cursor.activity.items()):
        owner, _, root_id = key.partition("/")
        if owner != channel_id or root_id in read.threads or _parse(last) < horizon:
            continue
        root = await graph.get_json(f"{base}/messages/{root_id}")
        root["replies"] = await _all(graph, f"{base}/messages/{root_id}/replies", {"$top": "50"})
        _keep(read, cursor, root, only_if_changed=True)


def _keep(
    read: ChannelRead, cursor: TeamsCursor, root: Json, only_if_changed: bool = False
) -> None:
    key = f"{read.channel['id']}/{root['id']}"
    stamps = [root.get("lastModifiedDateTime") or root["createdDateTime"]]
    stamps += [r.get("lastModifiedDateTime") or r["createdDateTime"] for r in root["replies"]]
    latest = max(stamps)
    if only_if_changed and cursor.activity.get(key) == latest:
        return
    cursor.activity[key] = latest
    read.threads[root["id"]] = root


async def _complete_replies(graph: GraphClient, base: str, root: Json) -> None:
    """``$expand=replies`` stops at 1,000; the rest come from the replies' own link."""
    replies = list(root.get("replies") or [])
    link = root.pop("replies@odata.nextLink", None)
    while link:
        page = await graph.get_json(link)
        replies.extend(page.get("value") or [])
        link = page.get("@odata.nextLink")
    root["replies"] = replies


async def _hosted(graph: GraphClient, base: str, read: ChannelRead, known: set[str]) -> None:
    """Inline images of the threads read, each fetched once (``known`` are stored already)."""
    for root in read.threads.values():
        for message in [root, *root["replies"]]:
            body = (message.get("body") or {}).get("content") or ""
            for hosted_id in HOSTED.findall(body):
                key = f"{message['id']}/{hosted_id}"
                if key in known or key in read.hosted:
                    continue
                path = f"{base}/messages/{root['id']}"
                if message["id"] != root["id"]:
                    path += f"/replies/{message['id']}"
                answer = await graph.get_json(f"{path}/hostedContents/{hosted_id}")
                read.hosted[key] = base64.b64decode(answer.get("contentBytes") or "")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
