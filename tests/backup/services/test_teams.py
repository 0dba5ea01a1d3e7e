"""Teams through the engine, against graphsim: a tenant with teams (private and shared
channels, threads with replies, edits, deletes, inline images, chats) backed up in full and
incrementally, found by search, a deleted channel restored with its messages under their
original authors and times, and exported as a readable transcript."""

from __future__ import annotations

import html
import io
import re
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphsim import Simulator
from graphsim.teams import Channel, Team, iso_ms, teamwork
from safekeep import registry
from safekeep.api.app import create_app
from safekeep.backup import browse
from safekeep.backup.catalog import SnapshotRun
from safekeep.backup.jobs.restore import run_restore_job
from safekeep.tenants.models import Account
from tests.backup.harness import EngineHarness
from tests.backup.services.test_blobs_side_by_side import stores_at_once
from tests.fixtures.sim import running_sim


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    for running in running_sim(
        tmp_path, seed=7, users=3, messages=2, files=2, sites=1, list_items=1, teams=1
    ):
        httpx.put(
            f"{running.base_url}/_sim/teams/throttling",
            json={"scale": 50},
            verify=running.ssl_context(),
        )
        yield running


async def browse_down(h: EngineHarness, account: Account, team: Any) -> None:
    """Teams -> channels -> threads -> replies, as browse lists them."""

    async def children(folder: uuid.UUID | None) -> list[tuple[Any, Any]]:
        async with h.runtime.db.session() as session:
            listing = await browse.list_children(
                session,
                h.scope,
                account,
                "teams",
                at=None,
                folder_id=folder,
                cursor=None,
                limit=100,
            )
        return list(listing.entries)

    top = await children(None)
    team_item = next(item for item, version in top if version.kind == "team")
    assert {v.kind for _, v in top} == {"team", "chat"}
    channels = await children(team_item.id)
    assert sorted(v.name for _, v in channels) == sorted(
        c.display_name for c in team.channels.values()
    )
    general = next(item for item, v in channels if v.name == "General")
    threads = await children(general.id)
    assert {v.kind for _, v in threads} == {"thread"}
    channel = next(c for c in team.channels.values() if c.is_general)
    busiest = max(channel.roots(), key=lambda m: len(m.reply_ids))
    thread = next(item for item, _ in threads if item.external_id.endswith(f"/{busiest.id}"))
    replies = await children(thread.id)
    assert len(replies) == len(busiest.reply_ids) > 0


async def team_and_owner(h: EngineHarness) -> tuple[Team, str, list[Account]]:
    """Teams turned on; the world's first team, its first owner, and the discovered accounts."""
    await h.set_policy(services=["mail", "teams"])
    team = next(iter(teamwork(h.sim.tenant()).teams.values()))
    owner = min(u for u, roles in team.members.items() if "owner" in roles)
    return team, owner, await h.discover()


def owned_items(h: EngineHarness, team: Team, owner: str) -> int:
    """What the owner's full backup adds: the team, its channels, every message in them, and
    the owner's chats with their messages."""
    messages = sum(len(c.messages) for c in team.channels.values())
    chats = [c for c in teamwork(h.sim.tenant()).chats.values() if owner in c.members]
    return 1 + len(team.channels) + messages + len(chats) + sum(len(c.messages) for c in chats)


def counts(run: SnapshotRun) -> tuple[int, int, int]:
    return run.counters.added, run.counters.changed, run.counters.removed


