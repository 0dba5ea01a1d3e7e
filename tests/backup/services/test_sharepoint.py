"""SharePoint end to end against graphsim: a site's document libraries (as drives) and lists
(items with their fields) backed up, incrementally, through a resync; restored in place,
into another site and under a new folder with each conflict rule; exported as files plus
JSON/CSV per list; searchable. Compared with graphsim's own state throughout."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from typing import Any

import pytest

from graphsim import ops
from graphsim.content import make_docx
from graphsim.state import Drive, DriveItem, Site, SpList, utcnow
from safekeep.backup.context import open_repository
from safekeep.backup.restore.report import JobRestoreReport
from safekeep.backup.services.base import read_document
from safekeep.backup.services.sharepoint import SERVICE
from safekeep.backup.services.sharepoint.lists import SKIPPED_TEMPLATES
from safekeep.graph.client import GraphClient
from safekeep.tenants.models import Account, ItemVersion
from tests.backup.harness import EngineHarness, worker_killed_at

SERVICE_NAME = "sharepoint"
KINDS = ["library", "drive_folder", "file", "list", "list_item"]
# What graphsim (like SharePoint) computes itself: never compared, never restored.
COMPUTED = {
    "@odata.etag",
    "id",
    "Modified",
    "Created",
    "ContentType",
    "_UIVersionString",
    "Attachments",
    "Edit",
    "LinkTitle",
}


# ---- graphsim's side ---------------------------------------------------------------------------


def root_site(h: EngineHarness) -> Site:
    return next(s for s in h.sim.tenant().sites.values() if s.is_root)


def library(h: EngineHarness, site: Site) -> Drive:
    return h.sim.tenant().drives[site.drive_ids[0]]


def user_lists(h: EngineHarness, site: Site) -> list[SpList]:
    tenant = h.sim.tenant()
    return [
        tenant.lists[i] for i in site.list_ids if tenant.lists[i].template not in SKIPPED_TEMPLATES
    ]


def tracker(h: EngineHarness, site: Site) -> SpList:
    return next(lst for lst in user_lists(h, site) if lst.display_name == "Issue tracker")


def live(drive: Drive) -> dict[str, DriveItem]:
    return {i.id: i for i in drive.items.values() if not i.deleted and i.parent_id is not None}


def files_by_path(drive: Drive) -> dict[str, str]:
    return {
        drive.path_of(i): i.content.hashes()[1].lower()  # type: ignore[union-attr]
        for i in live(drive).values()
        if not i.is_folder
    }


# SharePoint's properties part (customXml/itemN.xml), which a library writes into the
# Office files it receives (graphsim/README.md, drives).
SP_PROPERTIES = b"http://schemas.microsoft.com/office/2006/metadata/properties"
OFFICE = (".docx", ".xlsx", ".pptx")


def parts_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        return {n: package.read(n) for n in package.namelist()}


def what_sharepoint_keeps(name: str, data: bytes) -> str:
    """A file's sha256; for an Office document, the sha256 of each of its parts but the
    properties part SharePoint adds, so that a document restored into a library compares
    equal only when every part of the original is there with the same bytes and nothing
    else was added."""
    if not name.lower().endswith(OFFICE):
        return hashlib.sha256(data).hexdigest()
    parts = {
        n: hashlib.sha256(body).hexdigest()
        for n, body in parts_of(data).items()
        if not (n.startswith("customXml/") and SP_PROPERTIES in body)
    }
    return json.dumps(parts, sort_keys=True)


def kept_by_path(drive: Drive) -> dict[str, str]:
    """``files_by_path``, with Office documents compared as SharePoint keeps them."""
    return {
        drive.path_of(i): what_sharepoint_keeps(i.name, i.content.read())  # type: ignore[union-attr]
        for i in live(drive).values()
        if not i.is_folder
    }


def user_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in COMPUTED}


def list_rows(lst: SpList) -> list[dict[str, Any]]:
    """The list's items as a user sees them (their own fields), order-free."""
    rows = [user_fields(i.fields) for i in lst.items.values() if not i.deleted]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def add_library_files(h: EngineHarness, site: Site) -> None:
    tid = h.sim_tenant_id
    drive_id = site.drive_ids[0]
    h.sim.add_file(tid, "General/Budget/plan.txt", drive_id=drive_id, data=b"budget plan 2025")
    h.sim.add_file(
        tid,
        "General/minutes.docx",
        drive_id=drive_id,
        data=make_docx(["Board minutes", "the numbat acquisition was approved"]),
    )
    h.sim.add_file(tid, "Archive/old.csv", drive_id=drive_id, data=b"a,b\n1,2\n")


