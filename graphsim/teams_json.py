"""Graph v1.0 JSON for the Teams objects of ``graphsim.teams``."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from graphsim.state import Tenant, iso
from graphsim.teams import Channel, Chat, ChatMessage, Team, identity, iso_ms, member_id

TEAMS_WEB = "https://teams.microsoft.com/l"


def group_json(tenant: Tenant, team: Team) -> dict[str, Any]:
    return {
        "id": team.id,
        "createdDateTime": iso(team.created),
        "description": team.description,
        "displayName": team.display_name,
        "groupTypes": ["Unified"],
        "mail": f"{team.mail_nickname}@{tenant.domain}",
        "mailEnabled": True,
        "mailNickname": team.mail_nickname,
        "securityEnabled": False,
        "visibility": team.visibility.capitalize(),
        "resourceProvisioningOptions": ["Team"],
        "resourceBehaviorOptions": [],
        "deletedDateTime": None,
    }


def team_json(tenant: Tenant, team: Team) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": team.id,
        "createdDateTime": iso(team.created),
        "displayName": team.display_name,
        "description": team.description,
        "internalId": f"19:{team.id.replace('-', '')}@thread.tacv2",
        "classification": None,
        "specialization": "none",
        "visibility": team.visibility,
        "webUrl": f"{TEAMS_WEB}/team/{quote(team.id)}/conversations?groupId={team.id}"
        f"&tenantId={tenant.id}",
        "isArchived": team.archived,
        "tenantId": tenant.id,
        "isMembershipLimitedToOwners": False,
        "discoverySettings": {"showInTeamsSearchAndSuggestions": team.visibility == "public"},
        "summary": {
            "ownersCount": sum(1 for r in team.members.values() if "owner" in r),
            "membersCount": sum(1 for r in team.members.values() if "owner" not in r),
            "guestsCount": 0,
        },
    }
    for group, values in team.settings.items():
        body[group] = dict(values)
    return body


def channel_json(tenant: Tenant, team: Team, channel: Channel) -> dict[str, Any]:
    return {
        "id": channel.id,
        "createdDateTime": iso(channel.created),
        "displayName": channel.display_name,
        "description": channel.description or None,
        "isFavoriteByDefault": None,
        "email": "",
        "tenantId": tenant.id,
        "webUrl": f"{TEAMS_WEB}/channel/{quote(channel.id)}/"
        f"{quote(channel.display_name)}?groupId={team.id}&tenantId={tenant.id}",
        "membershipType": channel.membership_type,
        "isArchived": False,
    }


def member_json(
    tenant: Tenant, container: str, user_id: str, roles: list[str], since: str | None = None
) -> dict[str, Any]:
    user = tenant.users.get(user_id)
    return {
        "@odata.type": "#microsoft.graph.aadUserConversationMember",
        "id": member_id(tenant, container, user_id),
        "roles": list(roles),
        "displayName": user.display_name if user else None,
        "visibleHistoryStartDateTime": since or "0001-01-01T00:00:00Z",
        "userId": user_id,
        "email": user.upn if user else None,
        "tenantId": tenant.id,
    }


def tab_json(tab: dict[str, Any], expand_app: bool) -> dict[str, Any]:
    body = {k: v for k, v in tab.items() if k != "teamsApp"}
    if expand_app:
        body["teamsApp"] = dict(tab["teamsApp"])
    return body


def chat_json(tenant: Tenant, chat: Chat) -> dict[str, Any]:
    return {
        "id": chat.id,
        "topic": chat.topic,
        "createdDateTime": iso_ms(chat.created),
        "lastUpdatedDateTime": iso_ms(chat.updated),
        "chatType": chat.chat_type,
        "webUrl": f"{TEAMS_WEB}/chat/{quote(chat.id)}/0?tenantId={tenant.id}",
        "tenantId": tenant.id,
        "onlineMeetingInfo": None,
        "isHiddenForAllMembers": False,
        "viewpoint": None,
    }


def message_json(
    tenant: Tenant,
    graph_base: str,
    container: Channel | Chat,
    message: ChatMessage,
    team_id: str | None,
) -> dict[str, Any]:
    author = tenant.users.get(message.from_user) if message.from_user else None
    gone = message.deleted is not None
    body = "" if gone else _with_hosted_urls(graph_base, container, message, team_id)
    channel_identity = (
        {"teamId": team_id, "channelId": container.id} if isinstance(container, Channel) else None
    )
    root = message.reply_to or message.id
    return {
        "id": message.id,
        "replyToId": message.reply_to,
        "etag": str(int(message.modified.timestamp() * 1000)),
        "messageType": message.message_type,
        "createdDateTime": iso_ms(message.created),
        "lastModifiedDateTime": iso_ms(message.modified),
        "lastEditedDateTime": iso_ms(message.edited) if message.edited else None,
        "deletedDateTime": iso_ms(message.deleted) if message.deleted else None,
        "subject": message.subject,
        "summary": None,
        "chatId": container.id if isinstance(container, Chat) else None,
        "importance": message.importance,
        "locale": "en-us",
        "webUrl": f"{TEAMS_WEB}/message/{quote(container.id)}/{message.id}?tenantId={tenant.id}"
        f"&parentMessageId={root}",
        "policyViolation": None,
        "eventDetail": None,
        "from": None
        if message.from_user is None
        else {
            "application": None,
            "device": None,
            "user": identity(
                tenant,
                message.from_user,
                author.display_name if author else message.from_display or "Unknown User",
            ),
        },
        "body": {"contentType": message.content_type, "content": body},
        "channelIdentity": channel_identity,
        "attachments": [] if gone else [dict(a) for a in message.attachments],
        "mentions": [] if gone else [dict(m) for m in message.mentions],
        "reactions": [dict(r) for r in message.reactions],
        "messageHistory": [dict(h) for h in message.history],
    }


def message_path(container: Channel | Chat, message: ChatMessage, team_id: str | None) -> str:
    if isinstance(container, Channel):
        base = f"/teams/{team_id}/channels/{container.id}/messages"
    else:
        base = f"/chats/{container.id}/messages"
    if message.reply_to:
        return f"{base}/{message.reply_to}/replies/{message.id}"
    return f"{base}/{message.id}"


def _with_hosted_urls(
    graph_base: str, container: Channel | Chat, message: ChatMessage, team_id: str | None
) -> str:
    """Inline images point at the message's hostedContents ``$value`` on this surface."""
    body = message.body
    if not message.hosted:
        return body
    prefix = graph_base + message_path(container, message, team_id) + "/hostedContents/"
    for hosted_id in message.hosted:
        body = body.replace(f'src="{hosted_id}"', f'src="{prefix}{hosted_id}/$value"')
    return body
