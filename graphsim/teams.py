"""Microsoft Teams in the simulated world: teams, channels, chats and their messages.

The shapes follow Graph v1.0 (``team``, ``channel``, ``chat``, ``chatMessage``,
``aadUserConversationMember``, ``teamsTab``, ``chatMessageHostedContent``); the handlers that
serve them are in ``routes_teams``. What this module models, and why it matters to a backup:

* A team is a Microsoft 365 group (``resourceProvisioningOptions: ["Team"]``) with a
  SharePoint site for its files; messages that share a file reference it there
  (``contentType: "reference"``) rather than carry it.
* Channels are ``standard`` (the team's members), ``private`` or ``shared`` (their own
  member lists). Deleting a channel removes it from every listing; Graph v1.0 has no way to
  bring it back, so a restore re-creates it (in migration mode, with the import API).
* Messages are soft-deleted: a deleted message keeps its id and place in the thread but loses
  its body, attachments and mentions and gains ``deletedDateTime``. An edit sets
  ``lastEditedDateTime``; a reaction changes ``lastModifiedDateTime`` and ``messageHistory``.
* Every change takes the tenant's next sequence number. The channel messages delta returns
  root messages whose own number moved: a new reply, or a reaction or edit on a reply, does not
  bring its root back (the conservative reading of Graph's "without the replies"), so a client
  that wants replies of old threads must read them again.
* Migration mode (the import API): a team created with ``teamCreationMode: migration`` or a
  channel with ``channelCreationMode: migration`` accepts messages with their original
  ``createdDateTime`` and ``from`` until ``completeMigration``; outside it, an application
  cannot post messages at all.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from graphsim import ids
from graphsim.state import Tenant, User, iso, utcnow

EIGHT_MONTHS = timedelta(days=243)  # chatMessage: delta only returns the last eight months
MESSAGE_TYPES = ("message", "systemEventMessage")


@dataclass
class HostedContent:
    id: str
    content_type: str
    data: bytes


@dataclass
class ChatMessage:
    id: str
    container: str  # channel or chat id
    reply_to: str | None
    created: datetime
    modified: datetime
    seq: int
    from_user: str | None  # user id
    body: str
    from_display: str | None = None  # an imported author no longer in the directory
    content_type: str = "html"
    subject: str | None = None
    importance: str = "normal"
    edited: datetime | None = None
    deleted: datetime | None = None
    mentions: list[dict[str, Any]] = field(default_factory=list)
    reactions: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    hosted: dict[str, HostedContent] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    message_type: str = "message"
    reply_ids: list[str] = field(default_factory=list)  # replies, oldest first


@dataclass
class Channel:
    id: str
    team_id: str
    display_name: str
    description: str
    membership_type: str  # "standard" | "private" | "shared"
    created: datetime
    seq: int
    members: dict[str, list[str]] = field(default_factory=dict)  # private/shared: user -> roles
    tabs: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, ChatMessage] = field(default_factory=dict)  # roots and replies
    migration: str | None = None  # "inProgress" | "completed" | None
    is_general: bool = False
    deleted: bool = False

    def roots(self) -> list[ChatMessage]:
        return [m for m in self.messages.values() if m.reply_to is None]


@dataclass
class Team:
    id: str
    display_name: str
    description: str
    visibility: str  # "private" | "public"
    created: datetime
    seq: int
    mail_nickname: str
    settings: dict[str, dict[str, Any]]
    members: dict[str, list[str]] = field(default_factory=dict)  # user id -> roles
    channels: dict[str, Channel] = field(default_factory=dict)
    site_id: str | None = None
    archived: bool = False
    migration: str | None = None
    deleted: bool = False


@dataclass
class Chat:
    id: str
    chat_type: str  # "oneOnOne" | "group" | "meeting"
    topic: str | None
    created: datetime
    updated: datetime
    seq: int
    members: dict[str, list[str]] = field(default_factory=dict)
    messages: dict[str, ChatMessage] = field(default_factory=dict)


@dataclass
class Teamwork:
    """The Teams side of one tenant, hung on ``Tenant.teamwork``."""

    teams: dict[str, Team] = field(default_factory=dict)
    chats: dict[str, Chat] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def listed(self) -> list[Team]:
        """The teams /teams and /groups list: the live ones, by display name."""
        return sorted(
            (t for t in self.teams.values() if not t.deleted), key=lambda t: t.display_name
        )


def teamwork(tenant: Tenant) -> Teamwork:
    if tenant.teamwork is None:
        tenant.teamwork = Teamwork()
    found: Teamwork = tenant.teamwork
    return found


def default_settings() -> dict[str, dict[str, Any]]:
    return {
        "memberSettings": {
            "allowCreateUpdateChannels": True,
            "allowCreatePrivateChannels": True,
            "allowDeleteChannels": True,
            "allowAddRemoveApps": True,
            "allowCreateUpdateRemoveTabs": True,
            "allowCreateUpdateRemoveConnectors": True,
        },
        "guestSettings": {"allowCreateUpdateChannels": False, "allowDeleteChannels": False},
        "messagingSettings": {
            "allowUserEditMessages": True,
            "allowUserDeleteMessages": True,
            "allowOwnerDeleteMessages": True,
            "allowTeamMentions": True,
            "allowChannelMentions": True,
        },
        "funSettings": {
            "allowGiphy": True,
            "giphyContentRating": "moderate",
            "allowStickersAndMemes": True,
            "allowCustomMemes": True,
        },
    }


SETTING_GROUPS = tuple(default_settings())


# -- ids ----------------------------------------------------------------------------------------


def thread_id(tenant: Tenant, *parts: object, suffix: str = "thread.tacv2") -> str:
    return f"19:{ids.digest(tenant.seed, tenant.id, *parts, size=16).hex()}@{suffix}"


def member_id(tenant: Tenant, container: str, user_id: str) -> str:
    """Graph's conversationMember ids are base64 of the tenant, thread and user."""
    return base64.b64encode(f"1#{tenant.id}#{container}#{user_id}".encode()).decode()