async def test_teams_backed_up_searched_restored_and_exported(engine: EngineHarness) -> None:
    h = engine
    team, owner, accounts = await team_and_owner(h)
    account = next(a for a in accounts if a.graph_id == owner)
    member = next(a for a in accounts if a.graph_id != owner and a.licensed)

    full, skipped = await h.backup(account, "teams")
    assert skipped == 0
    assert full.counters.added == owned_items(h, team, owner)
    others, _ = await h.backup(member, "teams")  # not an owner: only its chats
    assert others.counters.added == sum(
        1 + len(c.messages)
        for c in teamwork(h.sim.tenant()).chats.values()
        if member.graph_id in c.members
    )

    quiet, _ = await h.backup(account, "teams")
    assert counts(quiet) == (0, 0, 0)
    await browse_down(h, account, team)

    tenant = h.sim.tenant().id
    general = next(c for c in team.channels.values() if c.is_general)
    private = next(c for c in team.channels.values() if c.membership_type == "private")
    kept = {m.id: (m.created, m.from_user) for m in private.messages.values()}
    alive = min((m for m in general.roots() if m.deleted is None), key=lambda m: m.created)
    base = f"/_sim/tenants/{tenant}/teams/{team.id}/channels"
    async with httpx.AsyncClient(base_url=h.sim.base_url, verify=h.sim.ssl_context()) as control:
        added = await control.post(
            f"{base}/{general.id}/messages",
            json={"from": owner, "body": "<p>zebra crossing budget</p>"},
        )
        assert added.status_code == 201
        edit = f"{base}/{general.id}/messages/{alive.id}/edit"
        assert (await control.post(edit, json={"body": "<p>v2</p>"})).status_code == 200
    h.sim.reset_counters()
    incremental, _ = await h.backup(account, "teams")
    assert counts(incremental) == (1, 1, 0)
    endpoints = h.sim.counters()["by_endpoint"]
    assert not [e for e in endpoints if e.endswith("/messages") and e.startswith("GET /teams")]

    assert await h.search_titles("teams", "zebra") == ["zebra crossing budget"]
    before_delete = datetime.now(UTC)

    async with httpx.AsyncClient(base_url=h.sim.base_url, verify=h.sim.ssl_context()) as control:
        assert (await control.delete(f"{base}/{private.id}")).status_code == 200
    after, _ = await h.backup(account, "teams")
    assert after.counters.removed == 1 + len(private.messages)

    report = await h.restore(account, "teams", at=before_delete)
    restored = next(c for c in team.channels.values() if c.display_name == private.display_name)
    assert restored.id != private.id and restored.migration == "completed"
    assert restored.membership_type == "private" and restored.members
    got = {(m.created, m.from_user) for m in restored.messages.values()}
    assert got == set(kept.values())
    assert report.summary()["restored"] == len(kept)

    archive = zipfile.ZipFile(io.BytesIO(await h.export(account, "teams")))
    pages = [n for n in archive.namelist() if n.endswith(".html")]
    assert any("General" in n for n in pages)
    page = archive.read(next(n for n in pages if "General" in n)).decode()
    assert "zebra crossing budget" in page and "data:image/png;base64," in page


async def test_a_deleted_team_comes_back_with_settings_members_and_channels(
    engine: EngineHarness,
) -> None:
    h = engine
    await h.set_policy(services=["teams"])
    world = teamwork(h.sim.tenant())
    team = next(iter(world.teams.values()))
    team.settings["funSettings"]["allowGiphy"] = False
    owner = min(u for u, roles in team.members.items() if "owner" in roles)
    account = next(a for a in await h.discover() if a.graph_id == owner)
    await h.backup(account, "teams")
    before = datetime.now(UTC)
    originals = {c.display_name: c for c in team.channels.values()}
    async with httpx.AsyncClient(base_url=h.sim.base_url, verify=h.sim.ssl_context()) as control:
        gone = await control.delete(f"/_sim/tenants/{h.sim.tenant().id}/teams/{team.id}")
        assert gone.status_code == 200
    after, _ = await h.backup(account, "teams")
    assert after.counters.removed == 1 + len(team.channels) + sum(
        len(c.messages) for c in team.channels.values()
    )

    report = await h.restore(account, "teams", at=before)
    assert report.summary()["failed"] == 0
    [back] = [t for t in world.teams.values() if not t.deleted]
    assert back.id != team.id and back.display_name == team.display_name
    assert back.migration == "completed" and back.created == team.created
    assert back.members == team.members
    assert back.settings["funSettings"]["allowGiphy"] is False
    assert {c.display_name: c.membership_type for c in back.channels.values()} == {
        name: c.membership_type for name, c in originals.items()
    }
    for name, original in originals.items():
        copy = next(c for c in back.channels.values() if c.display_name == name)
        assert copy.migration == "completed"
        assert sorted((m.created, m.from_user) for m in copy.messages.values()) == sorted(
            (m.created, m.from_user) for m in original.messages.values()
        )
        if original.membership_type != "standard":
            assert copy.members == original.members


