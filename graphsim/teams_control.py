"""``/_sim/`` controls for Teams: add teams, channels, messages, replies and chats, edit,
delete and react to messages, delete channels, and tune Teams throttling.

Each action is a plain function over a tenant (callable from Python under the world lock)
and an endpoint:

* ``POST /_sim/tenants/{t}/teams``: ``displayName``, ``owners``, ``members``,
  ``description``, ``visibility``
* ``POST /_sim/tenants/{t}/teams/{team}/channels``: ``displayName``, ``membershipType``,
  ``owners``, ``members``; ``DELETE .../channels/{channel}`` deletes one, ``DELETE
  /_sim/tenants/{t}/teams/{team}`` a whole team
* ``POST /_sim/tenants/{t}/teams/{team}/channels/{channel}/messages``: a message (below)
* ``POST /_sim/tenants/{t}/chats``: ``chatType``, ``members``, ``topic``;
  ``POST /_sim/tenants/{t}/chats/{chat}/messages``: a message
* ``POST .../messages/{id}/edit`` (``body``), ``.../delete``, ``.../undelete``,
  ``.../reactions`` (``user``, ``reactionType``, ``remove``)
* ``GET``/``PUT /_sim/teams/throttling``: ``enabled``, ``scale``, ``per_team_rps``,
  ``retry_after_s``

A message: ``from`` (user id or UPN), ``body`` (HTML; ``{image:N}`` marks where the N-th of
``images`` goes), ``replyTo``, ``createdDateTime``, ``mentions`` (users; ``{mention:N}`` in
the body marks the N-th), ``images`` (base64 PNGs), ``files`` (``[{"path", "name"}]`` in the
team site's library, attached by reference).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from graphsim import teams as tm
from graphsim.control import ControlError, need_tenant, need_user
from graphsim.core import engine_of
from graphsim.mail import parse_graph_datetime
from graphsim.state import Tenant


def add_team(tenant: Tenant, spec: dict[str, Any]) -> tm.Team:
    owners = [need_user(tenant, str(u)).id for u in spec.get("owners") or []]
    if not owners:
        raise ControlError(400, "a team needs at least one owner")
    members = [need_user(tenant, str(u)).id for u in spec.get("members") or []]
    return tm.new_team(
        tenant,
        str(spec["displayName"]),
        owners=owners,
        members=[m for m in members if m not in owners],
        description=str(spec.get("description") or ""),
        visibility=str(spec.get("visibility") or "private"),
        when=_when(spec.get("createdDateTime")),
    )


def add_channel(tenant: Tenant, team: tm.Team, spec: dict[str, Any]) -> tm.Channel:
    kind = str(spec.get("membershipType") or "standard")
    if kind not in ("standard", "private", "shared"):
        raise ControlError(400, f"unknown membershipType {kind!r}")
    members: dict[str, list[str]] = {}
    if kind != "standard":
        for u in spec.get("owners") or []:
            members[need_user(tenant, str(u)).id] = ["owner"]
        for u in spec.get("members") or []:
            members.setdefault(need_user(tenant, str(u)).id, [])
    return tm.new_channel(
        tenant,
        team,
        str(spec["displayName"]),
        description=str(spec.get("description") or ""),
        membership_type=kind,
        members=members,
        when=_when(spec.get("createdDateTime")),
    )


def add_message(
    tenant: Tenant, container: tm.Channel | tm.Chat, spec: dict[str, Any], team: tm.Team | None
) -> tm.ChatMessage:
    author = need_user(tenant, str(spec["from"]))
    body = str(spec.get("body") or "")
    mentions = []
    for index, key in enumerate(spec.get("mentions") or []):
        user = need_user(tenant, str(key))
        mentions.append(tm.mention(tenant, index, user))
        body = body.replace(f"{{mention:{index}}}", tm.mention_markup(index, user))
    images = [base64.b64decode(str(b)) for b in spec.get("images") or []]
    for index in range(len(images)):
        body = body.replace(
            f"{{image:{index}}}", f'<img src="{{hosted:{index}}}" alt="image" itemtype="image">'
        )
    attachments = [_file_reference(tenant, team, f) for f in spec.get("files") or []]
    for ref in attachments:
        body += f'<attachment id="{ref["id"]}"></attachment>'
    reply_to = spec.get("replyTo")
    if reply_to is not None and str(reply_to) not in container.messages:
        raise ControlError(404, f"no message {reply_to!r} to reply to")
    return tm.post_message(
        tenant,
        container,
        author.id,
        body,
        reply_to=str(reply_to) if reply_to is not None else None,
        when=_when(spec.get("createdDateTime")),
        subject=spec.get("subject"),
        mentions=mentions,
        attachments=attachments,
        hosted=[("image/png", data) for data in images],
    )


def _file_reference(tenant: Tenant, team: tm.Team | None, spec: dict[str, Any]) -> dict[str, Any]:
    site = tenant.sites.get(team.site_id or "") if team else None
    base = site.web_url if site else f"https://{tenant.domain.split('.')[0]}.sharepoint.com"
    path = str(spec.get("path") or spec["name"]).lstrip("/")
    url = f"{base}/Shared Documents/{path}"
    return tm.file_reference(url, str(spec["name"]), url)


def add_chat(tenant: Tenant, spec: dict[str, Any]) -> tm.Chat:
    members = [need_user(tenant, str(u)).id for u in spec.get("members") or []]
    chat_type = str(spec.get("chatType") or ("oneOnOne" if len(members) == 2 else "group"))
    if chat_type not in ("oneOnOne", "group", "meeting") or len(members) < 2:
        raise ControlError(400, "a chat needs a chatType and at least two members")
    if chat_type == "oneOnOne" and len(members) != 2:
        raise ControlError(400, "a oneOnOne chat has exactly two members")
    return tm.new_chat(
        tenant, chat_type, members, topic=spec.get("topic"), when=_when(spec.get("createdDateTime"))
    )


def change_message(
    tenant: Tenant, message: tm.ChatMessage, verb: str, spec: dict[str, Any]
) -> None:
    when = _when(spec.get("when"))
    if verb == "edit":
        try:
            tm.edit_message(tenant, message, str(spec["body"]), when)
        except ValueError as exc:
            raise ControlError(400, str(exc)) from exc
    elif verb == "delete":
        tm.delete_message(tenant, message, when)
    elif verb == "undelete":
        tm.undo_delete(tenant, message)
    elif verb == "reactions":
        user = need_user(tenant, str(spec["user"]))
        reaction = str(spec.get("reactionType") or "like")
        tm.react(tenant, message, user, reaction, when, remove=bool(spec.get("remove")))
    else:
        raise ControlError(404, f"unknown message action {verb!r}")


def _when(value: Any) -> datetime | None:
    return parse_graph_datetime(str(value)) if value else None


def find_team(tenant: Tenant, key: str) -> tm.Team:
    teams = tm.teamwork(tenant).teams
    team = teams.get(key) or next(
        (t for t in teams.values() if t.display_name.lower() == key.lower()), None
    )
    if team is None or team.deleted:
        raise ControlError(404, f"no team {key!r}")
    return team


def find_channel(team: tm.Team, key: str) -> tm.Channel:
    channel = team.channels.get(key) or next(
        (c for c in team.channels.values() if c.display_name.lower() == key.lower()), None
    )
    if channel is None:
        raise ControlError(404, f"no channel {key!r}")
    return channel


# -- HTTP ------------------------------------------------------------------------------------


async def _handle(request: Request) -> Response:
    engine = engine_of(request)
    try:
        raw = await request.body()
        spec = json.loads(raw) if raw else {}
        if not isinstance(spec, dict):
            raise ControlError(400, "body must be a JSON object")
        path = request.url.path.split("/", 4)[4]  # teams/... or chats/...
        with engine.world.lock:
            tenant = need_tenant(engine.world, request.path_params["tenant"])
            return act(tenant, request.method, path.strip("/").split("/"), spec)
    except ControlError as err:
        return JSONResponse({"error": err.message}, err.status)
    except (ValueError, KeyError, TypeError) as err:
        return JSONResponse({"error": f"bad request: {err}"}, 400)


async def _limits(request: Request) -> Response:
    from graphsim.routes_teams import throttler

    current = throttler(engine_of(request)).limits
    if request.method != "GET":
        try:
            current.update(json.loads(await request.body() or b"{}"))
        except (ValueError, TypeError) as err:
            return JSONResponse({"error": str(err)}, 400)
    return JSONResponse(current.as_dict())


# Registered before the simulator's own ``/_sim/{action}`` route; they match only Teams
# paths, so every other control action still reaches it.
_WRITE = ["POST", "DELETE"]
ROUTES: list[BaseRoute] = [
    Route("/_sim/teams/throttling", _limits, methods=["GET", "PUT", "PATCH", "POST"]),
    Route("/_sim/tenants/{tenant}/teams", _handle, methods=_WRITE),
    Route("/_sim/tenants/{tenant}/teams/{rest:path}", _handle, methods=_WRITE),
    Route("/_sim/tenants/{tenant}/chats", _handle, methods=_WRITE),
    Route("/_sim/tenants/{tenant}/chats/{rest:path}", _handle, methods=_WRITE),
]


def act(tenant: Tenant, method: str, parts: list[str], spec: dict[str, Any]) -> Response:
    """``parts``: ``teams[/{team}[/channels[/{channel}[/messages[/{id}/{verb}]]]]]`` or
    ``chats[/{chat}/messages[/{id}/{verb}]]``."""
    if parts == ["teams"] and method == "POST":
        team = add_team(tenant, spec)
        general = next(iter(team.channels))
        return JSONResponse({"id": team.id, "generalChannelId": general}, 201)
    if parts == ["chats"] and method == "POST":
        return JSONResponse({"id": add_chat(tenant, spec).id}, 201)
    if parts[0] == "chats" and len(parts) >= 3 and parts[2] == "messages":
        chat = tm.teamwork(tenant).chats.get(parts[1])
        if chat is None:
            raise ControlError(404, f"no chat {parts[1]!r}")
        return _message_action(tenant, chat, None, method, parts[3:], spec)
    if parts[0] == "teams" and len(parts) == 2 and method == "DELETE":
        find_team(tenant, parts[1]).deleted = True  # the group is deleted with its team
        return JSONResponse({"ok": True})
    if parts[0] != "teams" or len(parts) < 3 or parts[2] != "channels":
        raise ControlError(404, f"unknown Teams control {'/'.join(parts)!r}")
    team = find_team(tenant, parts[1])
    if len(parts) == 3 and method == "POST":
        return JSONResponse({"id": add_channel(tenant, team, spec).id}, 201)
    channel = find_channel(team, parts[3])
    if len(parts) == 4 and method == "DELETE":
        try:
            tm.delete_channel(tenant, team, channel)
        except ValueError as exc:
            raise ControlError(400, str(exc)) from exc
        return JSONResponse({"ok": True})
    if len(parts) >= 5 and parts[4] == "messages":
        return _message_action(tenant, channel, team, method, parts[5:], spec)
    raise ControlError(404, f"unknown Teams control {'/'.join(parts)!r}")


def _message_action(
    tenant: Tenant,
    container: tm.Channel | tm.Chat,
    team: tm.Team | None,
    method: str,
    rest: list[str],
    spec: dict[str, Any],
) -> Response:
    if not rest and method == "POST":
        return JSONResponse({"id": add_message(tenant, container, spec, team).id}, 201)
    if len(rest) == 2 and method == "POST":
        message = container.messages.get(rest[0])
        if message is None:
            raise ControlError(404, f"no message {rest[0]!r}")
        change_message(tenant, message, rest[1], spec)
        return JSONResponse({"ok": True})
    raise ControlError(404, f"unknown message control {'/'.join(rest)!r}")