async def site_with_files(h: EngineHarness) -> tuple[Site, Account]:
    """The root site, with ``add_library_files`` in its library, and its account."""
    site = root_site(h)
    add_library_files(h, site)
    return site, await h.account(site.id)


def add_second_library(h: EngineHarness, site: Site) -> Drive:
    """A second document library ("Reports") with a file in a folder."""
    tenant = h.sim.tenant()
    when = utcnow()
    listing = ops.new_list(tenant, site, "Reports", "Reports", "documentLibrary", when)
    drive = ops.new_drive(
        tenant,
        "site",
        site.id,
        "Reports",
        "documentLibrary",
        f"{site.web_url}/Reports",
        when,
        key=f"reports:{site.id}",
    )
    drive.list_id = listing.id
    listing.drive_id = drive.id
    site.drive_ids.append(drive.id)
    h.sim.add_file(h.sim_tenant_id, "Q1/summary.txt", drive_id=drive.id, data=b"q1 summary")
    return drive


# ---- our side ----------------------------------------------------------------------------------


async def current(h: EngineHarness, account: Any) -> dict[str, ItemVersion]:
    return await h.open_ids(account, SERVICE_NAME, KINDS)


async def assert_site_matches(h: EngineHarness, account: Any, site: Site) -> None:
    stored = await current(h, account)
    repo = await open_repository(h.runtime, h.tenant)
    expected: set[str] = set()
    tenant = h.sim.tenant()
    for drive_id in site.drive_ids:
        drive = tenant.drives[drive_id]
        top = f"library:{drive_id}"
        expected.add(top)
        assert stored[top].kind == "library"
        assert stored[top].name == drive.name
        for item in live(drive).values():
            expected.add(item.id)
            version = stored[item.id]
            assert version.name == item.name
            parent = top if item.parent_id == drive.root_id else item.parent_id
            assert version.parent_external_id == parent
            assert version.meta["path"] == f"/{drive.name}{drive.path_of(item)}"
            if not item.is_folder:
                assert version.content_hash == item.content.hashes()[1].lower()  # type: ignore[union-attr]
    for lst in user_lists(h, site):
        ext = f"list:{lst.id}"
        expected.add(ext)
        document = await read_document(repo, stored[ext])
        assert document is not None
        assert [c["name"] for c in document["columns"]] == [c["name"] for c in lst.columns]
        for row in lst.items.values():
            if row.deleted:
                continue
            key = f"list:{lst.id}:{row.id}"
            expected.add(key)
            assert stored[key].parent_external_id == ext
            doc = await read_document(repo, stored[key])
            assert doc is not None
            assert user_fields(doc["fields"]) == user_fields(row.fields)
    assert set(stored) == expected


# ---- backup ------------------------------------------------------------------------------------


