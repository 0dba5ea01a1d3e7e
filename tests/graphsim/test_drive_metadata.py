"""Drive item metadata a restore writes back: fileSystemInfo, eTag/cTag, If-Match, deferCommit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from msgraph.generated.models.drive_item import DriveItem

from graphsim import Simulator
from tests.graphsim.conftest import collect, sdk_parse

UNIT = 320 * 1024
CREATED = "2019-03-04T05:06:07Z"
MODIFIED = "2020-01-02T03:04:05Z"


@pytest.fixture(scope="module")
def plain(sim: Simulator):
    with httpx.Client(verify=sim.ssl_context(), timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def drive_id(client: httpx.Client, user: Any) -> str:
    return str(client.get(f"/users/{user.id}/drive").json()["id"])


def stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_patch_file_system_info_sets_the_client_times(client: httpx.Client, drive_id: str) -> None:
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    made = client.put(f"/drives/{drive_id}/root:/Times/report.txt:/content", content=b"one")
    assert made.status_code == 201
    item = made.json()
    _, delta = collect(client, f"/drives/{drive_id}/root/delta")

    patched = client.patch(
        f"/drives/{drive_id}/items/{item['id']}",
        json={"fileSystemInfo": {"createdDateTime": CREATED, "lastModifiedDateTime": MODIFIED}},
    )
    assert patched.status_code == 200
    parsed = sdk_parse(DriveItem, patched.content)
    assert parsed.file_system_info.created_date_time == stamp(CREATED)
    assert parsed.file_system_info.last_modified_date_time == stamp(MODIFIED)
    # Business drives: the client's modified time is the item's too; created stays the
    # service's (the fileSystemInfo reference's "uploaded on Tuesday" example).
    assert patched.json()["lastModifiedDateTime"] == MODIFIED
    assert stamp(patched.json()["createdDateTime"]) >= before
    # A metadata change moves the eTag, not the cTag (the content is the same).
    assert patched.json()["eTag"] != item["eTag"]
    assert patched.json()["cTag"] == item["cTag"]

    again = client.get(f"/drives/{drive_id}/items/{item['id']}").json()
    assert again["fileSystemInfo"] == {"createdDateTime": CREATED, "lastModifiedDateTime": MODIFIED}
    changes, _ = collect(client, delta, headers={"Prefer": "deltaExcludeParent"})
    assert [c["id"] for c in changes] == [item["id"]]
    assert changes[0]["fileSystemInfo"]["lastModifiedDateTime"] == MODIFIED

    only_modified = client.patch(
        f"/drives/{drive_id}/items/{item['id']}",
        json={"fileSystemInfo": {"lastModifiedDateTime": "2021-05-06T07:08:09Z"}},
    ).json()
    assert only_modified["fileSystemInfo"] == {
        "createdDateTime": CREATED,
        "lastModifiedDateTime": "2021-05-06T07:08:09Z",
    }
    bad = client.patch(
        f"/drives/{drive_id}/items/{item['id']}",
        json={"fileSystemInfo": {"lastModifiedDateTime": "yesterday"}},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalidRequest"


def test_new_content_resets_the_modified_time_but_keeps_created(
    client: httpx.Client, drive_id: str
) -> None:
    item = client.put(f"/drives/{drive_id}/root:/Times/kept.txt:/content", content=b"1").json()
    client.patch(
        f"/drives/{drive_id}/items/{item['id']}",
        json={"fileSystemInfo": {"createdDateTime": CREATED, "lastModifiedDateTime": MODIFIED}},
    )
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    replaced = client.put(f"/drives/{drive_id}/items/{item['id']}/content", content=b"2").json()
    assert replaced["fileSystemInfo"]["createdDateTime"] == CREATED
    assert stamp(replaced["fileSystemInfo"]["lastModifiedDateTime"]) >= before
    assert replaced["cTag"] != item["cTag"]


def test_upload_session_item_carries_file_system_info(
    client: httpx.Client, plain: httpx.Client, drive_id: str
) -> None:
    times = {"createdDateTime": CREATED, "lastModifiedDateTime": MODIFIED}
    session = client.post(
        f"/drives/{drive_id}/root:/Times/session.bin:/createUploadSession",
        json={"item": {"@microsoft.graph.conflictBehavior": "fail", "fileSystemInfo": times}},
    )
    assert session.status_code == 200
    done = plain.put(
        session.json()["uploadUrl"], content=b"x" * 10, headers={"Content-Range": "bytes 0-9/10"}
    )
    assert done.status_code == 201
    assert sdk_parse(DriveItem, done.content).file_system_info.created_date_time == stamp(CREATED)
    assert done.json()["fileSystemInfo"] == times
    assert done.json()["lastModifiedDateTime"] == MODIFIED

    newer = {"lastModifiedDateTime": "2022-02-02T02:02:02Z"}
    replace = client.post(
        f"/drives/{drive_id}/items/{done.json()['id']}/createUploadSession",
        json={"item": {"@microsoft.graph.conflictBehavior": "replace", "fileSystemInfo": newer}},
    )
    again = plain.put(
        replace.json()["uploadUrl"], content=b"y" * 4, headers={"Content-Range": "bytes 0-3/4"}
    )
    assert again.status_code == 200
    assert again.json()["fileSystemInfo"] == {
        "createdDateTime": CREATED,
        "lastModifiedDateTime": "2022-02-02T02:02:02Z",
    }
    refused = client.post(
        f"/drives/{drive_id}/root:/Times/other.bin:/createUploadSession",
        json={"item": {"fileSystemInfo": {"createdDateTime": 12}}},
    )
    assert refused.status_code == 400


def test_if_match_guards_writes_with_412(client: httpx.Client, drive_id: str) -> None:
    item = client.put(f"/drives/{drive_id}/root:/Times/guarded.txt:/content", content=b"a").json()
    stale = item["eTag"]
    renamed = client.patch(
        f"/drives/{drive_id}/items/{item['id']}",
        json={"name": "guarded-2.txt"},
        headers={"if-match": stale},
    )
    assert renamed.status_code == 200
    lost = client.patch(
        f"/drives/{drive_id}/items/{item['id']}",
        json={"name": "guarded-3.txt"},
        headers={"if-match": stale},
    )
    assert lost.status_code == 412
    assert lost.json()["error"]["code"] == "resourceModified"
    # The cTag did not move with the rename: it still matches, for content writes.
    by_ctag = client.put(
        f"/drives/{drive_id}/items/{item['id']}/content",
        content=b"b",
        headers={"if-match": item["cTag"]},
    )
    assert by_ctag.status_code == 200
    # New bytes moved the cTag: the one read before no longer matches anything.
    refused = client.delete(
        f"/drives/{drive_id}/items/{item['id']}", headers={"if-match": item["cTag"]}
    )
    assert refused.status_code == 412
    current = client.get(f"/drives/{drive_id}/items/{item['id']}").json()["eTag"]
    gone = client.delete(f"/drives/{drive_id}/items/{item['id']}", headers={"if-match": current})
    assert gone.status_code == 204


def test_deferred_commit_waits_for_the_post(
    client: httpx.Client, plain: httpx.Client, drive_id: str
) -> None:
    data = b"d" * (UNIT + 17)
    session = client.post(
        f"/drives/{drive_id}/root:/Times/deferred.bin:/createUploadSession",
        json={"item": {"@microsoft.graph.conflictBehavior": "fail"}, "deferCommit": True},
    ).json()
    url = session["uploadUrl"]
    early = plain.post(url, content=b"")
    assert early.status_code == 400
    first = plain.put(
        url, content=data[:UNIT], headers={"Content-Range": f"bytes 0-{UNIT - 1}/{len(data)}"}
    )
    assert first.status_code == 202
    last = plain.put(
        url,
        content=data[UNIT:],
        headers={"Content-Range": f"bytes {UNIT}-{len(data) - 1}/{len(data)}"},
    )
    assert last.status_code == 202
    assert last.json()["nextExpectedRanges"] == []
    assert client.get(f"/drives/{drive_id}/root:/Times/deferred.bin").status_code == 404
    committed = plain.post(url, content=b"")
    assert committed.status_code == 201
    assert sdk_parse(DriveItem, committed.content).size == len(data)
    assert client.get(f"/drives/{drive_id}/root:/Times/deferred.bin").json()["size"] == len(data)
    assert plain.get(url).status_code == 404


def test_library_file_times_reach_its_list_item(sim: Simulator, client: httpx.Client) -> None:
    site = next(s for s in client.get("/sites").json()["value"] if "/sites/" in s["webUrl"])
    library = client.get(f"/sites/{site['id']}/drive").json()
    made = client.put(
        f"/drives/{library['id']}/root:/dated.txt:/content", content=b"minutes"
    ).json()
    client.patch(
        f"/drives/{library['id']}/items/{made['id']}",
        json={"fileSystemInfo": {"lastModifiedDateTime": MODIFIED}},
    )
    documents = next(
        lst
        for lst in client.get(f"/sites/{site['id']}/lists").json()["value"]
        if lst["list"]["template"] == "documentLibrary"
    )
    rows = client.get(
        f"/sites/{site['id']}/lists/{documents['id']}/items", params={"$expand": "fields"}
    ).json()["value"]
    row = next(r for r in rows if r["fields"].get("FileLeafRef") == "dated.txt")
    assert row["fields"]["Modified"] == MODIFIED
    assert row["lastModifiedDateTime"] == MODIFIED


def test_upload_url_refuses_a_bearer_token(
    client: httpx.Client, plain: httpx.Client, drive_id: str
) -> None:
    url = client.post(
        f"/drives/{drive_id}/root:/Times/tokenless.bin:/createUploadSession", json={}
    ).json()["uploadUrl"]
    leaked = plain.put(
        url,
        content=b"abc",
        headers={"Content-Range": "bytes 0-2/3", "Authorization": "Bearer nope"},
    )
    assert leaked.status_code == 401
    assert plain.put(url, content=b"abc", headers={"Content-Range": "bytes 0-2/3"}).is_success
