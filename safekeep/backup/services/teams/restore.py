"""Restoring Teams through Graph's import API.

A channel that no longer exists in its team is re-created in migration mode
(``channelCreationMode: migration``, with its original ``createdDateTime``); its threads are
imported oldest first with their original ``createdDateTime`` and ``from`` (roots, then each
root's replies under the new root), inline images as ``hostedContents``; then
``completeMigration``, and the members of a private or shared channel are added back. A team
that is gone is re-created the same way (``teamCreationMode: migration``), its General
channel taking General's messages, then its members and settings. A channel that still
exists is left alone under ``original`` (Graph imports only into a channel in migration
mode); ``new`` restores a copy beside it. Chats are export-only: Graph cannot write them
back, and each chat message is reported as skipped with that reason.

On request (``channels="transcript"``) a channel's conversations come back instead as one HTML
transcript (the export's, images inline) uploaded to the channel's files folder, beside it
rather than into it: nothing in the channel changes. A channel that is gone has no files
folder, so its transcript goes to the team's General channel; a team that is gone takes an
import restore first.
"""

from __future__ import annotations

import base64
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from safekeep.backup.services.base import (
    RestoreContext,
    Selection,
    read_document,
)
from safekeep.backup.services.teams.transcript import hosted_images, render_html, threads
from safekeep.graph.errors import AuthError, GraphError
from safekeep.storage.repository import ContentRef, TenantRepository
from safekeep.tenants.models import ItemVersion
from safekeep.text import storable_text

Json = dict[str, Any]


async def grouped(
    repo: TenantRepository, selection: Selection
) -> dict[str, list[tuple[ItemVersion, Json]]]:
    """The selected messages by channel or chat, with their stored documents. A thread's
    root message is a folder (its replies are its children), so the roots come from the
    selection's folders: all of them for a whole service, those of a chosen channel or
    thread otherwise."""
    found: dict[str, list[tuple[ItemVersion, Json]]] = defaultdict(list)
    for external_id, folder in selection.folders.items():
        if folder.kind != "thread":
            continue
        chosen = selection.roots or set()
        if selection.whole or external_id in chosen or folder.parent_external_id in chosen:
            doc = await read_document(repo, folder)
            if doc and "message" in doc:
                found[str(doc["container"])].append((folder, doc))
    async for version in selection.items():
        doc = await read_document(repo, version)
        if doc and "message" in doc:
            found[str(doc["container"])].append((version, doc))
    return found


@dataclass
class TeamTarget:
    """Where a team's channels go: the team itself, or a new team made in migration mode
    because the original is gone (then its General channel takes General's messages)."""

    id: str
    new: bool = False
    general: str | None = None
    # members of private and shared channels, added once the team has its members again
    pending: list[tuple[str, Json]] = field(default_factory=list)


async def restore(ctx: RestoreContext, selection: Selection) -> None:
    by_container = await grouped(ctx.repo, selection)
    by_team: dict[str, list[tuple[Json, list[tuple[ItemVersion, Json]]]]] = defaultdict(list)
    for container, messages in by_container.items():
        folder = selection.folders.get(container)
        folder_doc = await read_document(ctx.repo, folder) if folder else None
        if not folder_doc or "channel" not in folder_doc:
            for version, _ in messages:
                await ctx.report.skipped(version, reason="chats cannot be written back to Teams")
            continue
        by_team[str(folder_doc["teamId"])].append((folder_doc, messages))
    if ctx.channels == "transcript":
        for team_id, channels in by_team.items():
            await _upload_transcripts(ctx, team_id, channels)
        return
    for team_id, channels in by_team.items():
        team_folder = selection.folders.get(team_id)
        team_doc = await read_document(ctx.repo, team_folder) if team_folder else None
        target = await _team_target(ctx, team_id, team_doc)
        for folder_doc, messages in channels:
            await _restore_channel(ctx, target, folder_doc, messages)
        if target.new:
            await _finish_team(ctx, target, team_doc or {})


