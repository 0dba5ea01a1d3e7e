"""Teams through msgraph-sdk: groups filtered to teams, the team and its channels, messages
with replies paged by the SDK's PageIterator, the messages delta, hosted contents, chats and
the import API's request builders (migration-mode channel, import, completeMigration)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder
from msgraph.generated.models.channel import Channel
from msgraph.generated.models.channel_membership_type import ChannelMembershipType
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_collection_response import (
    ChatMessageCollectionResponse,
)
from msgraph.generated.models.chat_message_from_identity_set import ChatMessageFromIdentitySet
from msgraph.generated.models.identity import Identity
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.teams.item.channels.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph_core.tasks.page_iterator import PageIterator

from graphsim import Simulator
from graphsim.teams import teamwork


@pytest.fixture(scope="module")
def team(sim: Simulator) -> Any:
    """A team added through the controls (the conformance world has none), with threads."""
    with httpx.Client(base_url=sim.base_url, verify=sim.ssl_context()) as control:
        control.put("/_sim/teams/throttling", json={"scale": 100})
        users = list(sim.tenant().users)
        tenant = sim.tenant().id
        made = control.post(
            f"/_sim/tenants/{tenant}/teams", json={"displayName": "Ops", "owners": users[:1]}
        ).json()
        base = f"/_sim/tenants/{tenant}/teams/{made['id']}/channels/{made['generalChannelId']}"
        for n in range(5):
            root = control.post(
                f"{base}/messages",
                json={
                    "from": users[n % len(users)],
                    "body": f"<p>thread {n}</p>{{image:0}}",
                    "images": ["iVBORw0KGgo="] if n == 0 else [],
                },
            ).json()
            for r in range(n):
                control.post(
                    f"{base}/messages",
                    json={"from": users[0], "body": f"re {r}", "replyTo": root["id"]},
                )
        control.post(f"/_sim/tenants/{tenant}/chats", json={"members": users[:2]})
    return teamwork(sim.tenant()).teams[made["id"]]


async def test_groups_filtered_to_teams_and_the_team(graph: GraphServiceClient, team: Any) -> None:
    query = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
        filter="resourceProvisioningOptions/Any(x:x eq 'Team')", select=["id", "displayName"]
    )
    groups = await graph.groups.get(RequestConfiguration(query_parameters=query))
    assert groups is not None and groups.value
    assert team.id in {g.id for g in groups.value}
    got = await graph.teams.by_team_id(team.id).get()
    assert got is not None and got.display_name == "Ops"
    assert got.messaging_settings is not None and got.messaging_settings.allow_user_edit_messages
    channels = await graph.teams.by_team_id(team.id).channels.get()
    assert channels is not None and channels.value
    assert channels.value[0].membership_type == ChannelMembershipType.Standard
    members = await graph.teams.by_team_id(team.id).members.get()
    assert members is not None and members.value and members.value[0].roles == ["owner"]


async def test_messages_and_replies_with_the_page_iterator(
    graph: GraphServiceClient, team: Any
) -> None:
    channel = next(iter(team.channels))
    builder = graph.teams.by_team_id(team.id).channels.by_channel_id(channel).messages
    query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
        top=2, expand=["replies"]
    )
    first = await builder.get(RequestConfiguration(query_parameters=query))
    assert isinstance(first, ChatMessageCollectionResponse) and first.odata_next_link
    seen: list[ChatMessage] = []

    def keep(message: ChatMessage) -> bool:
        seen.append(message)
        return True

    await PageIterator(first, graph.request_adapter).iterate(keep)
    assert len(seen) == 5
    assert sorted(len(m.replies or []) for m in seen) == [0, 1, 2, 3, 4]
    with_image = next(m for m in seen if m.body and "hostedContents" in (m.body.content or ""))
    hosted = await builder.by_chat_message_id(str(with_image.id)).hosted_contents.get()
    assert hosted is not None and hosted.value and hosted.value[0].id
    value = await (
        builder.by_chat_message_id(str(with_image.id))
        .hosted_contents.by_chat_message_hosted_content_id(str(hosted.value[0].id))
        .content.get()
    )
    assert value and value.startswith(b"\x89PNG")
    delta = await builder.delta.get()
    assert delta is not None and delta.odata_delta_link and len(delta.value or []) == 5


async def test_chats_of_a_user(graph: GraphServiceClient, sim: Simulator, team: Any) -> None:
    user = next(iter(sim.tenant().users))
    chats = await graph.users.by_user_id(user).chats.get()
    assert chats is not None and chats.value
    members = await graph.chats.by_chat_id(str(chats.value[0].id)).members.get()
    assert members is not None and user in {
        m.additional_data.get("userId") or getattr(m, "user_id", None) for m in members.value or []
    }


async def test_import_into_a_migration_channel(
    graph: GraphServiceClient, sim: Simulator, team: Any
) -> None:
    user = next(iter(sim.tenant().users.values()))
    channels = graph.teams.by_team_id(team.id).channels
    made = await channels.post(
        Channel(
            display_name="Imported",
            additional_data={
                "@microsoft.graph.channelCreationMode": "migration",
                "createdDateTime": "2024-01-01T00:00:00Z",
            },
        )
    )
    assert made is not None and made.id
    when = dt.datetime(2024, 5, 1, 8, 30, tzinfo=dt.UTC)
    posted = await channels.by_channel_id(made.id).messages.post(
        ChatMessage(
            created_date_time=when,
            from_=ChatMessageFromIdentitySet(
                user=Identity(
                    id=user.id,
                    display_name=user.display_name,
                    additional_data={"userIdentityType": "aadUser"},
                )
            ),
            body=ItemBody(content="<p>from the archive</p>"),
        )
    )
    assert posted is not None and posted.created_date_time == when
    assert posted.from_ is not None and posted.from_.user is not None
    assert posted.from_.user.id == user.id
    await channels.by_channel_id(made.id).complete_migration.post()
    assert teamwork(sim.tenant()).teams[team.id].channels[made.id].migration == "completed"
