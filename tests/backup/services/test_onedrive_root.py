"""Incremental economy of OneDrive: the drive and root ids are remembered, so an unchanged
drive costs its one delta request and nothing else; a OneDrive deleted and provisioned again
(a new drive, a new root) is learned again: the new drive is backed up, the old one's files
end with their versions and bytes kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select

from graphsim import ops
from graphsim.state import Drive
from safekeep.backup.context import open_repository
from safekeep.backup.services.onedrive import collect as onedrive_collect
from safekeep.storage.repository import ContentRef
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Account, ItemVersion
from tests.backup.harness import EngineHarness


async def user_with_files(h: EngineHarness) -> Account:
    tenant = h.sim.tenant()
    for account in sorted(await h.accounts(), key=lambda a: a.graph_id):
        user = tenant.users.get(account.graph_id)
        if user is not None and user.drive_id:
            drive = tenant.drives[user.drive_id]
            if any(i.content is not None and not i.deleted for i in drive.items.values()):
                return account
    raise LookupError("no user with files")


async def backed_up_drive(h: EngineHarness) -> tuple[Account, Drive]:
    """A user with files, after a first backup of their OneDrive, and that drive."""
    account = await user_with_files(h)
    await h.backup(account, "onedrive")
    drive_id = h.sim.tenant().users[account.graph_id].drive_id
    assert drive_id is not None
    return account, h.sim.tenant().drives[drive_id]


async def remembered(h: EngineHarness, account: Account) -> tuple[str, str] | None:
    async with h.runtime.db.session() as session:
        state = await catalog.delta_state(session, account.id, "onedrive", onedrive_collect.ROOT)
    return onedrive_collect.remembered(state)


def only_one_delta_round(h: EngineHarness) -> None:
    counters = h.sim.counters()
    assert counters["total"] == 1, counters["by_endpoint"]
    ((endpoint, n),) = counters["by_endpoint"].items()
    assert endpoint.endswith("/delta") and n == 1, endpoint


async def test_unchanged_drive_costs_one_delta_request(engine: EngineHarness) -> None:
    h = engine
    account, drive = await backed_up_drive(h)
    assert await remembered(h, account) == (drive.id, drive.root_id)
    for _ in range(2):
        h.sim.reset_counters()
        run, skipped = await h.backup(account, "onedrive")
        assert skipped == 0
        assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
        only_one_delta_round(h)


async def test_drive_provisioned_again_is_learned_again_without_losing_data(
    engine: EngineHarness,
) -> None:
    h = engine
    account = await user_with_files(h)
    uid = account.graph_id
    await h.backup(account, "onedrive")
    tenant = h.sim.tenant()
    old = tenant.drives[tenant.users[uid].drive_id]  # type: ignore[index]
    async with h.runtime.db.session() as session:
        before = await catalog.open_external_ids(session, account.id, "onedrive", ["file"])
    assert before

    # The user's OneDrive is deleted and provisioned again: another drive, another root.
    with h.sim.state.lock:
        fresh = ops.new_drive(
            tenant,
            "user",
            uid,
            "OneDrive",
            "business",
            old.web_url + "-2",
            datetime.now(UTC),
            key=f"reprovisioned:{uid}",
        )
        tenant.users[uid].drive_id = fresh.id
        del tenant.drives[old.id]
    new_file = h.sim.add_file(h.sim_tenant_id, "/Notes/hello.txt", user=uid, data=b"hello again")

    run, skipped = await h.backup(account, "onedrive")
    assert skipped == 0
    assert await remembered(h, account) == (fresh.id, fresh.root_id)
    async with h.runtime.db.session() as session:
        now = await catalog.open_external_ids(
            session, account.id, "onedrive", ["file", "drive_folder"]
        )
        ended = (
            (
                await session.execute(
                    select(ItemVersion).where(
                        ItemVersion.account_id == account.id,
                        ItemVersion.service == "onedrive",
                        ItemVersion.kind == "file",
                        ItemVersion.last_seq == run.seq - 1,
                    )
                )
            )
            .scalars()
            .all()
        )
        states = {s.collection for s in await catalog.delta_states(session, account.id, "onedrive")}
    live = {i.id for i in fresh.items.values() if not i.deleted and i.parent_id is not None}
    assert set(now) == live and new_file in now
    assert now[new_file].meta["path"] == "/Notes/hello.txt"
    assert now[new_file].parent_external_id is not None  # under /Notes, not the old root
    assert old.id not in states and fresh.id in states
    # Every file of the old drive ended with its bytes still readable.
    assert {v.content_hash for v in ended} == {v.content_hash for v in before.values()}
    repo = await open_repository(h.runtime, h.tenant)
    for version in ended[:3]:
        assert version.content is not None
        data = await repo.read_bytes(ContentRef.from_json(version.content))
        assert len(data) == version.size

    h.sim.reset_counters()
    await h.backup(account, "onedrive")
    only_one_delta_round(h)


async def test_a_resync_relearns_the_root_from_its_enumeration(engine: EngineHarness) -> None:
    h = engine
    account, drive = await backed_up_drive(h)
    # A remembered root that is no longer right (as if Graph had given the root a new id).
    async with h.runtime.db.session() as session:
        state = await catalog.delta_state(session, account.id, "onedrive", onedrive_collect.ROOT)
        assert state is not None
        state.delta_link = json.dumps({"drive_id": drive.id, "root_id": "stale-root"})
    h.sim.expire_delta_tokens(h.sim_tenant_id)
    run, skipped = await h.backup(account, "onedrive")
    assert skipped == 0
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
    assert await remembered(h, account) == (drive.id, drive.root_id)
    async with h.runtime.db.session() as session:
        stored = await catalog.open_external_ids(
            session, account.id, "onedrive", ["file", "drive_folder"]
        )
    top = {i.id for i in drive.items.values() if i.parent_id == drive.root_id and not i.deleted}
    assert top and all(stored[i].parent_external_id is None for i in top)