async def test_site_full_then_incremental(engine: EngineHarness) -> None:
    h = engine
    tid = h.sim_tenant_id
    site, account = await site_with_files(h)

    run, skipped = await h.backup(account, SERVICE_NAME)
    assert skipped == 0
    await assert_site_matches(h, account, site)
    first_count = len(await current(h, account))
    assert run.counters.added == first_count

    h.sim.reset_counters()
    run, _ = await h.backup(account, SERVICE_NAME)
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
    idle = h.sim.counters()["total"]
    # drives, lists, one $batch of the library roots (graphsim counts the batch and what it
    # carries), one delta page per library and per list
    assert idle <= 3 + 2 * len(site.drive_ids) + len(user_lists(h, site))

    lst = tracker(h, site)
    items = sorted((i for i in lst.items.values() if not i.deleted), key=lambda i: int(i.id))
    h.sim.edit_item(tid, items[0].id, {"Status": "Resolved"}, list_id=lst.id)
    h.sim.delete_item(tid, items[1].id, list_id=lst.id)
    h.sim.add_list_item(tid, lst.id, {"Title": "A brand new issue", "Status": "New"})
    drive = library(h, site)
    doc = next(i for i in live(drive).values() if i.name == "plan.txt")
    h.sim.edit_item(tid, doc.id, {"content": b"budget plan 2026"})

    run, skipped = await h.backup(account, SERVICE_NAME)
    assert skipped == 0
    await assert_site_matches(h, account, site)
    # edited item, edited file; the list itself keeps its version (same schema)
    assert run.counters.changed == 2
    assert run.counters.removed == 1
    assert run.counters.added == 1

    versions = await h.all_versions(account, SERVICE_NAME)
    assert len(versions) == first_count + 1 + 2  # the new item, and one new version per edit


async def test_resync_reenumerates_without_new_versions(engine: EngineHarness) -> None:
    h = engine
    tid = h.sim_tenant_id
    site, account = await site_with_files(h)
    add_second_library(h, site)
    await h.backup(account, SERVICE_NAME)
    await assert_site_matches(h, account, site)
    lst = tracker(h, site)
    items = sorted((i for i in lst.items.values() if not i.deleted), key=lambda i: int(i.id))
    h.sim.delete_item(tid, items[0].id, list_id=lst.id)
    h.sim.edit_item(tid, items[1].id, {"Title": "retitled"}, list_id=lst.id)
    h.sim.expire_delta_tokens(tid, owner=lst.id)
    h.sim.expire_delta_tokens(tid, owner=site.drive_ids[0])
    # A change in the other library, collected after the first one's resync: its path must
    # still come out whole.
    h.sim.add_file(tid, "Q1/details.txt", drive_id=site.drive_ids[1], data=b"q1 details")

    h.sim.reset_counters()
    run, skipped = await h.backup(account, SERVICE_NAME)
    assert skipped == 0
    assert h.sim.counters()["by_status"].get("410", 0) >= 2
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (1, 1, 1)
    await assert_site_matches(h, account, site)


async def test_deleted_list_and_library_content_end_their_versions(engine: EngineHarness) -> None:
    h = engine
    tid = h.sim_tenant_id
    site, account = await site_with_files(h)
    await h.backup(account, SERVICE_NAME)
    lst = tracker(h, site)
    site.list_ids.remove(lst.id)  # the list is deleted from the site
    drive = library(h, site)
    general = next(i for i in live(drive).values() if i.name == "General")
    h.sim.delete_item(tid, general.id)

    await h.backup(account, SERVICE_NAME)
    stored = await current(h, account)
    assert not [k for k in stored if k.startswith(f"list:{lst.id}")]
    assert not [
        v for v in stored.values() if v.meta.get("path", "").startswith("/Documents/General")
    ]
    await assert_site_matches(h, account, site)


# ---- restore -----------------------------------------------------------------------------------


