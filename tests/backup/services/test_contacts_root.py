"""Incremental economy of contacts: the default folder's id is remembered, so an unchanged
mailbox costs the folder tree's delta round and one delta round per folder (together in one
``$batch``), and nothing else; a default folder deleted and made again is learned again,
the old one's contacts keep their versions and the new one is backed up."""

from __future__ import annotations

from sqlalchemy import select

from graphsim import ops
from safekeep.backup.context import open_repository
from safekeep.backup.services.base import read_document
from safekeep.backup.services.contacts import collect as contacts_collect
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Account, DeltaState, ItemVersion
from tests.backup.harness import EngineHarness


def sim_contacts(h: EngineHarness, uid: str) -> set[str]:
    return {
        i.id
        for i in h.sim.tenant().items.values()
        if i.kind == "contact" and i.user_id == uid and not i.deleted
    }


# An incremental's $batch: the folder tree's delta request and one delta request per folder.
FOLDER_TREE_DELTA = "GET /users/{user}/contactFolders/delta"
CONTACTS_DELTA = "/contacts/delta"


async def test_unchanged_mailbox_costs_one_delta_round_per_folder(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    await h.backup(account, "contacts")
    folders = await h.open_ids(account, "contacts", ["contact_folder"])
    assert len(folders) >= 2
    await h.assert_unchanged_runs_cost_delta_rounds(
        account, "contacts", len(folders), CONTACTS_DELTA, tree=FOLDER_TREE_DELTA
    )


async def test_default_folder_made_again_is_learned_again_without_losing_data(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    uid = account.graph_id
    await h.backup(account, "contacts")
    tenant = h.sim.tenant()
    old_root = tenant.users[uid].contacts_root
    async with h.runtime.db.session() as session:
        state = await catalog.delta_state(session, account.id, "contacts", contacts_collect.ROOT)
    assert state is not None and state.delta_link == old_root
    before = await h.open_ids(account, "contacts", ["contact"])
    in_old_root = {cid for cid, v in before.items() if v.parent_external_id == old_root}
    assert in_old_root

    # The default folder is deleted with everything in it and Exchange makes a new one.
    with h.sim.state.lock:
        user = tenant.users[uid]
        tenant.delete_folder(tenant.folders[old_root])
        new_root = ops.new_folder(tenant, user, "contact", "Contacts", None)
        user.contacts_root = new_root.id
    newcomer = h.sim.add_contact(h.sim_tenant_id, uid, given_name="Nova", surname="Root")

    run, skipped = await h.backup(account, "contacts")
    assert skipped == 0
    now = await h.open_ids(account, "contacts", ["contact"])
    assert set(now) == sim_contacts(h, uid)
    assert now[newcomer].parent_external_id == new_root.id
    folders = await h.open_ids(account, "contacts", ["contact_folder"])
    assert new_root.id in folders and old_root not in folders
    assert folders[new_root.id].parent_external_id is None
    async with h.runtime.db.session() as session:
        state = await catalog.delta_state(session, account.id, "contacts", contacts_collect.ROOT)
        old_states = (
            await session.execute(
                select(DeltaState).where(
                    DeltaState.account_id == account.id, DeltaState.collection == old_root
                )
            )
        ).all()
        # The old folder's contacts ended, their versions (and documents) kept.
        ended = (
            (
                await session.execute(
                    select(ItemVersion).where(
                        ItemVersion.account_id == account.id,
                        ItemVersion.service == "contacts",
                        ItemVersion.last_seq == run.seq - 1,
                        ItemVersion.kind == "contact",
                    )
                )
            )
            .scalars()
            .all()
        )
    assert state is not None and state.delta_link == new_root.id
    assert not old_states
    assert {v.parent_external_id for v in ended} >= {old_root}
    repo = await open_repository(h.runtime, h.tenant)
    kept = [v for v in ended if v.parent_external_id == old_root]
    assert len(kept) == len(in_old_root)
    for version in kept:
        document = await read_document(repo, version)
        assert document is not None and document["id"] in in_old_root

    # Learned: the next run is back to delta rounds only.
    h.sim.reset_counters()
    await h.backup(account, "contacts")
    h.only_delta_rounds(len(folders), CONTACTS_DELTA, tree=FOLDER_TREE_DELTA)


async def test_tree_changes_in_the_shared_batch_apply_before_contacts(
    engine: EngineHarness, account: Account
) -> None:
    """The tree's page comes in the same ``$batch`` as the folders' rounds: a folder made
    since is still backed up in that run, and a renamed folder's contacts carry its new
    path."""
    h = engine
    uid = account.graph_id
    await h.backup(account, "contacts")
    tenant = h.sim.tenant()
    user = tenant.users[uid]
    renamed = next(
        f for f in tenant.user_folders(uid, "contact") if f.parent_id == user.contacts_root
    )
    with h.sim.state.lock:
        made = ops.new_folder(tenant, user, "contact", "Made since", user.contacts_root)
        renamed.display_name = "Renamed folder"
        tenant.touch_folder(renamed)
    in_made = h.sim.add_contact(
        h.sim_tenant_id, uid, given_name="Ada", surname="New", folder=made.id
    )
    in_renamed = h.sim.add_contact(
        h.sim_tenant_id, uid, given_name="Bo", surname="Moved", folder=renamed.id
    )
    _run, skipped = await h.backup(account, "contacts")
    assert skipped == 0
    now = await h.open_ids(account, "contacts", ["contact"])
    assert set(now) == sim_contacts(h, uid)
    assert now[in_made].parent_external_id == made.id
    assert now[in_made].meta["folder"] == "/Contacts/Made since"
    assert now[in_renamed].meta["folder"] == "/Contacts/Renamed folder"
    folders = await h.open_ids(account, "contacts", ["contact_folder"])
    assert folders[renamed.id].name == "Renamed folder" and made.id in folders