async def _upload_transcripts(
    ctx: RestoreContext,
    team_id: str,
    channels: list[tuple[Json, list[tuple[ItemVersion, Json]]]],
) -> None:
    """Each channel's transcript into its files folder (General's when the channel is gone);
    every message in it counts as restored, with the file as its target."""
    try:
        live = await _live_channels(ctx, team_id)
    except GraphError as exc:
        if exc.status != 404:
            raise
        for _, messages in channels:
            for version, _ in messages:
                await ctx.report.skipped(
                    version, reason="the team is gone: restore it by import, not as a transcript"
                )
        return
    general = next((i for i, c in live.items() if c.get("displayName") == "General"), None)
    for folder_doc, messages in channels:
        channel = folder_doc["channel"]
        where = str(channel["id"]) if str(channel["id"]) in live else general
        if where is None:
            for version, _ in messages:
                await ctx.report.skipped(version, reason="neither the channel nor General exists")
            continue
        try:
            uploaded = await _upload_transcript(ctx, team_id, where, channel, messages)
        except AuthError:
            raise
        except GraphError as exc:
            # one channel's folder not there (its site not provisioned yet) fails only it
            for version, _ in messages:
                await ctx.report.failed(version, code=exc.reason, detail=str(exc)[:300])
            continue
        for version, _ in messages:
            await ctx.report.restored(version, target_id=str(uploaded.get("id")))


async def _upload_transcript(
    ctx: RestoreContext,
    team_id: str,
    where: str,
    channel: Json,
    messages: list[tuple[ItemVersion, Json]],
) -> Json:
    """One transcript file beside the others in ``where``'s files folder (renamed, never
    replacing an earlier one); the uploaded driveItem."""
    folder = await ctx.graph.get_json(f"/teams/{team_id}/channels/{where}/filesFolder")
    title = f"{channel['displayName']} - {ctx.new_folder_name}"
    page = storable_text(
        render_html(
            title, threads([doc for _, doc in messages]), await hosted_images(ctx.repo, messages)
        )
    ).encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield page

    return await ctx.graph.upload_drive_file(
        str(folder["parentReference"]["driveId"]),
        str(folder["id"]),
        _file_name(title) + ".html",
        len(page),
        chunks(),
        conflict="rename",
    )


def _file_name(title: str) -> str:
    """A name OneDrive and SharePoint accept: none of their reserved characters."""
    return re.sub(r'[\\/:*?"<>|#%]', "-", title).strip(" .")[:200] or "transcript"


async def _team_target(ctx: RestoreContext, team_id: str, team_doc: Json | None) -> TeamTarget:
    try:
        await ctx.graph.get_json(f"/teams/{team_id}")
        return TeamTarget(team_id)
    except GraphError as exc:
        if exc.status != 404 or not team_doc:
            raise
    team = team_doc["team"]
    made = await ctx.graph.request(
        "POST",
        "/teams",
        json={
            "@microsoft.graph.teamCreationMode": "migration",
            "template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
            "displayName": team["displayName"],
            "description": team.get("description") or "",
            "visibility": team.get("visibility") or "private",
            "createdDateTime": team["createdDateTime"],
        },
        expected=(202,),
    )
    new_id = made.headers.get("content-location", "").split("'")[1]
    channels = await _live_channels(ctx, new_id)
    return TeamTarget(new_id, new=True, general=next(iter(channels), None))


async def _finish_team(ctx: RestoreContext, target: TeamTarget, team_doc: Json) -> None:
    """Close migration on General and the team, then members and settings come back."""
    if target.general:
        await ctx.graph.request(
            "POST",
            f"/teams/{target.id}/channels/{target.general}/completeMigration",
            expected=(204, 400),
        )
    await ctx.graph.request("POST", f"/teams/{target.id}/completeMigration", expected=(204,))
    for member in team_doc.get("members") or []:
        await _add_member(ctx, f"/teams/{target.id}/members", member)
    for url, member in target.pending:
        await _add_member(ctx, url, member)
    settings = {k: v for k, v in (team_doc.get("team") or {}).items() if k.endswith("Settings")}
    settings.pop("discoverySettings", None)
    if settings:
        await ctx.graph.request("PATCH", f"/teams/{target.id}", json=settings, expected=(204,))


