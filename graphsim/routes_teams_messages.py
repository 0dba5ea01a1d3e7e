"""Channel and chat messages on Graph v1.0: lists with paging and ``$expand=replies``, the
channel messages delta, replies, hosted contents and their ``$value``, chats and their
members, and message import (``POST`` with the original ``createdDateTime`` and ``from``)
into channels in migration mode.

Paging limits as documented: messages and replies ``$top`` at most 50; ``$expand=replies``
inlines up to 1,000 replies and links the rest with ``replies@odata.nextLink``; the delta
returns root messages of the last eight months only.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from graphsim import teams as tm
from graphsim.core import (
    Engine,
    collection,
    delta_page,
    delta_resp,
    link,
    outlook_delta_state,
    tenant_of,
    user_of,
)
from graphsim.http import GraphError, Req, Resp, selected
from graphsim.mail import parse_graph_datetime
from graphsim.routes_teams import bad, channel_of, when_of
from graphsim.state import Tenant, utcnow
from graphsim.teams_json import chat_json, member_json, message_json

MAX_TOP = 50
EXPANDED_REPLIES = 1000
APP_POST_REFUSED = (
    "Message POST is allowed in application-only context only for import purposes. Refer to "
    "https://docs.microsoft.com/microsoftteams/platform/graph-api/import-messages/"
    "import-external-messages-to-teams for more details."
)

Container = tm.Channel | tm.Chat


def chat_of(req: Req) -> tm.Chat:
    chat = tm.teamwork(tenant_of(req)).chats.get(req.params["chat"])
    if chat is None:
        raise GraphError(404, "NotFound", "Chat not found.")
    return chat


def container_of(req: Req) -> tuple[Container, str | None]:
    if "chat" in req.params:
        return chat_of(req), None
    team, channel = channel_of(req)
    return channel, team.id


def message_of(req: Req, container: Container, key: str = "message") -> tm.ChatMessage:
    message = container.messages.get(req.params[key])
    if message is None:
        raise GraphError(404, "NotFound", "Message not found.")
    if key == "message" and message.reply_to is not None and isinstance(container, tm.Channel):
        raise GraphError(404, "NotFound", "Message not found.")  # a reply is not a root
    return message


def target_of(req: Req) -> tuple[Container, str | None, tm.ChatMessage]:
    container, team_id = container_of(req)
    message = message_of(req, container)
    if "reply" in req.params:
        reply = message_of(req, container, "reply")
        if reply.reply_to != message.id:
            raise GraphError(404, "NotFound", "Reply not found.")
        message = reply
    return container, team_id, message


def render(
    req: Req, container: Container, team_id: str | None, message: tm.ChatMessage
) -> dict[str, Any]:
    return message_json(tenant_of(req), req.graph_base, container, message, team_id)


def with_replies(
    req: Req, container: Container, team_id: str | None, root: tm.ChatMessage
) -> dict[str, Any]:
    """A root message with ``replies`` inlined (newest first, at most 1,000)."""
    body = render(req, container, team_id, root)
    replies = [container.messages[r] for r in reversed(root.reply_ids)]
    body["replies"] = [render(req, container, team_id, r) for r in replies[:EXPANDED_REPLIES]]
    if len(replies) > EXPANDED_REPLIES:
        path = f"/teams/{team_id}/channels/{container.id}/messages/{root.id}/replies"
        body["replies@odata.nextLink"] = link(req, path, {"$skip": str(EXPANDED_REPLIES)})
    return body


def expand_replies(req: Req) -> bool:
    expand = {e.lower() for e in req.expand()}
    unknown = expand - {"replies"}
    if unknown:
        raise bad(f"Expanding '{sorted(unknown)[0]}' is not supported; only replies.")
    return "replies" in expand


# -- channel and chat messages ---------------------------------------------------------------


def list_messages(engine: Engine, req: Req) -> Resp:
    container, team_id = container_of(req)
    if isinstance(container, tm.Channel):
        messages = container.roots()
    else:
        messages = list(container.messages.values())
    messages = chat_query(req, messages) if isinstance(container, tm.Chat) else messages
    if not isinstance(container, tm.Chat):
        messages.sort(key=lambda m: (m.created, m.id), reverse=True)
    expand = expand_replies(req) and isinstance(container, tm.Channel)

    def to_json(m: tm.ChatMessage) -> dict[str, Any]:
        out = (
            with_replies(req, container, team_id, m)
            if expand
            else render(req, container, team_id, m)
        )
        return selected(out, req.select())

    return collection(
        req, engine, "chatMessages", messages, default=20, maximum=MAX_TOP, render=to_json
    )


def chat_query(req: Req, messages: list[tm.ChatMessage]) -> list[tm.ChatMessage]:
    """``/chats/{id}/messages``: ``$orderby`` lastModifiedDateTime or createdDateTime desc,
    and ``$filter`` on that same property with gt/lt (the combinations Graph documents)."""
    order = (req.query.get("$orderby") or "createdDateTime desc").strip()
    field = order.split()[0]
    if order not in ("lastModifiedDateTime desc", "createdDateTime desc"):
        raise bad("$orderby supports lastModifiedDateTime desc and createdDateTime desc only.")
    key: Callable[[tm.ChatMessage], datetime] = (
        (lambda m: m.modified) if field == "lastModifiedDateTime" else (lambda m: m.created)
    )
    expression = (req.query.get("$filter") or "").strip()
    for clause in filter(None, re.split(r"\s+and\s+", expression)):
        found = re.fullmatch(r"(\w+)\s+(gt|lt)\s+(\S+)", clause)
        if not found or found.group(1) != field:
            raise bad(f"$filter on chat messages must compare {field} with gt or lt.")
        try:
            bound = parse_graph_datetime(found.group(3))
        except ValueError as exc:
            raise bad(f"Invalid date '{found.group(3)}' in $filter.") from exc
        if found.group(2) == "gt":
            messages = [m for m in messages if key(m) > bound]
        else:
            messages = [m for m in messages if key(m) < bound]
    return sorted(messages, key=lambda m: (key(m), m.id), reverse=True)


def get_message(engine: Engine, req: Req) -> Resp:
    container, team_id, message = target_of(req)
    if expand_replies(req) and message.reply_to is None and isinstance(container, tm.Channel):
        body = with_replies(req, container, team_id, message)
    else:
        body = render(req, container, team_id, message)
    return Resp(200, selected(body, req.select()))


def list_replies(engine: Engine, req: Req) -> Resp:
    container, team_id = container_of(req)
    root = message_of(req, container)
    replies = [container.messages[r] for r in reversed(root.reply_ids)]
    return collection(
        req,
        engine,
        "chatMessages",
        replies,
        default=20,
        maximum=MAX_TOP if "$skip" not in req.query else EXPANDED_REPLIES,
        render=lambda m: selected(render(req, container, team_id, m), req.select()),
    )


def channel_delta(engine: Engine, req: Req) -> Resp:
    """Root messages changed since the token (all of them on a first round), of the last
    eight months; ``$filter=lastModifiedDateTime gt X`` and ``$expand=replies`` are kept in
    the links. Replies never come by themselves."""
    team, channel = channel_of(req)
    path = f"/teams/{team.id}/channels/{channel.id}/messages/delta"

    def first() -> dict[str, Any]:  # the filter and the expansion travel in the links
        query: dict[str, Any] = {}
        expression = req.query.get("$filter")
        if expression:
            found = re.fullmatch(r"\s*lastModifiedDateTime\s+gt\s+(\S+)\s*", expression)
            if not found:
                raise bad("Only lastModifiedDateTime with gt can filter the messages delta.")
            query["since"] = found.group(1)
        query["expand"] = expand_replies(req)
        return query

    state = outlook_delta_state(
        req,
        engine,
        collection=f"channelmessages:{channel.id}",
        owner=team.id,
        path=path,
        first=first,
        size=MAX_TOP,
        most=MAX_TOP,
    )
    horizon = utcnow() - tm.EIGHT_MONTHS
    since = parse_graph_datetime(state.query["since"]) if state.query.get("since") else None
    live = [
        (m.seq, m.id, m)
        for m in channel.roots()
        if m.modified >= horizon and (since is None or m.modified > since)
    ]
    page, more = delta_page(state, live, [])
    render_one = with_replies if state.query.get("expand") else render
    values = [render_one(req, channel, team.id, entry[2]) for entry in page]
    return delta_resp(req, engine, state, page, more, entity="chatMessage", values=values)


# -- hosted contents -------------------------------------------------------------------------


def list_hosted(engine: Engine, req: Req) -> Resp:
    _, _, message = target_of(req)
    values = [{"id": h, "contentBytes": None, "contentType": None} for h in message.hosted]
    return collection(req, engine, "chatMessageHostedContents", values, default=100)


def hosted_of(req: Req) -> tm.HostedContent:
    _, _, message = target_of(req)
    hosted = message.hosted.get(req.params["hosted"])
    if hosted is None or message.deleted is not None:
        raise GraphError(404, "NotFound", "Hosted content not found.")
    return hosted


def get_hosted(engine: Engine, req: Req) -> Resp:
    hosted = hosted_of(req)
    return Resp(
        200,
        {
            "id": hosted.id,
            "contentBytes": base64.b64encode(hosted.data).decode(),
            "contentType": hosted.content_type,
        },
    )


def hosted_value(engine: Engine, req: Req) -> Resp:
    hosted = hosted_of(req)
    return Resp(200, hosted.data, {"Content-Type": hosted.content_type})


# -- posting (import) ------------------------------------------------------------------------


def post_message(engine: Engine, req: Req) -> Resp:
    """An application may post only into a channel in migration mode (the import API),
    with the message's original ``createdDateTime`` and ``from``."""
    tenant = tenant_of(req)
    container, team_id = container_of(req)
    if not isinstance(container, tm.Channel) or container.migration != "inProgress":
        raise GraphError(401, "Unauthorized", APP_POST_REFUSED)
    reply_to = message_of(req, container).id if "message" in req.params else None
    body = req.json()
    message = imported_message(tenant, container, body, reply_to)
    return Resp(201, render(req, container, team_id, message))


