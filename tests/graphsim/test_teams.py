"""Teams on graphsim: structure, messages, delta, hosted contents, chats, the import API,
throttling and the /_sim/ controls, with httpx as the client."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from graphsim import Simulator
from graphsim.teams_generator import png
from tests.graphsim.conftest import collect

TEAM_FILTER = {"$filter": "resourceProvisioningOptions/Any(x:x eq 'Team')"}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(seed=5, users=3, messages=2, files=2, sites=1, teams=2, consented=True) as s:
        # Teams allows 4 requests a second per team; only the throttling test keeps that.
        httpx.put(
            f"{s.base_url}/_sim/teams/throttling", json={"scale": 100}, verify=s.ssl_context()
        )
        yield s


@pytest.fixture(scope="module")
def control(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, verify=sim.ssl_context(), timeout=30) as c:
        yield c


def first_team(client: httpx.Client) -> dict[str, Any]:
    groups = client.get("/groups", params=TEAM_FILTER).json()["value"]
    return next(g for g in groups if g["displayName"] == "Finance")


def channel_named(client: httpx.Client, team: str, name: str) -> dict[str, Any]:
    channels = client.get(f"/teams/{team}/channels").json()["value"]
    return next(c for c in channels if c["displayName"] == name)


def test_teams_are_groups_with_settings_members_and_channels(client: httpx.Client) -> None:
    groups = client.get("/groups", params=TEAM_FILTER)
    assert groups.status_code == 200
    names = [g["displayName"] for g in groups.json()["value"]]
    assert names == ["Finance", "Projects"]
    team = first_team(client)
    assert team["resourceProvisioningOptions"] == ["Team"]
    assert team["groupTypes"] == ["Unified"]
    settings = client.get(f"/teams/{team['id']}").json()
    assert settings["messagingSettings"]["allowUserEditMessages"] is True
    assert settings["funSettings"]["giphyContentRating"] == "moderate"
    members = client.get(f"/teams/{team['id']}/members").json()["value"]
    assert [m["roles"] for m in members].count(["owner"]) == 1
    assert all(m["@odata.type"] == "#microsoft.graph.aadUserConversationMember" for m in members)
    channels = client.get(f"/teams/{team['id']}/channels").json()["value"]
    kinds = {c["displayName"]: c["membershipType"] for c in channels}
    assert kinds == {"General": "standard", "Leadership": "private", "Partners": "shared"}
    private = channel_named(client, team["id"], "Leadership")
    own = client.get(f"/teams/{team['id']}/channels/{private['id']}/members").json()["value"]
    assert len(own) == 1 and own[0]["roles"] == ["owner"]
    general = channel_named(client, team["id"], "General")
    inherited = client.get(f"/teams/{team['id']}/channels/{general['id']}/members").json()
    assert {m["userId"] for m in inherited["value"]} == {m["userId"] for m in members}
    tabs = client.get(
        f"/teams/{team['id']}/channels/{general['id']}/tabs", params={"$expand": "teamsApp"}
    ).json()["value"]
    assert tabs[0]["teamsApp"]["id"] == "com.microsoft.teamspace.tab.web"


def test_messages_page_by_50_with_replies_soft_deletes_and_hosted_images(
    client: httpx.Client,
) -> None:
    team = first_team(client)["id"]
    general = channel_named(client, team, "General")["id"]
    base = f"/teams/{team}/channels/{general}/messages"
    assert client.get(base, params={"$top": "51"}).json()["value"].__len__() <= 50
    roots, _ = collect(client, base, params={"$top": "2", "$expand": "replies"})
    generated = [m for m in roots if m["createdDateTime"] < "2026-02"]
    assert len(generated) == 6 and all(m["replyToId"] is None for m in roots)
    deleted = [m for m in roots if m["deletedDateTime"]]
    assert len(deleted) == 1 and deleted[0]["body"]["content"] == ""
    edited = [m for m in roots if m["lastEditedDateTime"]]
    assert edited and "(edited)" in edited[0]["body"]["content"]
    threaded = next(m for m in roots if m["replies"])
    replies, _ = collect(client, f"{base}/{threaded['id']}/replies")
    assert [r["id"] for r in replies] == [r["id"] for r in threaded["replies"]]
    assert all(r["replyToId"] == threaded["id"] for r in replies)
    with_image = next(m for m in roots if "hostedContents" in m["body"]["content"])
    hosted = client.get(f"{base}/{with_image['id']}/hostedContents").json()["value"]
    assert hosted and hosted[0]["contentBytes"] is None
    value = client.get(f"{base}/{with_image['id']}/hostedContents/{hosted[0]['id']}/$value")
    assert value.status_code == 200 and value.content.startswith(b"\x89PNG")
    assert value.headers["content-type"] == "image/png"
    src = with_image["body"]["content"].split('src="', 1)[1].split('"', 1)[0]
    assert src.endswith(f"/hostedContents/{hosted[0]['id']}/$value")
    mentioned = next(m for m in roots if m["mentions"])
    assert mentioned["mentions"][0]["mentioned"]["user"]["userIdentityType"] == "aadUser"
    referenced = next(m for m in roots if m["attachments"])
    assert referenced["attachments"][0]["contentType"] == "reference"
    assert ".sharepoint.com/sites/" in referenced["attachments"][0]["contentUrl"]
    reply = client.get(f"{base}/{threaded['id']}")
    assert reply.status_code == 200
    not_a_root = client.get(f"{base}/{replies[0]['id']}")
    assert not_a_root.status_code == 404


def test_delta_follows_root_changes_not_new_replies(
    sim: Simulator, client: httpx.Client, control: httpx.Client
) -> None:
    team = first_team(client)["id"]
    general = channel_named(client, team, "General")["id"]
    path = f"/teams/{team}/channels/{general}/messages/delta"
    first, link = collect(client, path)
    assert first == []  # generated threads are older than the eight months delta covers
    assert "$deltatoken=" in link
    ctl = f"/_sim/tenants/{sim.tenant().id}/teams/{team}/channels/{general}/messages"
    user = next(iter(sim.tenant().users))
    new = control.post(ctl, json={"from": user, "body": "<p>fresh news</p>"})
    assert new.status_code == 201, new.text
    roots, _ = collect(client, f"/teams/{team}/channels/{general}/messages")
    old = roots[-1]["id"]
    control.post(ctl, json={"from": user, "body": "late reply", "replyTo": old})
    changed, link = collect(client, link)
    assert [m["id"] for m in changed] == [new.json()["id"]]
    edit = control.post(f"{ctl}/{old}/edit", json={"body": "<p>rewritten</p>"})
    assert edit.status_code == 200
    control.post(f"{ctl}/{new.json()['id']}/reactions", json={"user": user, "reactionType": "like"})
    changed, link = collect(client, link)
    assert {m["id"] for m in changed} == {old, new.json()["id"]}
    liked = next(m for m in changed if m["id"] == new.json()["id"])
    assert liked["reactions"][0]["reactionType"] == "like"
    assert liked["messageHistory"][0]["actions"] == "reactionAdded"
    control.post(f"{ctl}/{old}/delete", json={})
    changed, _ = collect(client, link)
    assert [m["id"] for m in changed] == [old] and changed[0]["deletedDateTime"]


def test_delta_refuses_other_filters_and_tampered_tokens(client: httpx.Client) -> None:
    team = first_team(client)["id"]
    general = channel_named(client, team, "General")["id"]
    path = f"/teams/{team}/channels/{general}/messages/delta"
    assert client.get(path, params={"$filter": "createdDateTime gt 2020-01-01"}).status_code == 400
    assert client.get(path, params={"$deltatoken": "nope"}).status_code == 400


def test_chats_of_a_user_with_members_and_ordered_filtered_messages(
    sim: Simulator, client: httpx.Client
) -> None:
    user = next(iter(sim.tenant().users))
    chats = client.get(f"/users/{user}/chats", params={"$expand": "members"}).json()["value"]
    assert {c["chatType"] for c in chats} == {"oneOnOne", "group"}
    assert all(user in {m["userId"] for m in c["members"]} for c in chats)
    group = next(c for c in chats if c["chatType"] == "group")
    messages = client.get(f"/chats/{group['id']}/messages").json()["value"]
    stamps = [m["createdDateTime"] for m in messages]
    assert stamps == sorted(stamps, reverse=True) and all(
        m["chatId"] == group["id"] for m in messages
    )
    since = stamps[1]
    newer = client.get(
        f"/chats/{group['id']}/messages",
        params={
            "$orderby": "lastModifiedDateTime desc",
            "$filter": f"lastModifiedDateTime gt {since}",
        },
    ).json()["value"]
    assert [m["createdDateTime"] for m in newer] == stamps[:1]
    image = next(m for m in messages if "hostedContents" in m["body"]["content"])
    hosted = client.get(f"/chats/{group['id']}/messages/{image['id']}/hostedContents").json()
    assert len(hosted["value"]) == 1
    refused = client.post(f"/chats/{group['id']}/messages", json={"body": {"content": "hi"}})
    assert refused.status_code == 401


def test_import_api_restores_a_channel_with_original_authors_and_times(
    sim: Simulator, client: httpx.Client
) -> None:
    team = first_team(client)["id"]
    user = next(iter(sim.tenant().users.values()))
    refused = client.post(
        f"/teams/{team}/channels/{channel_named(client, team, 'General')['id']}/messages",
        json={"body": {"content": "hi"}},
    )
    assert refused.status_code == 401
    made = client.post(
        f"/teams/{team}/channels",
        json={
            "@microsoft.graph.channelCreationMode": "migration",
            "displayName": "Restored plans",
            "createdDateTime": "2024-01-01T00:00:00Z",
        },
    )
    assert made.status_code == 201, made.text
    channel = made.json()["id"]
    base = f"/teams/{team}/channels/{channel}/messages"
    image = base64.b64encode(png(1, 2, 3)).decode()
    root = client.post(
        base,
        json={
            "createdDateTime": "2024-03-01T10:00:00.000Z",
            "from": {
                "user": {
                    "id": user.id,
                    "displayName": user.display_name,
                    "userIdentityType": "aadUser",
                }
            },
            "body": {
                "contentType": "html",
                "content": '<p>plan</p><img src="../hostedContents/1/$value">',
            },
            "hostedContents": [
                {
                    "@microsoft.graph.temporaryId": "1",
                    "contentBytes": image,
                    "contentType": "image/png",
                }
            ],
        },
    )
    assert root.status_code == 201, root.text
    reply = client.post(
        f"{base}/{root.json()['id']}/replies",
        json={
            "createdDateTime": "2024-03-01T11:00:00.000Z",
            "from": {
                "user": {
                    "id": "0f0f0f0f-0000-4000-8000-000000000000",
                    "displayName": "Left Company",
                    "userIdentityType": "aadUser",
                }
            },
            "body": {"content": "ok"},
        },
    )
    assert reply.status_code == 201, reply.text
    no_time = client.post(base, json={"from": {"user": {"id": user.id}}, "body": {"content": "x"}})
    assert no_time.status_code == 400
    assert client.post(f"/teams/{team}/channels/{channel}/members", json={}).status_code == 400
    done = client.post(f"/teams/{team}/channels/{channel}/completeMigration")
    assert done.status_code == 204
    late = client.post(
        base,
        json={
            "createdDateTime": "2024-03-02T00:00:00Z",
            "from": {"user": {"id": user.id}},
            "body": {"content": "x"},
        },
    )
    assert late.status_code == 401
    got = client.get(base, params={"$expand": "replies"}).json()["value"][0]
    assert got["createdDateTime"] == "2024-03-01T10:00:00.000Z"
    assert got["from"]["user"]["id"] == user.id
    assert got["replies"][0]["from"]["user"]["displayName"] == "Left Company"
    hosted = client.get(f"{base}/{got['id']}/hostedContents").json()["value"]
    value = client.get(f"{base}/{got['id']}/hostedContents/{hosted[0]['id']}/$value")
    assert value.content == png(1, 2, 3)


def test_team_created_in_migration_mode_then_completed(
    client: httpx.Client, sim: Simulator
) -> None:
    owner = next(iter(sim.tenant().users))
    no_owner = client.post("/teams", json={"displayName": "Plain"})
    assert no_owner.status_code == 400
    made = client.post(
        "/teams",
        json={
            "@microsoft.graph.teamCreationMode": "migration",
            "template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
            "displayName": "Archive 2023",
            "createdDateTime": "2023-01-01T00:00:00Z",
        },
    )
    assert made.status_code == 202 and made.content == b""
    team = made.headers["content-location"].split("'")[1]
    op = client.get(
        made.headers["location"]
        .replace("/teams('", "/teams/")
        .replace("')/operations('", "/operations/")
        .rstrip("')")
    )
    assert op.json()["status"] == "succeeded" and op.json()["targetResourceId"] == team
    member = {
        "@odata.type": "#microsoft.graph.aadUserConversationMember",
        "roles": ["owner"],
        "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{owner}')",
    }
    assert client.post(f"/teams/{team}/members", json=member).status_code == 400
    assert client.post(f"/teams/{team}/completeMigration").status_code == 400  # General open
    general = client.get(f"/teams/{team}/channels").json()["value"][0]["id"]
    assert client.post(f"/teams/{team}/channels/{general}/completeMigration").status_code == 204
    assert client.post(f"/teams/{team}/completeMigration").status_code == 204
    assert client.post(f"/teams/{team}/members", json=member).status_code == 201
    patched = client.patch(f"/teams/{team}", json={"funSettings": {"allowGiphy": False}})
    assert patched.status_code == 204
    assert client.get(f"/teams/{team}").json()["funSettings"]["allowGiphy"] is False
    assert client.patch(f"/teams/{team}", json={"nope": 1}).status_code == 400


def test_deleted_channel_leaves_every_listing(
    sim: Simulator, client: httpx.Client, control: httpx.Client
) -> None:
    team = first_team(client)["id"]
    tenant = sim.tenant().id
    made = control.post(
        f"/_sim/tenants/{tenant}/teams/{team}/channels", json={"displayName": "Short lived"}
    )
    assert made.status_code == 201
    channel = made.json()["id"]
    assert client.get(f"/teams/{team}/channels/{channel}").status_code == 200
    assert client.delete(f"/teams/{team}/channels/{channel}").status_code == 204
    assert client.get(f"/teams/{team}/channels/{channel}").status_code == 404
    names = [c["displayName"] for c in client.get(f"/teams/{team}/channels").json()["value"]]
    assert "Short lived" not in names
    general = channel_named(client, team, "General")["id"]
    assert client.delete(f"/teams/{team}/channels/{general}").status_code == 400
    bad = control.post(
        f"/_sim/tenants/{tenant}/teams/{team}/channels/{general}/messages",
        json={"from": "nobody@nowhere", "body": "x"},
    )
    assert bad.status_code == 404


def test_teams_throttling_per_team_and_retry_after(sim: Simulator, client: httpx.Client) -> None:
    team = first_team(client)["id"]
    control = httpx.Client(base_url=sim.base_url, verify=sim.ssl_context())
    assert control.put("/_sim/teams/throttling", json={"scale": 1}).json()["per_team_rps"] == 4
    statuses = [client.get(f"/teams/{team}").status_code for _ in range(12)]
    assert 429 in statuses
    throttled = client.get(f"/teams/{team}")
    while throttled.status_code != 429:
        throttled = client.get(f"/teams/{team}")
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert int(throttled.headers["retry-after"]) >= 1
    limits = control.put("/_sim/teams/throttling", json={"scale": 100}).json()
    assert limits["scale"] == 100
    try:
        time.sleep(1.1)
        assert all(client.get(f"/teams/{team}").status_code == 200 for _ in range(20))
    finally:
        control.close()


def test_default_worlds_have_no_teams() -> None:
    from graphsim.generator import GenOptions, generate_world

    plain = generate_world(7, 1, GenOptions(users=2, messages=3, files=2, sites=1))
    teamed = generate_world(7, 1, GenOptions(users=2, messages=3, files=2, sites=1, teams=1))
    a, b = next(iter(plain.tenants.values())), next(iter(teamed.tenants.values()))
    assert a.teamwork is None and b.teamwork is not None and b.teamwork.teams
    assert set(a.items) == set(b.items)
    assert set(b.sites) - set(a.sites)  # the team's own site; the others are unchanged
    assert set(a.sites) <= set(b.sites)