async def test_restore_lists_and_libraries(engine: EngineHarness) -> None:
    h = engine
    tid = h.sim_tenant_id
    site, account = await site_with_files(h)
    await h.backup(account, SERVICE_NAME)
    drive = library(h, site)
    lst = tracker(h, site)
    before_files = kept_by_path(drive)
    before_rows = list_rows(lst)
    items = sorted((i for i in lst.items.values() if not i.deleted), key=lambda i: int(i.id))

    # Damage: two items deleted, one edited; a folder of the library deleted.
    h.sim.delete_item(tid, items[0].id, list_id=lst.id)
    h.sim.delete_item(tid, items[1].id, list_id=lst.id)
    h.sim.edit_item(tid, items[2].id, {"Status": "Tampered"}, list_id=lst.id)
    general = next(i for i in live(drive).values() if i.name == "General")
    h.sim.delete_item(tid, general.id)

    report = await h.restore(account, SERVICE_NAME, conflict="skip")
    assert report.failed_count == 0
    assert report.skipped_count == 1  # the edited item: there, but not as it was
    assert kept_by_path(drive) == before_files
    rows = list_rows(lst)
    assert len(rows) == len(before_rows)
    assert any(r.get("Status") == "Tampered" for r in rows)  # skip left it alone

    report = await h.restore(account, SERVICE_NAME, conflict="overwrite")
    assert report.failed_count == 0
    assert list_rows(lst) == before_rows  # every field back, no duplicates
    assert report.restored_count == 1  # only the edited item was written; the rest held

    report = await h.restore(account, SERVICE_NAME, conflict="keep_both")
    assert report.failed_count == 0
    assert len(list_rows(lst)) == 2 * len(before_rows)  # a copy of each item
    renamed = [p for p in kept_by_path(drive) if p not in before_files]
    assert len(renamed) == len(before_files)  # each file once more, under a free name

    report = await h.restore(account, SERVICE_NAME, folder_mode="new", conflict="skip")
    assert report.failed_count == 0
    top = next(
        i.name
        for i in live(drive).values()
        if i.parent_id == drive.root_id and i.name.startswith("Restored ")
    )
    under = {
        p[len(top) + 1 :]: s for p, s in kept_by_path(drive).items() if p.startswith(f"/{top}/")
    }
    assert under == before_files