async def _restore_channel(
    ctx: RestoreContext,
    target: TeamTarget,
    folder_doc: Json,
    messages: list[tuple[ItemVersion, Json]],
) -> None:
    channel = folder_doc["channel"]
    if target.new and channel["displayName"] == "General" and target.general:
        await _import_threads(ctx, target.id, target.general, messages)
        return
    live = await _live_channels(ctx, target.id)
    if channel["id"] in live and ctx.folder_mode == "original":
        for version, _ in messages:
            await ctx.report.existing(version, target_id=f"{channel['id']}")
        return
    name = channel["displayName"]
    taken = {c["displayName"].lower() for c in live.values()}
    if name.lower() in taken or ctx.folder_mode == "new":
        name = f"{name} ({ctx.new_folder_name or 'restored'})"[:50].replace(":", "-")
    made = await ctx.graph.request_json(
        "POST",
        f"/teams/{target.id}/channels",
        json={
            "@microsoft.graph.channelCreationMode": "migration",
            "displayName": name,
            "description": channel.get("description") or "",
            "membershipType": channel.get("membershipType") or "standard",
            "createdDateTime": channel["createdDateTime"],
        },
        expected=(201,),
    )
    assert made is not None
    new_channel = str(made["id"])
    await _import_threads(ctx, target.id, new_channel, messages)
    await ctx.graph.request(
        "POST", f"/teams/{target.id}/channels/{new_channel}/completeMigration", expected=(204,)
    )
    if channel.get("membershipType") in ("private", "shared"):
        url = f"/teams/{target.id}/channels/{new_channel}/members"
        members = [(url, m) for m in folder_doc.get("members") or []]
        if target.new:
            target.pending.extend(members)
        else:
            for url, member in members:
                await _add_member(ctx, url, member)


async def _live_channels(ctx: RestoreContext, team_id: str) -> dict[str, Json]:
    found: dict[str, Json] = {}
    async for page in ctx.graph.paginate(f"/teams/{team_id}/channels"):
        for channel in page:
            found[str(channel["id"])] = channel
    return found


async def _import_threads(
    ctx: RestoreContext, team_id: str, channel: str, messages: list[tuple[ItemVersion, Json]]
) -> None:
    base = f"/teams/{team_id}/channels/{channel}/messages"
    ordered = sorted(messages, key=lambda m: m[1]["message"]["createdDateTime"])
    new_roots: dict[str, str] = {}
    for version, doc in [m for m in ordered if not m[1]["message"].get("replyToId")]:
        posted = await _post(ctx, base, doc)
        new_roots[str(doc["message"]["id"])] = str(posted["id"])
        await ctx.report.restored(version, target_id=str(posted["id"]))
    for version, doc in [m for m in ordered if m[1]["message"].get("replyToId")]:
        root = new_roots.get(str(doc["message"]["replyToId"]))
        if root is None:
            await ctx.report.skipped(version, reason="its thread's first message is not restored")
            continue
        posted = await _post(ctx, f"{base}/{root}/replies", doc)
        await ctx.report.restored(version, target_id=str(posted["id"]))


async def _post(ctx: RestoreContext, url: str, doc: Json) -> Json:
    message = doc["message"]
    content = str((message.get("body") or {}).get("content") or "")
    hosted = []
    for index, (hosted_id, ref) in enumerate((doc.get("hostedContents") or {}).items(), 1):
        data = await ctx.repo.read_bytes(ContentRef.from_json(ref))
        hosted.append(
            {
                "@microsoft.graph.temporaryId": str(index),
                "contentBytes": base64.b64encode(data).decode(),
                "contentType": "image/png",
            }
        )
        content = _replace_src(content, hosted_id, f"../hostedContents/{index}/$value")
    if message.get("deletedDateTime"):
        content = "<p><em>This message was deleted.</em></p>"
    user = (message.get("from") or {}).get("user") or {}
    body: Json = {
        "createdDateTime": message["createdDateTime"],
        "from": {
            "user": {
                "id": user.get("id"),
                "displayName": user.get("displayName"),
                "userIdentityType": "aadUser",
            }
        },
        "body": {
            "contentType": (message.get("body") or {}).get("contentType") or "html",
            "content": content,
        },
        "mentions": message.get("mentions") or [],
        "attachments": message.get("attachments") or [],
    }
    if message.get("subject"):
        body["subject"] = message["subject"]
    if hosted:
        body["hostedContents"] = hosted
    posted = await ctx.graph.request_json("POST", url, json=body, expected=(201,))
    assert posted is not None
    return posted


def _replace_src(content: str, hosted_id: str, new: str) -> str:
    return re.sub(
        rf'src="[^"]*/hostedContents/{re.escape(hosted_id)}/\$value"', f'src="{new}"', content
    )


async def _add_member(ctx: RestoreContext, url: str, member: Json) -> None:
    try:
        await ctx.graph.request_json(
            "POST",
            url,
            json={
                "@odata.type": "#microsoft.graph.aadUserConversationMember",
                "roles": member.get("roles") or [],
                "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{member['userId']}')",
            },
            expected=(201,),
        )
    except GraphError as exc:
        await ctx.report.observed(
            code="member_not_added", name=str(member.get("displayName")), detail=str(exc)[:300]
        )