async def owner_backed_up(h: EngineHarness, services: list[str]) -> tuple[Team, Account]:
    """The tenant's first team and its owner's account, after a Teams backup of that owner
    under a policy protecting ``services``."""
    await h.set_policy(services=services)
    team = next(iter(teamwork(h.sim.tenant()).teams.values()))
    owner = min(u for u, roles in team.members.items() if "owner" in roles)
    account = next(a for a in await h.discover() if a.graph_id == owner)
    await h.backup(account, "teams")
    return team, account


def channel_files(h: EngineHarness, team: Team, channel: Channel) -> dict[str, bytes]:
    """The files in ``channel``'s files folder (its folder in the team site's library)."""
    tenant = h.sim.tenant()
    drive = tenant.drives[tenant.sites[team.site_id or ""].drive_ids[0]]
    folder = drive.child_named(drive.root_id, channel.display_name)
    if folder is None:
        return {}
    return {
        item.name: item.content.read()
        for item in drive.items.values()
        if item.parent_id == folder.id and item.content is not None and not item.deleted
    }


def words(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


async def test_a_channel_comes_back_as_a_transcript_in_its_files(engine: EngineHarness) -> None:
    h = engine
    team, account = await owner_backed_up(h, ["teams"])
    tenant = h.sim.tenant()
    general = next(c for c in team.channels.values() if c.is_general)
    private = next(c for c in team.channels.values() if c.membership_type == "private")
    backed_up = {c.id: list(c.messages.values()) for c in team.channels.values()}
    assert backed_up[general.id] and backed_up[private.id]
    before = datetime.now(UTC)
    async with httpx.AsyncClient(base_url=h.sim.base_url, verify=h.sim.ssl_context()) as control:
        gone = f"/_sim/tenants/{tenant.id}/teams/{team.id}/channels/{private.id}"
        assert (await control.delete(gone)).status_code == 200
    await h.backup(account, "teams")
    channels_before = {c.id: len(c.messages) for c in team.channels.values() if not c.deleted}
    assert channel_files(h, team, general) == {}

    report = await h.restore(account, "teams", at=before, channels="transcript")
    summary = report.summary()
    chats = [c for c in teamwork(tenant).chats.values() if account.graph_id in c.members]
    # chats stay export-only, whatever the channels' mode
    assert summary["failed"] == 0
    assert summary["skipped"] == sum(len(c.messages) for c in chats)
    assert summary["restored"] == sum(len(m) for m in backed_up.values())
    # beside the channels, not into them: no channel made, no message imported
    assert {c.id: len(c.messages) for c in team.channels.values() if not c.deleted} == (
        channels_before
    )

    files = channel_files(h, team, general)
    # General's own transcript, and the deleted private channel's (it has no folder left)
    assert sorted(n.split(" - ")[0] for n in files) == sorted(["General", private.display_name])
    assert all(n.endswith(".html") and "Restored " in n for n in files)
    for channel in (general, private):
        page = next(v for n, v in files.items() if n.startswith(channel.display_name)).decode()
        assert page.startswith("<!doctype html>")
        text = words(page)
        for message in backed_up[channel.id]:
            if message.deleted is not None:
                continue
            author = tenant.users[message.from_user or ""].display_name
            assert f"{author} · {iso_ms(message.created)}" in text
            assert words(message.body) in text

    # a second request adds a second file rather than replacing the first
    await h.restore(account, "teams", at=before, channels="transcript")
    assert len(channel_files(h, team, general)) == 4


async def test_a_transcript_restore_through_the_api(engine: EngineHarness) -> None:
    """``target.channels`` is asked for in the restore request, refused with a 422 for any
    other service (no job made), and carried by the job to the service."""
    h = engine
    team, account = await owner_backed_up(h, ["mail", "teams"])
    general = next(c for c in team.channels.values() if c.is_general)
    transport = httpx.ASGITransport(app=create_app(runtime=h.runtime), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://safekeep.test") as api:
        url = f"/v1/tenants/{h.tenant.id}/restores"

        def body(**scope: str) -> dict[str, Any]:
            return {
                "scope": {"account_id": str(account.id), **scope},
                "target": {"channels": "transcript"},
            }

        for wrong in (body(type="service", service="mail"), body(type="account")):
            refused = await api.post(url, json=wrong, headers=h.msp.headers)
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["errors"][0]["loc"] == ["body", "target", "channels"]
        bad_value = body(type="service", service="teams")
        bad_value["target"]["channels"] = "pdf"
        assert (await api.post(url, json=bad_value, headers=h.msp.headers)).status_code == 422
        listed = await api.get(url, headers=h.msp.headers)
        assert listed.json()["items"] == []

        made = await api.post(
            url, json=body(type="service", service="teams"), headers=h.msp.headers
        )
        assert made.status_code == 202, made.text
        await run_restore_job(h.runtime, made.json()["id"])
        job = (await api.get(f"/v1/jobs/{made.json()['id']}", headers=h.msp.headers)).json()
    assert job["status"] == "partial"  # the chats: export-only
    [(name, page)] = channel_files(h, team, general).items()
    assert name.startswith("General - Restored ") and name.endswith(".html")
    root = next(m for m in general.roots() if m.deleted is None)
    assert words(root.body) in words(page.decode())


async def test_discovery_finds_who_has_teams_or_chats(engine: EngineHarness) -> None:
    """A member of a team or of a chat has Teams to back up; a licensed user in neither has
    none, and the backup leaves teams out for them."""
    h = engine
    world = teamwork(h.sim.tenant())
    team = next(iter(world.teams.values()))
    owner = min(u for u, roles in team.members.items() if "owner" in roles)
    loner = next(u for u in h.sim.tenant().users if u != owner)
    for t in world.teams.values():
        t.members.pop(loner, None)
        for c in t.channels.values():
            c.members.pop(loner, None)
    for chat in world.chats.values():
        chat.members.pop(loner, None)
    in_chats = {u for chat in world.chats.values() for u in chat.members}

    accounts = {a.graph_id: a for a in await h.discover() if a.kind == "user"}
    assert accounts[owner].services_found["teams"] is True
    assert accounts[loner].licensed and accounts[loner].services_found["teams"] is False
    for graph_id, account in accounts.items():
        if account.licensed:
            has = graph_id in in_chats or any(graph_id in t.members for t in world.teams.values())
            assert account.services_found["teams"] is has, graph_id
        else:
            assert account.services_found["teams"] is False
    assert "teams" not in registry.covered(
        accounts[loner].kind, accounts[loner].services_found, {"mail", "teams"}
    )
    assert "teams" in registry.covered(
        accounts[owner].kind, accounts[owner].services_found, {"mail", "teams"}
    )


async def test_a_transcript_without_a_files_folder_fails_only_its_messages(
    engine: EngineHarness,
) -> None:
    h = engine
    team, account = await owner_backed_up(h, ["teams"])
    tenant = h.sim.tenant()
    with h.sim.engine.world.lock:
        site, team.site_id = team.site_id, None  # the team's site not provisioned (yet)
    report = await h.restore(account, "teams", channels="transcript")
    summary = report.summary()
    assert summary["restored"] == 0
    assert summary["failed"] == sum(len(c.messages) for c in team.channels.values())
    team.site_id = site
    drive = tenant.drives[tenant.sites[site or ""].drive_ids[0]]
    assert not [i for i in drive.items.values() if i.name.endswith(".html")]


async def test_a_channel_and_a_chat_store_their_messages_side_by_side(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel's threads and replies, and a chat's messages, are stored before their
    page's transaction and side by side (one after the other, each waited for the last)."""
    h = engine
    team, owner, accounts = await team_and_owner(h)
    account = next(a for a in accounts if a.graph_id == owner)
    stores_inside: list[int] = []  # per page transaction: blobs stored while it was open
    original_page = SnapshotRun.page

    @asynccontextmanager
    async def watched_page(self: SnapshotRun) -> AsyncIterator[Any]:
        async with original_page(self) as page:
            before = seen["calls"]
            yield page
            stores_inside.append(seen["calls"] - before)

    monkeypatch.setattr(SnapshotRun, "page", watched_page)
    with stores_at_once(monkeypatch) as seen:
        full, skipped = await h.backup(account, "teams")
    assert skipped == 0
    assert full.counters.added == owned_items(h, team, owner)
    assert seen["calls"] >= full.counters.added
    assert seen["peak"] >= 4, seen
    assert stores_inside and set(stores_inside) == {0}, stores_inside