async def test_restore_into_another_site(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    tid = h.sim_tenant_id
    site, account = await site_with_files(h)
    await h.backup(account, SERVICE_NAME)
    before_files = kept_by_path(library(h, site))
    before_rows = list_rows(tracker(h, site))

    other_id = h.sim.add_site(tid, "Second site")
    await h.discover()
    other = await h.account(other_id)
    other_site = h.sim.tenant().sites[other_id]

    report = await h.restore(account, SERVICE_NAME, target=other)
    # The other site's "Issue tracker" has Title and Status only: the rest is noted, not sent.
    assert report.failed_count == 0
    other_files = kept_by_path(library(h, other_site))
    assert {p: other_files[p] for p in before_files} == before_files
    rows = list_rows(tracker(h, other_site))
    assert sorted((r["Title"], r["Status"]) for r in rows) == sorted(
        (r["Title"], r["Status"]) for r in before_rows
    )

    # A list the target lacks is re-created from its stored columns (POST /sites/{s}/lists),
    # then its items are restored into it.
    tenant = h.sim.tenant()
    extra = ops.new_list(
        tenant,
        site,
        "Contacts list",
        "Contacts list",
        "genericList",
        utcnow(),
        columns=[{"name": "Title", "displayName": "Title", "text": {}}],
    )
    ops.new_list_item(tenant, extra, {"Title": "Ada"}, "")
    await h.backup(account, SERVICE_NAME)
    ada = next(v for v in (await current(h, account)).values() if v.name == "Ada")
    report = await h.restore(
        account, SERVICE_NAME, scope_type="items", item_ids=[ada.item_id], target=other
    )
    assert (report.failed_count, report.restored_count) == (0, 1)
    created = [lst for lst in user_lists(h, other_site) if lst.display_name == "Contacts list"]
    assert len(created) == 1
    assert [r["Title"] for r in list_rows(created[0])] == ["Ada"]


async def test_office_documents_sharepoint_rewrites_are_restored_with_a_note(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library writes its properties into every Office file it receives, so a restored
    .docx never has the backup's size and hash: it is restored with a note saying why, not
    failed. A second restore finds it there (every part of the backup's package in it); one
    whose document was edited since is not."""
    h = engine
    tid = h.sim_tenant_id
    site, account = await site_with_files(h)
    await h.backup(account, SERVICE_NAME)
    drive = library(h, site)
    gone = [i for i in live(drive).values() if i.name.endswith(".docx") or i.name == "plan.txt"]
    sent = {drive.path_of(i): i.content.read() for i in gone}  # type: ignore[union-attr]
    documents = [p for p in sent if p.endswith(".docx")]
    assert len(documents) >= 2
    for item in gone:
        h.sim.delete_item(tid, item.id)
    notes: dict[str, str | None] = {}
    restored = JobRestoreReport.restored

    async def noting(self: JobRestoreReport, version: Any, **kw: Any) -> None:
        notes[version.name] = kw.get("note")
        await restored(self, version, **kw)

    monkeypatch.setattr(JobRestoreReport, "restored", noting)

    report = await h.restore(account, SERVICE_NAME)
    assert report.failed_count == 0
    assert (report.restored_count, report.noted_count) == (len(sent), len(documents))
    assert notes.pop("plan.txt") is None  # other files keep their bytes: no note
    assert len(notes) == len(documents)
    assert all("SharePoint rewrote this document on arrival" in str(n) for n in notes.values())
    now = {drive.path_of(i): i.content.read() for i in live(drive).values() if not i.is_folder}  # type: ignore[union-attr]
    assert now["/General/Budget/plan.txt"] == sent["/General/Budget/plan.txt"]
    for path in documents:
        assert now[path] != sent[path]
        before, after = parts_of(sent[path]), parts_of(now[path])
        assert {n: after.get(n) for n in before} == before  # every part as it was
        assert [SP_PROPERTIES in after[n] for n in set(after) - set(before)] == [True]

    # Restored again: already there (the library's copy holds the backup's document), under
    # either rule; nothing written, nothing skipped.
    for conflict in ("skip", "overwrite"):
        report = await h.restore(account, SERVICE_NAME, conflict=conflict)
        assert (report.restored_count, report.skipped_count, report.failed_count) == (0, 0, 0)
        assert {drive.path_of(i) for i in live(drive).values() if not i.is_folder} >= set(sent)
    assert kept_by_path(drive) == {p: what_sharepoint_keeps(p, b) for p, b in now.items()}

    # A document edited since (its text, not SharePoint's properties) is not already there.
    edited = next(i for i in live(drive).values() if drive.path_of(i) == documents[0])
    h.sim.edit_item(tid, edited.id, {"content": make_docx(["Edited since"])})
    report = await h.restore(account, SERVICE_NAME, conflict="skip")
    assert (report.restored_count, report.skipped_count, report.failed_count) == (0, 1, 0)


def test_a_document_as_sharepoint_keeps_it_is_judged_part_by_part() -> None:
    """Only SharePoint's own parts may differ or be added; every other part of the backup
    must be there with its bytes, and nothing else added."""
    from safekeep.backup.drive.office import same_document

    backup = {"[Content_Types].xml": b"t", "_rels/.rels": b"r", "word/document.xml": b"d"}
    kept = {**backup, "customXml/item1.xml": b"p", "word/_rels/document.xml.rels": b"x"}
    assert same_document(backup, kept)
    assert same_document(
        backup, {**kept, "[Content_Types].xml": b"t2", "docProps/custom.xml": b"c"}
    )
    assert not same_document(backup, {**kept, "word/document.xml": b"edited"})
    assert not same_document(backup, {k: v for k, v in kept.items() if k != "word/document.xml"})
    assert not same_document(backup, {**kept, "word/media/image1.png": b"new"})
    assert not same_document({"customXml/item1.xml": b"p"}, {"customXml/item1.xml": b"p"})


async def test_a_library_stays_strict_for_other_files(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only Office documents get the library's allowance: any other file whose bytes Graph
    stored differently has failed."""
    h = engine
    site, account = await site_with_files(h)
    await h.backup(account, SERVICE_NAME)
    drive = library(h, site)
    plan = next(i for i in live(drive).values() if i.name == "plan.txt")
    h.sim.delete_item(h.sim_tenant_id, plan.id)
    upload = GraphClient.upload_drive_file

    async def damaging(self: GraphClient, *args: Any, **kw: Any) -> Any:
        created = await upload(self, *args, **kw)
        created["file"]["hashes"]["quickXorHash"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
        return created

    monkeypatch.setattr(GraphClient, "upload_drive_file", damaging)
    report = await h.restore(account, SERVICE_NAME)
    assert (report.restored_count, report.failed_count) == (0, 1)


# ---- export, download, search ------------------------------------------------------------------


async def test_export_files_and_lists(engine: EngineHarness) -> None:
    h = engine
    site, account = await site_with_files(h)
    await h.backup(account, SERVICE_NAME)
    data = await h.export(account, SERVICE_NAME)
    archive = zipfile.ZipFile(io.BytesIO(data))
    manifest = {f["path"]: f for f in json.loads(archive.read("manifest.json"))["files"]}
    top = next(p for p in manifest).split("/sharepoint/")[0] + "/sharepoint"
    drive = library(h, site)
    for path, sha in files_by_path(drive).items():
        member = f"{top}/{drive.name}{path}"
        assert manifest[member]["sha256"] == sha
        assert hashlib.sha256(archive.read(member)).hexdigest() == sha
    lst = tracker(h, site)
    exported = json.loads(archive.read(f"{top}/{lst.display_name}.json"))
    assert [c["name"] for c in exported["columns"]] == [c["name"] for c in lst.columns]
    rows = sorted(
        (user_fields(i["fields"]) for i in exported["items"]),
        key=lambda r: json.dumps(r, sort_keys=True),
    )
    assert rows == list_rows(lst)
    table = list(
        csv.DictReader(
            io.StringIO(archive.read(f"{top}/{lst.display_name}.csv").decode("utf-8-sig"))
        )
    )
    assert sorted(r["Title"] for r in table) == sorted(r["Title"] for r in list_rows(lst))


async def test_list_item_download_and_search(engine: EngineHarness) -> None:
    h = engine
    site, account = await site_with_files(h)
    lst = tracker(h, site)
    h.sim.add_list_item(h.sim_tenant_id, lst.id, {"Title": "Pangolin outage", "Status": "New"})
    await h.backup(account, SERVICE_NAME)
    stored = await current(h, account)
    item = next(v for v in stored.values() if v.name == "Pangolin outage")
    content = await SERVICE.content(await open_repository(h.runtime, h.tenant), item)
    body = json.loads(b"".join([c async for c in content.open(0, None)]))
    assert body["fields"]["Status"] == "New"
    assert content.media_type == "application/json"

    assert "Pangolin outage" in await h.search_titles(SERVICE_NAME, "pangolin")
    # text inside a library document
    assert "minutes.docx" in await h.search_titles(SERVICE_NAME, "numbat")


async def test_interrupted_site_backup_resumes(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safekeep.backup.services.sharepoint import lists as sp_lists

    h = engine
    site, account = await site_with_files(h)
    monkeypatch.setattr(sp_lists, "DELTA_PAGE_SIZE", 2)
    # the fourth report: the site's tops, the library, then inside the list's pages
    with worker_killed_at(4), pytest.raises(RuntimeError, match="worker killed"):
        await h.backup(account, SERVICE_NAME)
    lst = tracker(h, site)
    stored_items = [k for k in await current(h, account) if k.startswith(f"list:{lst.id}:")]
    assert 0 < len(stored_items) < len([i for i in lst.items.values() if not i.deleted])
    run, skipped = await h.backup(account, SERVICE_NAME)
    assert run.resumed
    assert skipped == 0
    await assert_site_matches(h, account, site)
    versions = await h.all_versions(account, SERVICE_NAME)
    assert len(versions) == len(await current(h, account))  # nothing twice


async def test_scaleout_site_backup_restore_search(scaleout_engine: EngineHarness) -> None:
    h = scaleout_engine
    tid = h.sim_tenant_id
    site, account = await site_with_files(h)
    await h.backup(account, SERVICE_NAME)
    await assert_site_matches(h, account, site)
    lst = tracker(h, site)
    before_rows = list_rows(lst)
    first = min((i for i in lst.items.values() if not i.deleted), key=lambda i: int(i.id))
    h.sim.delete_item(tid, first.id, list_id=lst.id)
    report = await h.restore(account, SERVICE_NAME)
    assert report.failed_count == 0
    assert report.restored_count == 1
    assert list_rows(lst) == before_rows
    assert "minutes.docx" in await h.search_titles(SERVICE_NAME, "numbat")
