"""Incrementals against delta rounds that send updates as their changed properties only
(graphsim's partial delta updates): what is stored stays whole, and unchanged items cost
nothing."""

from __future__ import annotations

from typing import Any

from graphsim.routes_calendar import contact_json
from graphsim.routes_mail import add_to_item
from safekeep.backup.context import open_repository
from safekeep.backup.services.base import read_document
from safekeep.backup.services.mail.collect import WELL_KNOWN
from tests.backup.harness import EngineHarness
from tests.fixtures.sim import file_attachment


def _endpoint_calls(h: EngineHarness, template: str) -> int:
    counters = h.sim.counters()
    return int(counters["by_endpoint"].get(template, 0)) + int(
        counters["batch_by_endpoint"].get(template, 0)
    )


async def _document(h: EngineHarness, version: Any) -> dict[str, Any]:
    repo = await open_repository(h.runtime, h.tenant)
    document = await read_document(repo, version)
    assert document is not None
    return document


async def test_contacts_and_folders_stay_whole(engine: EngineHarness) -> None:
    h = engine
    account = await h.user(0)
    uid = account.graph_id
    tenant = h.sim.tenant()
    user = tenant.users[uid]
    for n in range(3):
        h.sim.add_contact(h.sim_tenant_id, uid, given_name=f"Pat{n}", surname="Partial")
    await h.backup(account, "contacts")
    h.sim.set_partial_delta_updates(True)
    in_root = sorted(i.id for i in tenant.folder_items(user.contacts_root))
    edited, untouched = in_root[0], in_root[1]
    folder = next(f for f in tenant.user_folders(uid, "contact") if f.parent_id)
    h.sim.edit_item(h.sim_tenant_id, edited, {"jobTitle": "Chief Wombat Officer"})
    with h.sim.state.lock:
        folder.display_name = "Renamed clients"
        tenant.touch_folder(folder)

    h.sim.reset_counters()
    run, skipped = await h.backup(account, "contacts")
    assert skipped == 0
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 2, 0)
    stored = await h.open_ids(account, "contacts", ["contact", "contact_folder"])
    expected = {k: v for k, v in contact_json(tenant.items[edited]).items() if k[0] != "@"}
    document = await _document(h, stored[edited])
    assert {k: document.get(k) for k in expected} == expected  # every field, the new title
    assert stored[edited].name == tenant.items[edited].props["displayName"]
    assert stored[edited].meta["job_title"] == "Chief Wombat Officer"
    assert stored[folder.id].name == "Renamed clients"
    assert stored[folder.id].parent_external_id == folder.parent_id
    # Only the edited contact was read again; the folder came from the catalog.
    assert _endpoint_calls(h, "GET /users/{user}/contacts/{item}") == 1
    assert _endpoint_calls(h, "GET /users/{user}/contactFolders/{folder}") == 0
    assert stored[untouched].first_seq < run.seq

    h.sim.reset_counters()
    run, _ = await h.backup(account, "contacts")
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
    assert h.sim.counters()["total"] == 1  # an unchanged mailbox: one $batch


async def test_mail_folders_and_messages_stay_whole(engine: EngineHarness) -> None:
    h = engine
    account = await h.user(0)
    uid = account.graph_id
    tenant = h.sim.tenant()
    user = tenant.users[uid]
    inbox = tenant.folders[user.well_known["inbox"]]
    nested = h.sim.add_mail_folder(h.sim_tenant_id, uid, "Projects", parent=inbox.id)
    await h.backup(account, "mail")
    h.sim.set_partial_delta_updates(True)
    read, rewritten = [i for i in tenant.folder_items(inbox.id) if i.kind == "message"][:2]
    before = await h.open_ids(account, "mail", ["mail_folder", "message"])
    with h.sim.state.lock:
        tenant.folders[nested].display_name = "Projects 2026"
        tenant.touch_folder(tenant.folders[nested])
        inbox.display_name = "Incoming"
        tenant.touch_folder(inbox)
    h.sim.edit_item(h.sim_tenant_id, read.id, {"isRead": not read.props.get("isRead")})
    # Body and attachments both changed: the update carries them, yet is not the message.
    h.sim.edit_item(
        h.sim_tenant_id, rewritten.id, {"body": {"contentType": "text", "content": "Rewritten"}}
    )
    with h.sim.state.lock:
        add_to_item(tenant, rewritten, file_attachment(rewritten, "n.txt", "text/plain", b"n"))

    h.sim.reset_counters()
    run, skipped = await h.backup(account, "mail")
    assert skipped == 0
    stored = await h.open_ids(account, "mail", ["mail_folder", "message"])
    for folder_id, name in ((inbox.id, "Incoming"), (nested, "Projects 2026")):
        assert stored[folder_id].name == name
        assert stored[folder_id].parent_external_id == before[folder_id].parent_external_id
        assert stored[folder_id].meta == before[folder_id].meta  # well-known name, hidden
        assert stored[folder_id].first_seq == run.seq
    assert stored[nested].parent_external_id == inbox.id
    # The well-known names are read again (any folder change does); the renamed folders'
    # parents and flags came from the catalog, not from one more read each.
    assert _endpoint_calls(h, "GET /users/{user}/mailFolders/{folder}") == len(WELL_KNOWN)
    for message in (read, rewritten):
        document = await _document(h, stored[message.id])
        assert document["subject"] == message.spec.subject
        assert document["isRead"] == bool(message.props.get("isRead"))
        assert document["from"]["emailAddress"]["address"] == message.spec.sender.address
        assert stored[message.id].name == before[message.id].name
    assert (await _document(h, stored[rewritten.id]))["body"]["content"] == "Rewritten"
    assert {a["name"] for a in (await _document(h, stored[rewritten.id]))["attachments"]} >= {
        "n.txt"
    }
    changed = {read.id, rewritten.id, inbox.id, nested}
    unchanged = [m for m in before if m not in changed and m in stored]
    assert unchanged and all(stored[m].first_seq == before[m].first_seq for m in unchanged)

    h.sim.reset_counters()
    run, _ = await h.backup(account, "mail")
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
    assert h.sim.counters()["total"] == 1