def imported_message(
    tenant: Tenant, channel: tm.Channel, body: dict[str, Any], reply_to: str | None
) -> tm.ChatMessage:
    created = when_of(body)
    if created is None:
        raise bad("createdDateTime is required when importing a message.")
    if created > utcnow() or created < channel.created:
        raise bad("createdDateTime must lie between the channel's creation and now.")
    author = ((body.get("from") or {}).get("user") or {}) if isinstance(body, dict) else {}
    author_id = str(author.get("id") or "")
    if not author_id or author.get("userIdentityType", "aadUser") != "aadUser":
        raise bad("from.user with an id and userIdentityType aadUser is required.")
    content = body.get("body") or {}
    text = str(content.get("content") or "")
    hosted: list[tuple[str, bytes]] = []
    for index, entry in enumerate(body.get("hostedContents") or []):
        temp = str(entry.get("@microsoft.graph.temporaryId") or "")
        try:
            data = base64.b64decode(str(entry.get("contentBytes") or ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad("hostedContents[].contentBytes must be base64.") from exc
        hosted.append((str(entry.get("contentType") or "image/png"), data))
        text = text.replace(f"../hostedContents/{temp}/$value", f"{{hosted:{index}}}")
    message = tm.post_message(
        tenant,
        channel,
        author_id,
        re.sub(r'src="\{hosted:(\d+)\}"', r'src="{hosted:\1}"', text),
        reply_to=reply_to,
        when=created,
        content_type=str(content.get("contentType") or "html"),
        subject=body.get("subject"),
        mentions=list(body.get("mentions") or []),
        attachments=list(body.get("attachments") or []),
        hosted=hosted,
        importance=str(body.get("importance") or "normal"),
    )
    if author_id not in tenant.users:
        message.from_display = str(author.get("displayName") or "") or None
    return message


def post_chat_message(engine: Engine, req: Req) -> Resp:
    chat_of(req)
    raise GraphError(401, "Unauthorized", APP_POST_REFUSED)


# -- chats -----------------------------------------------------------------------------------


def list_user_chats(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    user = user_of(req)
    chats = sorted(
        (c for c in tm.teamwork(tenant).chats.values() if user.id in c.members),
        key=lambda c: (c.updated, c.id),
        reverse=True,
    )
    expand = {e.lower() for e in req.expand()}

    def to_json(chat: tm.Chat) -> dict[str, Any]:
        body = chat_json(tenant, chat)
        if "members" in expand:
            body["members"] = [
                member_json(tenant, chat.id, uid, roles) for uid, roles in chat.members.items()
            ]
        return selected(body, req.select())

    return collection(req, engine, "chats", chats, default=50, maximum=MAX_TOP, render=to_json)


def get_chat(engine: Engine, req: Req) -> Resp:
    return Resp(200, selected(chat_json(tenant_of(req), chat_of(req)), req.select()))


def list_chat_members(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    chat = chat_of(req)
    values = [member_json(tenant, chat.id, uid, roles) for uid, roles in chat.members.items()]
    return collection(req, engine, "chats('x')/members", values, default=100, maximum=999)


CHANNEL = "/teams/{team}/channels/{channel}/messages"
CHAT = "/chats/{chat}/messages"
ROUTES: list[tuple[str, str, str, Callable[[Engine, Req], Resp]]] = [
    ("GET", CHANNEL + "/delta", "get_channel_message", channel_delta),
    ("GET", CHANNEL, "get_channel_message", list_messages),
    ("POST", CHANNEL, "post_channel_message", post_message),
    ("GET", CHANNEL + "/{message}", "get_channel_message", get_message),
    ("GET", CHANNEL + "/{message}/replies", "get_channel_message", list_replies),
    ("POST", CHANNEL + "/{message}/replies", "post_channel_message", post_message),
    ("GET", CHANNEL + "/{message}/replies/{reply}", "get_channel_message", get_message),
    ("GET", "/users/{user}/chats", "other_get", list_user_chats),
    ("GET", "/chats/{chat}", "other_get", get_chat),
    ("GET", "/chats/{chat}/members", "other_get", list_chat_members),
    ("GET", CHAT, "get_chat_message", list_messages),
    ("POST", CHAT, "post_chat_message", post_chat_message),
    ("GET", CHAT + "/{message}", "get_chat_message", get_message),
]
for _prefix, _kind in (
    (CHANNEL + "/{message}", "get_channel_message"),
    (CHANNEL + "/{message}/replies/{reply}", "get_channel_message"),
    (CHAT + "/{message}", "get_chat_message"),
):
    ROUTES += [
        ("GET", _prefix + "/hostedContents", _kind, list_hosted),
        ("GET", _prefix + "/hostedContents/{hosted}", _kind, get_hosted),
        ("GET", _prefix + "/hostedContents/{hosted}/$value", _kind, hosted_value),
    ]
