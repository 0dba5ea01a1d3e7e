"""Contacts backup, restore, export and search end to end against graphsim.

Expectations come from graphsim's own state (``sim.state``). One test runs on the scale-out
column; the rest on the embedded one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from typing import Any

import pytest

from graphsim import ops
from graphsim.state import Folder, OItem
from safekeep.backup.context import open_repository
from safekeep.backup.services import module_for
from safekeep.backup.services.base import read_document
from safekeep.backup.services.contacts import collect as contacts_collect
from safekeep.backup.services.contacts.render import escape, fold, vcard
from safekeep.backup.services.contacts.restore import WRITABLE
from safekeep.storage.repository import ContentRef
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Account
from tests.backup.harness import EngineHarness, worker_killed_at
from tests.fixtures.sim import file_attachment

PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"  # a JPEG-ish blob


# ---- helpers --------------------------------------------------------------------------------


def sim_contacts(h: EngineHarness, user_id: str) -> dict[str, OItem]:
    return {
        i.id: i
        for i in h.sim.tenant().items.values()
        if i.kind == "contact" and i.user_id == user_id and not i.deleted
    }


def sim_folders(h: EngineHarness, user_id: str) -> dict[str, Folder]:
    return {f.id: f for f in h.sim.tenant().user_folders(user_id, "contact")}


def child(h: EngineHarness, parent: str, name: str) -> Folder:
    return next(
        f
        for f in h.sim.tenant().folders.values()
        if f.parent_id == parent and f.display_name == name
    )


def add_fixtures(h: EngineHarness, user_id: str) -> dict[str, str]:
    """A nested folder, and a contact with characters vCard must escape."""
    tenant = h.sim.tenant()
    user = tenant.users[user_id]
    clients = child(h, user.contacts_root, "Clients")
    with h.sim.state.lock:
        vip = ops.new_folder(tenant, user, "contact", "VIP", clients.id)
    tricky = h.sim.add_contact(
        h.sim_tenant_id,
        user_id,
        given_name="Zoë",
        surname="O'Brien; Jr, III",
        emails=["zoe.obrien@quokkamail.example"],
        folder=vip.id,
    )
    with h.sim.state.lock:
        item = tenant.items[tricky]
        item.props["personalNotes"] = "Line one\nLine two, with comma; and semicolon \\ slash"
        item.props["companyName"] = "Wombat Logistics"
        item.props["businessPhones"] = ["+41 44 555 12 34"]
        item.props["categories"] = ["VIP", "Golf, weekends"]
        item.attachments.append(file_attachment(item, "photo.jpg", "image/jpeg", PHOTO, "photo"))
        tenant.touch_item(item)
    return {"clients": clients.id, "vip": vip.id, "tricky": tricky}


async def backed_up_fixtures(h: EngineHarness) -> tuple[Account, dict[str, str]]:
    """The first user with ``add_fixtures`` added to their contacts, then backed up."""
    account = await h.user(0)
    fixtures = add_fixtures(h, account.graph_id)
    await h.backup(account, "contacts")
    return account, fixtures


def graph_fields(props: dict[str, Any]) -> dict[str, Any]:
    """Every writable field a contact has (what a restore must give back)."""
    return {k: props[k] for k in WRITABLE if props.get(k) not in (None, "", [], {})}


def unfold(data: bytes) -> list[str]:
    return data.decode().replace("\r\n ", "").split("\r\n")


# ---- backup ---------------------------------------------------------------------------------


async def test_backup_then_incremental_tracks_versions_and_costs_little(
    engine: EngineHarness,
) -> None:
    h = engine
    account = await h.user(0)
    uid = account.graph_id
    fixtures = add_fixtures(h, uid)
    for n in range(25):
        h.sim.add_contact(h.sim_tenant_id, uid, given_name=f"Bulk{n}", surname="Person")
    run, skipped = await h.backup(account, "contacts")
    assert skipped == 0
    stored = await h.open_ids(account, "contacts", ["contact"])
    expected = sim_contacts(h, uid)
    assert set(stored) == set(expected)
    for contact_id, version in stored.items():
        assert version.parent_external_id == expected[contact_id].folder_id
        assert version.change_key == expected[contact_id].change_key
    folders = await h.open_ids(account, "contacts", ["contact_folder"])
    sim_tree = sim_folders(h, uid)
    assert set(folders) == set(sim_tree)
    root = h.sim.tenant().users[uid].contacts_root
    for folder_id, version in folders.items():
        expected_parent = sim_tree[folder_id].parent_id
        assert version.parent_external_id == (None if folder_id == root else expected_parent)
    assert stored[fixtures["tricky"]].meta["folder"] == "/Contacts/Clients/VIP"

    h.sim.reset_counters()
    run, _ = await h.backup(account, "contacts")
    quiet = h.sim.counters()["total"]
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
    # One $batch carrying the folder tree's delta request and each folder's; the default
    # folder's id is remembered.
    assert quiet == 1, h.sim.counters()["by_endpoint"]
    assert sum(h.sim.counters()["batch_by_endpoint"].values()) == 1 + len(folders)
    assert h.sim.counters()["by_endpoint"]["POST /$batch"] == 1
    assert quiet < len(expected)

    # Edit, delete, add, move to another folder, and delete a whole folder.
    contacts = sorted(sim_contacts(h, uid))
    in_root = [c for c in contacts if expected[c].folder_id == root]
    edited, deleted, moved = in_root[0], in_root[1], in_root[2]
    h.sim.edit_item(h.sim_tenant_id, edited, {"jobTitle": "Chief Wombat Officer"})
    h.sim.delete_item(h.sim_tenant_id, deleted)
    new = h.sim.add_contact(
        h.sim_tenant_id, uid, given_name="Nia", surname="Newcomer", folder=fixtures["clients"]
    )
    h.sim.move_item(h.sim_tenant_id, moved, fixtures["clients"])
    tenant = h.sim.tenant()
    with h.sim.state.lock:
        tenant.delete_folder(tenant.folders[fixtures["vip"]])
    before = {v.item_id for v in stored.values()}
    h.sim.reset_counters()
    run, _ = await h.backup(account, "contacts")
    # Each changed contact costs a photo lookup (inside a $batch per changed page).
    assert h.sim.counters()["total"] <= quiet + 2 * 4, h.sim.counters()["by_endpoint"]
    stored = await h.open_ids(account, "contacts", ["contact"])
    assert set(stored) == set(sim_contacts(h, uid))
    assert stored[edited].meta["job_title"] == "Chief Wombat Officer"
    assert stored[edited].first_seq == run.seq
    assert deleted not in stored and fixtures["tricky"] not in stored
    assert stored[new].parent_external_id == fixtures["clients"]
    assert stored[moved].parent_external_id == fixtures["clients"]
    assert stored[moved].item_id in before  # one item, with a new parent
    assert fixtures["vip"] not in await h.open_ids(account, "contacts", ["contact_folder"])
    counts = await h.versions_per_item(account, "contacts")
    assert counts[stored[edited].item_id] == 2


async def test_interrupted_backup_resumes_without_loss_or_duplicates(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    account = await h.user(0)
    for n in range(5):
        h.sim.add_contact(h.sim_tenant_id, account.graph_id, given_name=f"P{n}", surname="Page")
    monkeypatch.setattr(contacts_collect, "PAGE_SIZE", 2)
    with (
        worker_killed_at(3, before_report=True),
        pytest.raises(RuntimeError, match="worker killed"),
    ):
        await h.backup(account, "contacts")
    assert await h.open_ids(account, "contacts", ["contact"])  # some pages were made durable

    expected = set(sim_contacts(h, account.graph_id))
    await h.assert_resumed_once_each(account, "contacts", ["contact"], expected)


async def test_resync_after_expired_tokens_adds_no_versions(engine: EngineHarness) -> None:
    h = engine
    account, _ = await backed_up_fixtures(h)
    counts = await h.versions_per_item(account, "contacts")
    gone = sorted(sim_contacts(h, account.graph_id))[0]
    h.sim.delete_item(h.sim_tenant_id, gone)
    h.sim.expire_delta_tokens(h.sim_tenant_id)
    run, skipped = await h.backup(account, "contacts")
    assert skipped == 0
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 1)
    assert await h.versions_per_item(account, "contacts") == counts
    assert set(await h.open_ids(account, "contacts", ["contact"])) == set(
        sim_contacts(h, account.graph_id)
    )
    run, _ = await h.backup(account, "contacts")  # the new links work
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)


# ---- restore --------------------------------------------------------------------------------


async def test_restore_round_trips_every_field(engine: EngineHarness) -> None:
    h = engine
    account, fixtures = await backed_up_fixtures(h)
    uid = account.graph_id
    originals = {i: dict(c.props) for i, c in sim_contacts(h, uid).items()}
    folders = {i: c.folder_id for i, c in sim_contacts(h, uid).items()}
    lost = [fixtures["tricky"], *sorted(originals)[:2]]
    for contact_id in lost:
        h.sim.delete_item(h.sim_tenant_id, contact_id)

    report = await h.restore(account, "contacts")
    assert report.failed_count == 0
    assert report.restored_count == len(lost)
    assert report.existing_count == len(originals) - len(lost)
    now = sim_contacts(h, uid)
    by_name = {(c.props["displayName"], c.folder_id): c for c in now.values()}
    for contact_id in lost:
        original = originals[contact_id]
        back = by_name[(original["displayName"], folders[contact_id])]
        assert back.id != contact_id
        assert graph_fields(back.props) == graph_fields(original)
        if contact_id == fixtures["tricky"]:
            (photo,) = [a for a in back.attachments if a.name == "photo.jpg"]
            assert photo.content is not None and photo.content.read() == PHOTO


async def test_restore_to_another_account_new_folder_and_conflicts(
    engine: EngineHarness,
) -> None:
    h = engine
    source, target = await h.user(0), await h.user(1)
    add_fixtures(h, source.graph_id)
    await h.backup(source, "contacts")
    originals = sim_contacts(h, source.graph_id)
    folder_names = {f.id: f.display_name for f in sim_folders(h, source.graph_id).values()}

    def where(h: EngineHarness, user_id: str) -> list[tuple[str, str]]:
        names = {f.id: f.display_name for f in sim_folders(h, user_id).values()}
        return sorted(
            (c.props["displayName"], names[c.folder_id]) for c in sim_contacts(h, user_id).values()
        )

    expected = sorted(
        (c.props["displayName"], folder_names[c.folder_id]) for c in originals.values()
    )
    before = where(h, target.graph_id)
    report = await h.restore(source, "contacts", target=target)
    assert report.failed_count == 0 and report.restored_count == len(originals)
    assert sorted(before + expected) == where(h, target.graph_id)

    # Into a new folder: the default folder's contacts go straight in, the tree below it.
    report = await h.restore(source, "contacts", folder_mode="new")
    assert report.restored_count == len(originals)
    root = h.sim.tenant().users[source.graph_id].contacts_root
    restored = next(
        f
        for f in sim_folders(h, source.graph_id).values()
        if f.display_name.startswith("Restored ")
    )
    assert restored.parent_id == root
    vip = child(h, child(h, restored.id, "Clients").id, "VIP")
    assert [c.props["givenName"] for c in h.sim.tenant().folder_items(vip.id)] == ["Zoë"]
    direct = {c.props["displayName"] for c in h.sim.tenant().folder_items(restored.id)}
    assert direct == {c.props["displayName"] for c in originals.values() if c.folder_id == root}

    # Conflict rules on the original folders.
    stored = await h.open_ids(source, "contacts", ["contact"])
    one = sorted(stored)[0]
    item = stored[one].item_id
    name = originals[one].props["displayName"]

    def copies() -> set[str]:
        return {
            c.id
            for c in sim_contacts(h, source.graph_id).values()
            if c.props["displayName"] == name and c.folder_id == originals[one].folder_id
        }

    start = copies()
    report = await h.restore(source, "contacts", scope_type="items", item_ids=[item])
    assert report.existing_count == 1 and copies() == start
    report = await h.restore(
        source, "contacts", scope_type="items", item_ids=[item], conflict="keep_both"
    )
    assert report.restored_count == 1 and len(copies()) == len(start) + 1
    both = copies()
    report = await h.restore(
        source, "contacts", scope_type="items", item_ids=[item], conflict="overwrite"
    )
    assert report.restored_count == 1
    after = copies()
    # The contact itself and Safekeep's earlier copy are both this item: one copy remains.
    assert len(after) == len(both) - 1 and len(after - both) == 1


# ---- export, download, search ----------------------------------------------------------------


async def test_export_download_and_search(engine: EngineHarness) -> None:
    from safekeep.backup.context import open_repository

    h = engine
    account, fixtures = await backed_up_fixtures(h)
    contacts = sim_contacts(h, account.graph_id)

    archive = zipfile.ZipFile(io.BytesIO(await h.export(account, "contacts")))
    manifest = {f["path"]: f for f in json.loads(archive.read("manifest.json"))["files"]}
    cards = [n for n in archive.namelist() if n.endswith(".vcf")]
    assert len(cards) == len(contacts) == len(manifest)
    names = set()
    for name in cards:
        raw = archive.read(name)
        assert hashlib.sha256(raw).hexdigest() == manifest[name]["sha256"]
        lines = unfold(raw)
        assert lines[0] == "BEGIN:VCARD" and lines[1] == "VERSION:3.0"
        names.add(next(line[3:] for line in lines if line.startswith("FN:")))
    assert names == {escape(c.props["displayName"]) for c in contacts.values()}
    assert any(n.endswith("Contacts/Clients/VIP/Zoë O'Brien; Jr, III.vcf") for n in cards)

    version = (await h.open_ids(account, "contacts", ["contact"]))[fixtures["tricky"]]
    repo = await open_repository(h.runtime, h.tenant)
    content = await module_for("contacts").content(repo, version)
    assert content.media_type.startswith("text/vcard") and not content.rangeable
    raw = b"".join([c async for c in content.open(0, None)])
    lines = unfold(raw)
    assert "N:O'Brien\\; Jr\\, III;Zoë;;;" in lines
    assert "NOTE:Line one\\nLine two\\, with comma\\; and semicolon \\\\ slash" in lines
    assert "CATEGORIES:VIP,Golf\\, weekends" in lines
    (photo,) = [line for line in lines if line.startswith("PHOTO;")]
    assert photo.startswith("PHOTO;ENCODING=b;TYPE=JPEG:")
    assert base64.b64decode(photo.split(":", 1)[1]) == PHOTO
    assert (
        "ORG:Wombat Logistics;" + escape(contacts[fixtures["tricky"]].props["department"]) in lines
    )

    async def no_content() -> bytes | None:
        return None

    document = json.loads(await repo.read_bytes(ContentRef.from_json(version.document)))
    fields = await module_for("contacts").search_fields(version, document, no_content)
    assert fields is not None and fields.title == "Zoë O'Brien; Jr, III"
    assert fields.folder_path == "/Contacts/Clients/VIP"
    assert "zoe.obrien@quokkamail.example" in fields.people and "+41 44 555 12 34" in fields.body

    for text in ("quokkamail", "Wombat", "555 12 34", "O'Brien"):
        assert "Zoë O'Brien; Jr, III" in await h.search_titles("contacts", text), text


async def test_scaleout_backup_search_and_restore(scaleout_engine: EngineHarness) -> None:
    h = scaleout_engine
    account, fixtures = await backed_up_fixtures(h)
    assert set(await h.open_ids(account, "contacts", ["contact"])) == set(
        sim_contacts(h, account.graph_id)
    )
    assert "Zoë O'Brien; Jr, III" in await h.search_titles("contacts", "quokkamail")
    original = dict(h.sim.tenant().items[fixtures["tricky"]].props)
    h.sim.delete_item(h.sim_tenant_id, fixtures["tricky"])
    report = await h.restore(account, "contacts")
    assert report.restored_count == 1 and report.failed_count == 0
    back = [c for c in sim_contacts(h, account.graph_id).values() if c.folder_id == fixtures["vip"]]
    assert [graph_fields(c.props) for c in back] == [graph_fields(original)]


async def test_a_name_cut_inside_a_surrogate_pair_is_backed_up_and_restored_as_graph_wrote_it(
    any_engine: EngineHarness,
) -> None:
    """Exchange keeps text in UTF-16, and a name cut inside an emoji's surrogate pair keeps a
    lone surrogate, which Graph's JSON carries as an escape and no UTF-8 can hold: a strict
    JSON reader refused the whole delta page (the mailbox never backed up again), and neither
    database nor index could store the name. It is backed up, its document kept exactly, its
    name catalogued with U+FFFD, found by search, unchanged when enumerated again, and restored
    with the same text."""
    h = any_engine
    account = await h.user(0)
    cut = h.sim.add_contact(
        h.sim_tenant_id, account.graph_id, given_name="Mira", surname="Quokkacut"
    )
    h.sim.edit_item(
        h.sim_tenant_id, cut, {"givenName": "Mira\ud83d", "displayName": "Mira\ud83d Quokkacut"}
    )
    original = dict(h.sim.tenant().items[cut].props)
    assert original["displayName"] == "Mira\ud83d Quokkacut"
    run, skipped = await h.backup(account, "contacts")
    assert skipped == 0 and run.counters.added > 0
    [version] = [
        v
        for v in await h.all_versions(account, "contacts")
        if v.item_id and v.name.endswith("Quokkacut")
    ]
    assert version.name == "Mira\ufffd Quokkacut"
    repo = await open_repository(h.runtime, h.tenant)
    document = await read_document(repo, version)
    assert document is not None and document["givenName"] == "Mira\ud83d"
    assert "Mira\ufffd Quokkacut" in await h.search_titles("contacts", "Quokkacut")
    content = await module_for("contacts").content(repo, version)
    vcf = b"".join([chunk async for chunk in content.open(0, None)]).decode()
    assert "FN:Mira\ufffd Quokkacut" in vcf  # a vCard is UTF-8, which cannot carry it
    h.sim.expire_delta_tokens(h.sim_tenant_id)
    again, _ = await h.backup(account, "contacts")
    assert (again.counters.added, again.counters.changed, again.counters.removed) == (0, 0, 0)
    h.sim.delete_item(h.sim_tenant_id, cut)
    report = await h.restore(account, "contacts")
    assert report.restored_count == 1 and report.failed_count == 0
    [back] = [
        c
        for c in sim_contacts(h, account.graph_id).values()
        if c.props.get("surname") == "Quokkacut"
    ]
    assert graph_fields(back.props) == graph_fields(original)


# ---- vCard, on its own ----------------------------------------------------------------------


def test_vcard_escapes_and_folds_without_splitting_characters() -> None:
    contact = {
        "id": "AAMkC1",
        "givenName": "Émilie",
        "surname": "Durand",
        "displayName": "Émilie Durand",
        "personalNotes": "ä" * 100,
        "emailAddresses": [{"address": "e@example.com"}, {"address": "e2@example.com"}],
        "homeAddress": {"street": "Rue 1; bis", "city": "Lyon", "postalCode": "69001"},
        "mobilePhone": "+33 6 00 00 00 00",
        "birthday": "1990-05-17T11:59:00Z",
        "lastModifiedDateTime": "2026-01-02T03:04:05Z",
    }
    data = vcard(contact)
    for line in data.split(b"\r\n"):
        assert len(line) <= 75
        line.decode()  # never cut inside a UTF-8 sequence
    lines = unfold(data)
    assert "NOTE:" + "ä" * 100 in lines
    assert "EMAIL;TYPE=INTERNET,PREF:e@example.com" in lines
    assert "EMAIL;TYPE=INTERNET:e2@example.com" in lines
    assert "ADR;TYPE=HOME:;;Rue 1\\; bis;Lyon;;69001;" in lines
    assert "TEL;TYPE=CELL,VOICE:+33 6 00 00 00 00" in lines
    assert "BDAY:1990-05-17" in lines and "REV:20260102T030405Z" in lines
    assert fold("x" * 150).count("\r\n ") == 2


async def test_unreadable_photo_is_skipped_then_completed_next_run(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safekeep.backup.context import open_repository

    h = engine
    account = await h.user(0)
    fixtures = add_fixtures(h, account.graph_id)
    real = contacts_collect.ContactsCollector._photos

    async def flaky(self: Any, contact_ids: list[str]) -> Any:
        found, failed = await real(self, contact_ids)
        if fixtures["tricky"] in found:
            del found[fixtures["tricky"]]
            failed[fixtures["tricky"]] = "503 ServiceUnavailable: photo store is down"
        return found, failed

    monkeypatch.setattr(contacts_collect.ContactsCollector, "_photos", flaky)
    _run, skipped = await h.backup(account, "contacts")
    assert skipped == 1
    repo = await open_repository(h.runtime, h.tenant)
    version = (await h.open_ids(account, "contacts", ["contact"]))[fixtures["tricky"]]
    content = await module_for("contacts").content(repo, version)
    assert b"PHOTO;" not in b"".join([c async for c in content.open(0, None)])

    monkeypatch.setattr(contacts_collect.ContactsCollector, "_photos", real)
    run, skipped = await h.backup(account, "contacts")
    assert skipped == 0 and run.counters.changed == 1
    version = (await h.open_ids(account, "contacts", ["contact"]))[fixtures["tricky"]]
    content = await module_for("contacts").content(repo, version)
    assert b"PHOTO;" in b"".join([c async for c in content.open(0, None)])
    async with h.runtime.db.session() as session:
        assert await catalog.skipped_items(session, account.id, "contacts") == []


async def test_restore_one_folder_recursively(engine: EngineHarness) -> None:
    h = engine
    account, fixtures = await backed_up_fixtures(h)
    uid = account.graph_id
    folders = await h.open_ids(account, "contacts", ["contact_folder"])
    below = {fixtures["clients"], fixtures["vip"]}
    expected = sorted(
        c.props["displayName"] for c in sim_contacts(h, uid).values() if c.folder_id in below
    )
    report = await h.restore(
        account,
        "contacts",
        scope_type="folders",
        item_ids=[folders[fixtures["clients"]].item_id],
        folder_mode="new",
    )
    assert report.failed_count == 0 and report.restored_count == len(expected)
    restored = next(
        f for f in sim_folders(h, uid).values() if f.display_name.startswith("Restored ")
    )
    clients = child(h, restored.id, "Clients")
    vip = child(h, clients.id, "VIP")
    tenant = h.sim.tenant()
    got = [c.props["displayName"] for f in (clients, vip) for c in tenant.folder_items(f.id)]
    assert sorted(got) == expected
    assert tenant.folder_items(restored.id) == []  # nothing from outside the chosen folder
