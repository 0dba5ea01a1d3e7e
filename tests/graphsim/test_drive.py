"""OneDrive: delta, hashes, downloads with Range, versions, uploads and conflicts, ransomware."""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import httpx
import pytest
from msgraph.generated.models.drive import Drive
from msgraph.generated.models.drive_item import DriveItem
from msgraph.generated.models.drive_item_collection_response import DriveItemCollectionResponse

from graphsim import Simulator
from graphsim.content import make_docx
from graphsim.quickxor import quickxor_b64
from tests.graphsim.conftest import collect, sdk_parse

UNIT = 320 * 1024


@pytest.fixture(scope="module")
def plain(sim: Simulator):
    with httpx.Client(verify=sim.ssl_context(), timeout=60) as c:
        yield c


def drive_of(client: httpx.Client, user: Any) -> dict[str, Any]:
    resp = client.get(f"/users/{user.id}/drive")
    assert resp.status_code == 200
    sdk_parse(Drive, resp.content)
    return resp.json()


def test_quickxor_vector() -> None:
    assert quickxor_b64(b"hello world") == "aCgDG9jwBhDc4Q1yawMZAAAAAAA="


def test_delta_lists_every_item_once_then_exactly_the_edits(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    drive = drive_of(client, user)
    values, delta = collect(client, f"/drives/{drive['id']}/root/delta", params={"$top": "7"})
    ids = [v["id"] for v in values]
    assert len(ids) == len(set(ids))
    state = sim.tenant().drives[drive["id"]]
    live = {i.id for i in state.items.values() if not i.deleted}
    assert set(ids) == live
    positions = {v["id"]: n for n, v in enumerate(values)}
    for value in values:
        parent = value.get("parentReference", {}).get("id")
        if parent:
            assert positions[parent] < positions[value["id"]], "parents come before children"
            # Business drives carry the parent's path in delta too.
            parent_item = state.items[parent]
            where = state.path_of(parent_item) if parent_item.parent_id else ""
            assert value["parentReference"]["path"] == f"/drives/{drive['id']}/root:{where}"
    parsed = sdk_parse(
        DriveItemCollectionResponse,
        client.get(f"/drives/{drive['id']}/root/delta", params={"$top": "50"}).content,
    )
    assert parsed.value

    files = [v for v in values if "file" in v]
    edited, renamed, removed = files[0]["id"], files[1]["id"], files[2]["id"]
    put = client.put(f"/drives/{drive['id']}/items/{edited}/content", content=b"new content")
    assert put.status_code == 200
    patch = client.patch(
        f"/drives/{drive['id']}/items/{renamed}", json={"name": "Renamed file.txt"}
    )
    assert patch.status_code == 200
    assert client.delete(f"/drives/{drive['id']}/items/{removed}").status_code == 204
    only, _ = collect(client, delta, headers={"Prefer": "deltaExcludeParent"})
    assert {v["id"] for v in only} == {edited, renamed, removed}
    changes, _ = collect(client, delta)
    by_id = {v["id"]: v for v in changes}
    # Without deltaExcludeParent, the unchanged folders above the changed items come too,
    # up to the root, each once and before the items below it.
    ancestors = {a.id for i in (edited, renamed) for a in _chain(state, state.items[i].parent_id)}
    assert state.root_id in ancestors
    assert set(by_id) == {edited, renamed, removed} | ancestors
    assert len(changes) == len(by_id)
    order = [v["id"] for v in changes]
    for item_id in (edited, renamed):
        assert order.index(state.items[item_id].parent_id or "") < order.index(item_id)
    assert by_id[removed]["deleted"] == {"state": "deleted"}
    assert by_id[renamed]["name"] == "Renamed file.txt"
    assert by_id[edited]["size"] == len(b"new content")
    # OneDrive for Business leaves out of delta the cTag of what it creates or changes, and
    # the cTag and name of what it deletes (driveItem: delta, Remarks); a GET has the cTag.
    assert not any("cTag" in v for v in values + changes)
    assert "name" not in by_id[removed]
    assert "cTag" in client.get(f"/drives/{drive['id']}/items/{edited}").json()


def _chain(drive: Any, parent_id: str | None) -> list[Any]:
    out = []
    while parent_id:
        out.append(drive.items[parent_id])
        parent_id = drive.items[parent_id].parent_id
    return out


def test_token_latest_and_both_link_forms(client: httpx.Client, user: Any) -> None:
    drive = drive_of(client, user)
    latest = client.get(f"/drives/{drive['id']}/root/delta", params={"token": "latest"}).json()
    assert latest["value"] == []
    link = latest["@odata.deltaLink"]
    assert "token=" in link
    token = link.split("token=")[1]
    client.put(f"/drives/{drive['id']}/root:/Notes/fresh.txt:/content", content=b"fresh")
    old_form = client.get(f"/drives/{drive['id']}/root/delta(token='{token}')").json()
    # The new folder and file, after the root they sit in (returned as their ancestor).
    assert [v["name"] for v in old_form["value"]] == ["root", "Notes", "fresh.txt"]
    via_user = client.get(
        f"/users/{user.id}/drive/root/delta",
        params={"token": token},
        headers={"Prefer": "deltaExcludeParent"},
    ).json()
    assert [v["name"] for v in via_user["value"]] == ["fresh.txt"]
    # The function-call form the SDKs send, on the ``items/root`` alias: links echo it.
    called = client.get(f"/drives/{drive['id']}/items/root/delta()", params={"token": token})
    assert called.status_code == 200, called.text
    assert "/root/delta()?token=" in called.json()["@odata.deltaLink"]


def test_expired_drive_token_answers_410_with_location(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    drive = drive_of(client, user)
    _, delta = collect(client, f"/drives/{drive['id']}/root/delta")
    sim.expire_delta_tokens(sim.tenant().id, drive["id"])
    resp = client.get(delta)
    assert resp.status_code == 410
    assert resp.json()["error"]["code"] == "resyncRequired"
    assert resp.json()["error"]["innerError"]["code"] == "resyncChangesApplyDifferences"
    fresh = client.get(resp.headers["location"])
    assert fresh.status_code == 200
    assert fresh.json()["value"]


def test_content_redirects_and_ranges(client: httpx.Client, plain: httpx.Client, user: Any) -> None:
    drive = drive_of(client, user)
    data = bytes(range(256)) * 40
    item = client.put(f"/drives/{drive['id']}/root:/ranges.bin:/content", content=data).json()
    redirect = client.get(f"/drives/{drive['id']}/items/{item['id']}/content")
    assert redirect.status_code == 302
    url = redirect.headers["location"]
    assert url == item["@microsoft.graph.downloadUrl"] or url.startswith(
        url.split("/_download/")[0]
    )
    whole = plain.get(url)
    assert whole.status_code == 200
    assert whole.content == data
    part = plain.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = plain.get(url, headers={"Range": "bytes=-10"})
    assert tail.content == data[-10:]
    assert plain.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    # Business drives give quickXorHash only (sha256Hash is documented as not supported).
    assert item["file"]["hashes"] == {"quickXorHash": quickxor_b64(data)}


def test_generated_content_matches_its_hashes(
    client: httpx.Client, plain: httpx.Client, user: Any
) -> None:
    drive = drive_of(client, user)
    values, _ = collect(client, f"/drives/{drive['id']}/root/delta")
    files = sorted((v for v in values if "file" in v), key=lambda v: -v["size"])[:3]
    for value in files:
        body = plain.get(value["@microsoft.graph.downloadUrl"]).content
        assert len(body) == value["size"]
        assert quickxor_b64(body) == value["file"]["hashes"]["quickXorHash"]


def test_upload_session_roundtrip_and_fragment_rules(
    sim: Simulator, client: httpx.Client, plain: httpx.Client, user: Any
) -> None:
    drive = drive_of(client, user)
    data = hashlib.sha256(b"seed").digest() * (UNIT * 3 // 32) + b"tail-bytes"
    session = client.post(
        f"/drives/{drive['id']}/root:/Uploads/big.bin:/createUploadSession",
        json={"item": {"@microsoft.graph.conflictBehavior": "fail"}},
    )
    assert session.status_code == 200
    url = session.json()["uploadUrl"]
    total = len(data)
    odd = plain.put(url, content=data[:1000], headers={"Content-Range": f"bytes 0-999/{total}"})
    assert odd.status_code == 400
    first = plain.put(
        url, content=data[: UNIT * 2], headers={"Content-Range": f"bytes 0-{UNIT * 2 - 1}/{total}"}
    )
    assert first.status_code == 202
    assert first.json()["nextExpectedRanges"] == [f"{UNIT * 2}-"]
    overlap = plain.put(
        url,
        content=data[UNIT : UNIT * 2],
        headers={"Content-Range": f"bytes {UNIT}-{UNIT * 2 - 1}/{total}"},
    )
    assert overlap.status_code == 416
    assert plain.get(url).json()["nextExpectedRanges"] == [f"{UNIT * 2}-"]
    last = plain.put(
        url,
        content=data[UNIT * 2 :],
        headers={"Content-Range": f"bytes {UNIT * 2}-{total - 1}/{total}"},
    )
    assert last.status_code == 201
    item = sdk_parse(DriveItem, last.content)
    assert item.name == "big.bin"
    assert item.size == total
    assert last.json()["file"]["hashes"] == {"quickXorHash": quickxor_b64(data)}
    downloaded = plain.get(last.json()["@microsoft.graph.downloadUrl"]).content
    assert hashlib.sha256(downloaded).digest() == hashlib.sha256(data).digest()

    clash = client.post(
        f"/drives/{drive['id']}/root:/Uploads/big.bin:/createUploadSession",
        json={"item": {"@microsoft.graph.conflictBehavior": "fail"}},
    )
    assert clash.status_code == 409
    assert clash.json()["error"]["code"] == "nameAlreadyExists"
    renamed = client.post(
        f"/drives/{drive['id']}/root:/Uploads/big.bin:/createUploadSession",
        json={"item": {"@microsoft.graph.conflictBehavior": "rename"}},
    ).json()["uploadUrl"]
    done = plain.put(renamed, content=b"small", headers={"Content-Range": "bytes 0-4/5"})
    assert done.json()["name"] == "big 1.bin"
    replaced = client.post(
        f"/drives/{drive['id']}/root:/Uploads/big.bin:/createUploadSession",
        json={"item": {"@microsoft.graph.conflictBehavior": "replace"}},
    ).json()["uploadUrl"]
    again = plain.put(replaced, content=b"replaced", headers={"Content-Range": "bytes 0-7/8"})
    assert again.status_code == 200
    assert again.json()["id"] == item.id
    versions = client.get(f"/drives/{drive['id']}/items/{item.id}/versions").json()["value"]
    assert [v["id"] for v in versions] == ["2.0", "1.0"]
    assert versions[1]["size"] == total
    cancelled = client.post(
        f"/drives/{drive['id']}/root:/Uploads/never.bin:/createUploadSession", json={}
    )
    assert plain.delete(cancelled.json()["uploadUrl"]).status_code == 204
    assert plain.get(cancelled.json()["uploadUrl"]).status_code == 404


def test_an_upload_fragment_is_smaller_than_60_mib(
    client: httpx.Client, plain: httpx.Client, user: Any
) -> None:
    """ "Less than 60 MiB in any one request": exactly 60 MiB (a multiple of 320 KiB) is
    refused, and the session still takes the same bytes in two fragments."""
    drive = drive_of(client, user)
    limit = 60 * 1024 * 1024
    total = limit + UNIT
    data = bytes(range(256)) * (total // 256)
    url = client.post(
        f"/drives/{drive['id']}/root:/Uploads/sixty.bin:/createUploadSession", json={}
    ).json()["uploadUrl"]
    whole = plain.put(
        url, content=data[:limit], headers={"Content-Range": f"bytes 0-{limit - 1}/{total}"}
    )
    assert whole.status_code == 413
    assert plain.get(url).json()["nextExpectedRanges"] == ["0-"]
    half = limit // 2
    first = plain.put(
        url, content=data[:half], headers={"Content-Range": f"bytes 0-{half - 1}/{total}"}
    )
    assert first.status_code == 202
    rest = plain.put(
        url, content=data[half:], headers={"Content-Range": f"bytes {half}-{total - 1}/{total}"}
    )
    assert rest.status_code == 201 and rest.json()["size"] == total


def test_simple_upload_conflicts_and_folders(client: httpx.Client, user: Any) -> None:
    drive = drive_of(client, user)
    first = client.put(f"/drives/{drive['id']}/root:/Conflicts/a.txt:/content", content=b"1")
    assert first.status_code == 201
    fail = client.put(
        f"/drives/{drive['id']}/root:/Conflicts/a.txt:/content",
        params={"@microsoft.graph.conflictBehavior": "fail"},
        content=b"2",
    )
    assert fail.status_code == 409
    rename = client.put(
        f"/drives/{drive['id']}/root:/Conflicts/a.txt:/content",
        params={"@microsoft.graph.conflictBehavior": "rename"},
        content=b"3",
    )
    assert rename.json()["name"] == "a 1.txt"
    folder = client.post(
        f"/drives/{drive['id']}/root/children", json={"name": "New folder", "folder": {}}
    )
    assert folder.status_code == 201
    dup = client.post(
        f"/drives/{drive['id']}/root/children",
        json={"name": "New folder", "folder": {}, "@microsoft.graph.conflictBehavior": "fail"},
    )
    assert dup.status_code == 409
    children = client.get(f"/drives/{drive['id']}/root:/Conflicts:/children").json()["value"]
    assert sorted(c["name"] for c in children) == ["a 1.txt", "a.txt"]
    by_path = client.get(f"/drives/{drive['id']}/root:/Conflicts/a.txt").json()
    assert by_path["parentReference"]["path"] == f"/drives/{drive['id']}/root:/Conflicts"


def test_versions_download_older_content(
    client: httpx.Client, plain: httpx.Client, user: Any
) -> None:
    drive = drive_of(client, user)
    item = client.put(f"/drives/{drive['id']}/root:/versioned.txt:/content", content=b"v1").json()
    client.put(f"/drives/{drive['id']}/items/{item['id']}/content", content=b"v2")
    client.put(f"/drives/{drive['id']}/items/{item['id']}/content", content=b"v3")
    versions = client.get(f"/drives/{drive['id']}/items/{item['id']}/versions").json()["value"]
    assert [v["id"] for v in versions] == ["3.0", "2.0", "1.0"]
    old = client.get(f"/drives/{drive['id']}/items/{item['id']}/versions/1.0/content")
    assert old.status_code == 302
    assert plain.get(old.headers["location"]).content == b"v1"


def test_ransomware_overwrites_files_under_new_names(sim: Simulator, client: httpx.Client) -> None:
    victim = sorted(sim.tenant().users.values(), key=lambda u: u.upn)[1]
    drive = drive_of(client, victim)
    _, delta = collect(client, f"/drives/{drive['id']}/root/delta")
    hit = sim.ransomware(sim.tenant().id, victim.id, 3)
    assert len(hit) == 3
    changes, _ = collect(client, delta, headers={"Prefer": "deltaExcludeParent"})
    assert {c["id"] for c in changes} == set(hit)
    for change in changes:
        assert change["name"].endswith(".locked")
        versions = client.get(f"/drives/{drive['id']}/items/{change['id']}/versions").json()[
            "value"
        ]
        assert len(versions) >= 2


def _parts(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        return {n: package.read(n) for n in package.namelist()}


def _library(sim: Simulator) -> str:
    site = next(s for s in sim.tenant().sites.values() if not s.personal)
    drive = sim.tenant().drives[site.drive_ids[0]]
    assert drive.drive_type == "documentLibrary"
    return drive.id


def _session_upload(client: httpx.Client, plain: httpx.Client, path: str, data: bytes) -> Any:
    url = client.post(
        f"{path}:/createUploadSession",
        json={"item": {"@microsoft.graph.conflictBehavior": "replace"}},
    ).json()["uploadUrl"]
    done = plain.put(
        url, content=data, headers={"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}
    )
    assert done.status_code in (200, 201), done.text
    return done.json()


def test_a_library_writes_its_properties_into_office_documents(
    sim: Simulator, client: httpx.Client, plain: httpx.Client
) -> None:
    """SharePoint (not OneDrive) rewrites the Office files a document library receives: a
    customXml part with its properties is added, every part of the package keeps its bytes,
    and the stored size and hash are not those of the bytes sent."""
    library = _library(sim)
    sent = make_docx(["Quarterly plan", "the numbers"])
    put = client.put(f"/drives/{library}/root:/Arrivals/plan.docx:/content", content=sent)
    assert put.status_code == 201
    item = put.json()
    stored = plain.get(item["@microsoft.graph.downloadUrl"]).content
    assert stored != sent
    assert item["size"] == len(stored) != len(sent)
    assert item["file"]["hashes"] == {"quickXorHash": quickxor_b64(stored)}
    before, after = _parts(sent), _parts(stored)
    assert {n: after.get(n) for n in before} == before
    added = set(after) - set(before)
    assert added == {"customXml/item1.xml"}
    assert b"<p:properties" in after["customXml/item1.xml"]
    assert b"ContentTypeId" in after["customXml/item1.xml"]

    # A replacement through an upload session is rewritten too, and so is a new file sent
    # that way.
    again = make_docx(["Quarterly plan", "revised numbers"])
    for name in ("plan.docx", "fresh.docx"):
        done = _session_upload(client, plain, f"/drives/{library}/root:/Arrivals/{name}", again)
        kept = _parts(plain.get(done["@microsoft.graph.downloadUrl"]).content)
        assert {n: kept.get(n) for n in _parts(again)} == _parts(again)
        assert set(kept) - set(_parts(again)) == {"customXml/item1.xml"}
        assert done["size"] != len(again)
    # A package holding the library's part already gets it replaced, not a second one; a
    # customXml part of the document's own (here a bibliography) is kept beside it.
    bibliography = b"<b:Sources xmlns:b='bibliography'/>"
    own = io.BytesIO()
    with zipfile.ZipFile(own, "w") as package:
        for name, body in _parts(sent).items():
            package.writestr(name, body)
        package.writestr("customXml/item1.xml", bibliography)
    for data, expected in ((stored, ["item1.xml"]), (own.getvalue(), ["item1.xml", "item2.xml"])):
        back = client.put(f"/drives/{library}/root:/Arrivals/again.docx:/content", content=data)
        kept = _parts(plain.get(back.json()["@microsoft.graph.downloadUrl"]).content)
        assert sorted(n.removeprefix("customXml/") for n in kept if "customXml/" in n) == expected
        assert sum(b"<p:properties" in body for body in kept.values()) == 1
    assert kept["customXml/item1.xml"] == bibliography
    # The version replaced keeps what the library stored then.
    versions = client.get(f"/drives/{library}/items/{item['id']}/versions").json()["value"]
    assert [v["size"] for v in versions][1:] == [len(stored)]


def test_what_a_library_stores_as_sent(
    sim: Simulator, client: httpx.Client, plain: httpx.Client, user: Any
) -> None:
    """Other files, bytes that are no zip package, and OneDrive uploads keep their bytes."""
    library = _library(sim)
    onedrive = drive_of(client, user)["id"]
    docx = make_docx(["Kept as sent"])
    for drive, name, data in (
        (library, "notes.txt", b"plain text"),
        (library, "broken.docx", b"PK\x03\x04 not really a package"),
        (library, "archive.zip", docx),
        (onedrive, "mine.docx", docx),
    ):
        put = client.put(f"/drives/{drive}/root:/AsSent/{name}:/content", content=data)
        assert put.status_code == 201, name
        assert put.json()["size"] == len(data), name
        assert put.json()["file"]["hashes"] == {"quickXorHash": quickxor_b64(data)}, name
        assert plain.get(put.json()["@microsoft.graph.downloadUrl"]).content == data, name
    # What the simulator generated is what the library already holds: never rewritten.
    generated = [
        i.content.read()
        for i in sim.tenant().drives[library].items.values()
        if i.content is not None and " doc " in i.name and i.name.endswith(".docx")
    ]
    assert generated
    assert not any(n.startswith("customXml/") for data in generated for n in _parts(data))


def test_user_without_licence_has_no_drive(sim: Simulator, client: httpx.Client) -> None:
    added = sim.add_user(sim.tenant().id, "Olaf Nolicence", licensed=False)
    resp = client.get(f"/users/{added['id']}/drive")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "ResourceNotFound"