def message_id(existing: dict[str, ChatMessage], when: datetime) -> str:
    """Teams message ids are the creation time in epoch milliseconds, unique per thread."""
    stamp = int(when.timestamp() * 1000)
    while str(stamp) in existing:
        stamp += 1
    return str(stamp)


# -- creation ---------------------------------------------------------------------------------


def new_team(
    tenant: Tenant,
    display_name: str,
    *,
    owners: list[str],
    members: list[str] = (),  # type: ignore[assignment]
    description: str = "",
    visibility: str = "private",
    when: datetime | None = None,
    key: str | None = None,
    migration: bool = False,
) -> Team:
    from graphsim import ops

    when = when or utcnow()
    team_key = key or tenant.new_name("team")
    nickname = re.sub(r"[^A-Za-z0-9]", "", display_name) or "team"
    team = Team(
        id=ids.guid(tenant.seed, tenant.id, "team", team_key),
        display_name=display_name,
        description=description,
        visibility=visibility,
        created=when,
        seq=tenant.next_seq(),
        mail_nickname=nickname,
        settings=default_settings(),
        migration="inProgress" if migration else None,
    )
    for user_id in owners:
        team.members[user_id] = ["owner"]
    for user_id in members:
        team.members.setdefault(user_id, [])
    site = ops.new_site(
        tenant,
        nickname,
        display_name,
        f"/sites/{nickname}-{team.id[:8]}",
        when,
        description=description,
    )
    team.site_id = site.id
    teamwork(tenant).teams[team.id] = team
    general = new_channel(tenant, team, "General", when=when, key=f"{team_key}:general")
    general.is_general = True
    if migration:
        general.migration = "inProgress"
    return team


def new_channel(
    tenant: Tenant,
    team: Team,
    display_name: str,
    *,
    description: str = "",
    membership_type: str = "standard",
    members: dict[str, list[str]] | None = None,
    when: datetime | None = None,
    key: str | None = None,
    migration: bool = False,
) -> Channel:
    channel = Channel(
        id=thread_id(tenant, "channel", key or tenant.new_name("channel")),
        team_id=team.id,
        display_name=display_name,
        description=description,
        membership_type=membership_type,
        created=when or utcnow(),
        seq=tenant.next_seq(),
        members=dict(members or {}),
        migration="inProgress" if migration else None,
    )
    team.channels[channel.id] = channel
    return channel


def new_chat(
    tenant: Tenant,
    chat_type: str,
    member_ids: list[str],
    *,
    topic: str | None = None,
    when: datetime | None = None,
    key: str | None = None,
) -> Chat:
    when = when or utcnow()
    if chat_type == "oneOnOne":
        first, second = sorted(member_ids)[:2]
        chat_id = f"19:{first}_{second}@unq.gbl.spaces"
    else:
        chat_id = thread_id(tenant, "chat", key or tenant.new_name("chat"), suffix="thread.v2")
    chat = Chat(
        id=chat_id,
        chat_type=chat_type,
        topic=topic,
        created=when,
        updated=when,
        seq=tenant.next_seq(),
        members={u: ["owner"] for u in member_ids},
    )
    teamwork(tenant).chats[chat.id] = chat
    return chat


