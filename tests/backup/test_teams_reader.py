"""The Teams collector against graphsim: a full read of a team with private and shared
channels, then incremental reads whose requests follow the changes (delta for roots, the
re-read window for replies), and the HTML/JSON transcript of what was read."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from graphsim import Simulator
from graphsim.teams import teamwork
from graphsim.teams_generator import png
from safekeep.backup.services.teams.reader import TeamsCursor, read_team
from safekeep.backup.services.teams.transcript import render_html, render_json
from tests.graph import conftest as graph_fixtures
from tests.graph.conftest import ClientFactory, recorder_of

make_client = graph_fixtures.make_client  # the GraphClient factory fixture, shared


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(seed=9, users=3, messages=1, files=1, sites=1, teams=1, consented=True) as s:
        httpx.put(f"{s.base_url}/_sim/teams/throttling", json={"scale": 50}, verify=s.ssl_context())
        yield s


def control(sim: Simulator) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, verify=sim.ssl_context(), timeout=30)


async def test_full_then_incremental_reads_follow_the_changes(
    sim: Simulator, make_client: ClientFactory
) -> None:
    team = next(iter(teamwork(sim.tenant()).teams.values()))
    graph = make_client(sim)
    cursor = TeamsCursor()
    full = await read_team(graph, team.id, cursor)
    kinds = {c.channel["displayName"]: c.channel["membershipType"] for c in full.channels}
    assert kinds == {"General": "standard", "Leadership": "private", "Partners": "shared"}
    general = next(c for c in full.channels if c.channel["displayName"] == "General")
    assert len(general.threads) == 6 and general.tabs and general.members
    assert sum(len(t["replies"]) for t in general.threads.values()) == sum(
        len(m.reply_ids) for m in team.channels[general.channel["id"]].roots()
    )
    assert general.hosted and all(v.startswith(b"\x89PNG") for v in general.hosted.values())
    assert set(cursor.delta_links) == {c.channel["id"] for c in full.channels}

    # Nothing changed: no thread is read again, no message list is paged.
    recorder = recorder_of(graph)
    recorder.requests.clear()
    quiet = await read_team(graph, team.id, cursor, now=datetime(2026, 1, 5, tzinfo=UTC))
    assert all(not c.threads for c in quiet.channels)
    assert not [r for r in recorder.requests if r.url.path.endswith("/messages")]

    # A new root, an edit of an old root, and a late reply in a recent thread.
    tenant = sim.tenant().id
    user = next(iter(sim.tenant().users))
    base = f"/_sim/tenants/{tenant}/teams/{team.id}/channels/{general.channel['id']}/messages"
    alive = [t for t in general.threads.values() if not t["deletedDateTime"]]
    old_root = min(alive, key=lambda t: t["createdDateTime"])
    with control(sim) as c:
        image = {"from": user, "body": "<p>new {image:0}</p>", "images": [_b64(png(9, 9, 9))]}
        fresh = c.post(base, json=image).json()
        two_days_ago = _iso(datetime.now(UTC) - timedelta(days=2))
        recent = c.post(
            base, json={"from": user, "body": "<p>recent</p>", "createdDateTime": two_days_ago}
        ).json()
        edit = c.post(f"{base}/{old_root['id']}/edit", json={"body": "<p>rewritten</p>"})
        assert edit.status_code == 200
    first = await read_team(graph, team.id, cursor)
    general = next(c for c in first.channels if c.channel["displayName"] == "General")
    assert fresh["id"] in general.threads and old_root["id"] in general.threads
    assert "rewritten" in general.threads[old_root["id"]]["body"]["content"]
    assert general.hosted  # the new inline image
    # The reply to a thread active inside the window is found by the re-read.
    with control(sim) as c:
        c.post(base, json={"from": user, "body": "<p>late reply</p>", "replyTo": recent["id"]})
    second = await read_team(graph, team.id, cursor)
    general = next(c for c in second.channels if c.channel["displayName"] == "General")
    assert set(general.threads) == {recent["id"]}
    replies = general.threads[recent["id"]]["replies"]
    assert [r["body"]["content"] for r in replies] == ["<p>late reply</p>"]


async def test_transcript_is_readable_html_with_inline_images(
    sim: Simulator, make_client: ClientFactory
) -> None:
    team = next(iter(teamwork(sim.tenant()).teams.values()))
    read = await read_team(make_client(sim), team.id, TeamsCursor())
    general = next(c for c in read.channels if c.channel["displayName"] == "General")
    threads = list(general.threads.values())
    page = render_html("Finance / General", threads, general.hosted)
    assert page.startswith("<!doctype html>") and "Finance / General" in page
    assert "data:image/png;base64," in page and "/hostedContents/" not in page
    assert "This message was deleted." in page
    for thread in threads:
        author = thread["from"]["user"]["displayName"]
        assert author in page
    assert "<script" not in render_html("x", [_message("<script>alert(1)</script><p>ok</p>")], {})
    assert json.loads(render_json(threads))[0]["createdDateTime"] == min(
        t["createdDateTime"] for t in threads
    )


def _message(body: str) -> dict[str, object]:
    return {
        "id": "1",
        "createdDateTime": "2026-01-01T00:00:00.000Z",
        "from": {"user": {"displayName": "A"}},
        "body": {"content": body},
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