def post_message(
    tenant: Tenant,
    container: Channel | Chat,
    author: str | None,
    body: str,
    *,
    reply_to: str | None = None,
    when: datetime | None = None,
    content_type: str = "html",
    subject: str | None = None,
    mentions: list[dict[str, Any]] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    hosted: list[tuple[str, bytes]] | None = None,
    importance: str = "normal",
) -> ChatMessage:
    """Add a message (a root, or a reply when ``reply_to`` names one). ``hosted`` images
    are stored as hosted contents; ``{hosted:N}`` in the body becomes the N-th one's URL
    path, which the rendering turns into a full Graph URL."""
    when = when or utcnow()
    message = ChatMessage(
        id=message_id(container.messages, when),
        container=container.id,
        reply_to=reply_to,
        created=when,
        modified=when,
        seq=tenant.next_seq(),
        from_user=author,
        body=body,
        content_type=content_type,
        subject=subject,
        importance=importance,
        mentions=list(mentions or []),
        attachments=list(attachments or []),
    )
    for index, (content_type_of, data) in enumerate(hosted or []):
        hosted_id = hosted_content_id(message.id, index)
        message.hosted[hosted_id] = HostedContent(hosted_id, content_type_of, data)
        message.body = message.body.replace(f"{{hosted:{index}}}", hosted_id)
    container.messages[message.id] = message
    if reply_to is not None:
        container.messages[reply_to].reply_ids.append(message.id)
    if isinstance(container, Chat):
        container.updated = max(container.updated, when)
    return message


def hosted_content_id(message: str, index: int) -> str:
    raw = f"id=x_0-wus-d{index + 1}-{ids.digest(message, index, size=12).hex()},type=1,url="
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def mention(tenant: Tenant, index: int, user: User) -> dict[str, Any]:
    return {
        "id": index,
        "mentionText": user.display_name,
        "mentioned": {
            "application": None,
            "device": None,
            "conversation": None,
            "tag": None,
            "user": identity(tenant, user.id, user.display_name),
        },
    }


def mention_markup(index: int, user: User) -> str:
    return f'<at id="{index}">{html.escape(user.display_name)}</at>'


def file_reference(web_url: str, name: str, key: str) -> dict[str, Any]:
    """A message attachment pointing at a SharePoint file (the file stays in the library)."""
    return {
        "id": ids.guid("teams-attachment", key),
        "contentType": "reference",
        "contentUrl": web_url,
        "content": None,
        "name": name,
        "thumbnailUrl": None,
        "teamsAppId": None,
    }


# -- changes ----------------------------------------------------------------------------------


def touch(tenant: Tenant, message: ChatMessage, when: datetime | None = None) -> None:
    message.seq = tenant.next_seq()
    message.modified = max(when or utcnow(), message.modified)


def edit_message(
    tenant: Tenant, message: ChatMessage, body: str, when: datetime | None = None
) -> None:
    if message.deleted is not None:
        raise ValueError("a deleted message cannot be edited")
    message.body = body
    touch(tenant, message, when)
    message.edited = message.modified


def delete_message(tenant: Tenant, message: ChatMessage, when: datetime | None = None) -> None:
    """Teams' soft delete: the message stays, empty, with ``deletedDateTime``."""
    if message.deleted is not None:
        return
    touch(tenant, message, when)
    message.deleted = message.modified


def undo_delete(tenant: Tenant, message: ChatMessage) -> None:
    if message.deleted is None:
        return
    message.deleted = None
    touch(tenant, message)


def react(
    tenant: Tenant,
    message: ChatMessage,
    user: User,
    reaction: str,
    when: datetime | None = None,
    *,
    remove: bool = False,
) -> None:
    when = when or utcnow()
    mine = [
        r
        for r in message.reactions
        if r["reactionType"] == reaction and r["user"]["user"]["id"] == user.id
    ]
    if remove:
        if not mine:
            return
        message.reactions = [r for r in message.reactions if r not in mine]
    elif mine:
        return
    else:
        message.reactions.append(
            {
                "reactionType": reaction,
                "displayName": None,
                "reactionContentUrl": None,
                "createdDateTime": iso_ms(when),
                "user": {
                    "application": None,
                    "device": None,
                    "user": identity(tenant, user.id, None),
                },
            }
        )
    touch(tenant, message, when)
    message.history.append(
        {
            "modifiedDateTime": iso_ms(message.modified),
            "actions": "reactionRemoved" if remove else "reactionAdded",
            "reaction": {
                "reactionType": reaction,
                "displayName": None,
                "reactionContentUrl": None,
                "createdDateTime": iso_ms(when),
                "user": {"application": None, "device": None, "user": identity(tenant, user.id)},
            },
        }
    )


def delete_channel(tenant: Tenant, team: Team, channel: Channel) -> None:
    if channel.is_general:
        raise ValueError("the General channel cannot be deleted")
    channel.deleted = True
    channel.seq = tenant.next_seq()
    del team.channels[channel.id]


# -- rendering --------------------------------------------------------------------------------


def iso_ms(when: datetime) -> str:
    return iso(when).replace("Z", f".{when.microsecond // 1000:03d}Z")


def identity(tenant: Tenant, user_id: str, display: str | None = None) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.teamworkUserIdentity",
        "id": user_id,
        "displayName": display,
        "userIdentityType": "aadUser",
        "tenantId": tenant.id,
    }


def find_message(container: Channel | Chat, message_id_: str) -> ChatMessage | None:
    return container.messages.get(message_id_)
