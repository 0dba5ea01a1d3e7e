"""Getting data back through the API: browse at a point in time, download with ranges,
restore and export jobs, search — over a tenant really backed up from graphsim."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

import httpx

from safekeep.backup.jobs.export import run_export_job
from safekeep.backup.jobs.restore import run_restore_job
from tests.backup.harness import EngineHarness


def sim_files(h: EngineHarness, user_graph_id: str) -> dict[str, bytes]:
    """name -> bytes of the user's files in graphsim (the truth to compare with)."""
    tenant = h.sim.tenant()
    user = tenant.users[user_graph_id]
    drive = tenant.drives[user.drive_id or ""]
    return {
        i.name: i.content.read()
        for i in drive.items.values()
        if not i.is_folder and not i.deleted and i.content is not None
    }


def sim_places(h: EngineHarness, user_graph_id: str) -> dict[str, tuple[str, str]]:
    """name -> (driveItem id, path of its folder) of the user's files in graphsim."""
    tenant = h.sim.tenant()
    drive = tenant.drives[tenant.users[user_graph_id].drive_id or ""]
    return {
        i.name: (i.id, drive.path_of(i).rsplit("/", 1)[0] or "/")
        for i in drive.items.values()
        if not i.is_folder and not i.deleted
    }


async def walk(
    api: httpx.AsyncClient, h: EngineHarness, base: str, service: str, folder: str | None = None
) -> list[dict]:
    """Every item of an account and service, by walking the folder tree through the API."""
    found: list[dict] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"service": service, "limit": 50}
        if folder:
            params["folder"] = folder
        if cursor:
            params["cursor"] = cursor
        r = await api.get(base, params=params, headers=h.msp.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        for item in page["items"]:
            found.append(item)
            if item["is_folder"]:
                found += await walk(api, h, base, service, item["id"])
        cursor = page["next_cursor"]
        if not cursor:
            return found


async def test_browse_download_restore_export_and_search(
    engine: EngineHarness, api: httpx.AsyncClient
) -> None:
    h = engine
    account = next(
        a for a in await h.accounts() if a.kind == "user" and a.services_found.get("onedrive")
    )
    await h.backup(account, "onedrive")
    base = f"/v1/tenants/{h.tenant.id}/accounts/{account.id}/items"
    items = await walk(api, h, base, "onedrive")
    files = {i["name"]: i for i in items if not i["is_folder"]}
    truth = sim_files(h, account.graph_id)
    assert set(files) == set(truth)
    # Each item names its Microsoft 365 identity: the driveItem id and the folder it is in.
    where = sim_places(h, account.graph_id)
    for file_name, entry in files.items():
        assert (entry["external_id"], entry["folder_path"]) == where[file_name]

    # download: whole, ranged, conditional on the ETag; every download audited
    name, item = max(files.items(), key=lambda kv: kv[1]["size"])
    r = await api.get(item["links"]["content"], headers=h.msp.headers)
    assert r.status_code == 200 and r.content == truth[name]
    assert r.headers["accept-ranges"] == "bytes" and int(r.headers["content-length"]) == len(
        truth[name]
    )
    etag = r.headers["etag"]
    r = await api.get(
        item["links"]["content"],
        headers={**h.msp.headers, "Range": "bytes=10-19", "If-Range": etag},
    )
    assert r.status_code == 206 and r.content == truth[name][10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(truth[name])}"
    r = await api.get(
        item["links"]["content"],
        headers={**h.msp.headers, "Range": f"bytes={len(truth[name]) + 5}-"},
    )
    assert r.status_code == 416
    # a download manager's HEAD first: the same headers, no bytes, no download audited
    for extra, status in (({}, 200), ({"Range": "bytes=10-19", "If-Range": etag}, 206)):
        r = await api.head(item["links"]["content"], headers={**h.msp.headers, **extra})
        assert r.status_code == status and r.content == b""
        assert r.headers["etag"] == etag and r.headers["accept-ranges"] == "bytes"
        assert r.headers["content-length"] == str(len(truth[name]) if status == 200 else 10)
        assert r.headers.get("content-range") == (
            f"bytes 10-19/{len(truth[name])}" if status == 206 else None
        )
    audit = (
        await api.get(
            "/v1/audit-events", params={"action": "item.downloaded"}, headers=h.msp.headers
        )
    ).json()
    assert len(audit["items"]) == 2  # the 416 downloaded nothing

    # an edit in Microsoft 365, a second backup: two versions, the earlier one still served
    h.sim.edit_item(h.sim_tenant_id, _graph_id(h, account, name), {"content": b"edited!"})
    await h.backup(account, "onedrive")
    versions = (await api.get(f"{base}/{item['id']}/versions", headers=h.msp.headers)).json()[
        "versions"
    ]
    assert len(versions) == 2 and versions[0]["last_seq"] is None and versions[1]["last_seq"] == 1
    listed = (await api.get(f"{base}/{item['id']}/versions", headers=h.msp.headers)).json()
    assert listed["external_id"] == item["external_id"]
    assert {v["folder_path"] for v in versions} == {item["folder_path"]}
    one = (await api.get(f"{base}/{item['id']}", headers=h.msp.headers)).json()
    assert (one["external_id"], one["folder_path"]) == (item["external_id"], item["folder_path"])
    first_snapshot = (
        await api.get(
            f"/v1/tenants/{h.tenant.id}/snapshots",
            params={"account_id": str(account.id)},
            headers=h.msp.headers,
        )
    ).json()["items"][-1]
    old = await api.get(
        item["links"]["content"].split("?")[0],
        params={"at": first_snapshot["id"]},
        headers=h.msp.headers,
    )
    assert old.content == truth[name]
    new = await api.get(item["links"]["content"].split("?")[0], headers=h.msp.headers)
    assert new.content == b"edited!"

    async def restore_first_version(conflict: str) -> dict[str, Any]:
        """Restore the earlier version over the edited file, as a job; the finished job."""
        r = await api.post(
            f"/v1/tenants/{h.tenant.id}/restores",
            json={
                "scope": {
                    "type": "items",
                    "account_id": str(account.id),
                    "service": "onedrive",
                    "item_ids": [item["id"]],
                },
                "snapshot_id": first_snapshot["id"],
                "conflict": conflict,
            },
            headers=h.msp.headers,
        )
        assert r.status_code == 202, r.text
        await run_restore_job(h.runtime, r.json()["id"])
        job: dict[str, Any] = (
            await api.get(f"/v1/jobs/{r.json()['id']}", headers=h.msp.headers)
        ).json()
        return job

    job = await restore_first_version("overwrite")
    assert job["status"] == "succeeded", job
    assert job["result"]["totals"]["restored"] == 1
    assert job["restore"] == {
        "restored": 1,
        "skipped_existing": 0,
        "skipped": 0,
        "failed": 0,
        "noted": 1,  # it replaced the file's newer content
        "bytes": job["result"]["totals"]["bytes"],
        "observed": 0,
    }
    assert [(i["code"], i["detail"]) for i in job["issues"]] == [
        (
            "restored_with_note",
            "replaced its content changed since the restore point (the replaced content "
            "stays in the file's version history)",
        )
    ]
    # The same restore with conflict skip: the file is there, left alone, and that is success.
    job = await restore_first_version("skip")
    assert job["status"] == "succeeded", job
    assert (job["restore"]["restored"], job["restore"]["skipped_existing"]) == (0, 1)
    assert sim_files(h, account.graph_id)[name] == truth[name]

    # export the account's OneDrive as of the first snapshot; hashes match the originals
    r = await api.post(
        f"/v1/tenants/{h.tenant.id}/exports",
        json={
            "scope": {"type": "service", "account_id": str(account.id), "service": "onedrive"},
            "snapshot_id": first_snapshot["id"],
        },
        headers=h.msp.headers,
    )
    assert r.status_code == 202, r.text
    export = r.json()
    await run_export_job(h.runtime, str(export["job_id"]))
    export = (await api.get(f"/v1/exports/{export['id']}", headers=h.msp.headers)).json()
    assert export["status"] == "ready"
    whole = await api.get(f"/v1/exports/{export['id']}/download", headers=h.msp.headers)
    assert (
        whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == export["sha256"]
    )
    half = len(whole.content) // 2
    tail = await api.get(
        f"/v1/exports/{export['id']}/download", headers={**h.msp.headers, "Range": f"bytes={half}-"}
    )
    assert tail.status_code == 206 and whole.content[:half] + tail.content == whole.content
    downloads = {"action": "export.downloaded"}
    audited = (await api.get("/v1/audit-events", params=downloads, headers=h.msp.headers)).json()
    head = await api.head(
        f"/v1/exports/{export['id']}/download", headers={**h.msp.headers, "Range": f"bytes={half}-"}
    )
    assert head.status_code == 206 and head.content == b""
    assert {k: head.headers[k] for k in ("content-length", "content-range", "etag")} == {
        k: tail.headers[k] for k in ("content-length", "content-range", "etag")
    }
    again = (await api.get("/v1/audit-events", params=downloads, headers=h.msp.headers)).json()
    assert len(again["items"]) == len(audited["items"]) == 2  # the two GETs; the HEAD is none
    archive = zipfile.ZipFile(io.BytesIO(whole.content))
    manifest = json.loads(archive.read("manifest.json"))
    by_name = {f["path"].rsplit("/", 1)[-1]: f for f in manifest["files"]}
    for file_name, data in truth.items():
        assert by_name[file_name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert archive.read(by_name[file_name]["path"]) == data
    r = await api.get(f"/v1/exports/{export['id']}/url", headers=h.msp.headers)
    assert r.status_code == 409  # the embedded blob store has no pre-signed URLs

    # search finds the file by its name and the API links back to browse
    r = await api.get(
        f"/v1/tenants/{h.tenant.id}/search",
        params={"q": name.rsplit(".", 1)[0]},
        headers=h.msp.headers,
    )
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert any(hit["item_id"] == item["id"] for hit in hits)
    mine = next(hit for hit in hits if hit["item_id"] == item["id"])
    assert mine["external_id"] == item["external_id"]
    assert hits[0]["links"]["item"].startswith(f"/v1/tenants/{h.tenant.id}/accounts/")


def _graph_id(h: EngineHarness, account: object, name: str) -> str:
    tenant = h.sim.tenant()
    user = tenant.users[account.graph_id]  # type: ignore[attr-defined]
    drive = tenant.drives[user.drive_id or ""]
    return next(i.id for i in drive.items.values() if i.name == name and not i.deleted)


async def test_a_download_whose_stored_bytes_are_unreadable_fails_before_its_answer(
    engine: EngineHarness, api: httpx.AsyncClient
) -> None:
    """The status and length of a download go out before its body. When the stored bytes
    cannot be read (here: gone from the store behind the catalog's back), the client gets a
    problem answer, not a 200 whose body stops short, and no download is audited."""
    h = engine
    account = next(
        a for a in await h.accounts() if a.kind == "user" and a.services_found.get("onedrive")
    )
    await h.backup(account, "onedrive")
    base = f"/v1/tenants/{h.tenant.id}/accounts/{account.id}/items"
    files = [i for i in await walk(api, h, base, "onedrive") if not i["is_folder"]]
    item = max(files, key=lambda i: i["size"])
    assert (await api.get(item["links"]["content"], headers=h.msp.headers)).status_code == 200
    store = await h.runtime.blobs()
    gone = [key async for key in store.list(h.tenant.storage_prefix)]
    assert gone
    for key in gone:
        await store.delete(key)
    r = await api.get(item["links"]["content"], headers=h.msp.headers)
    assert r.status_code >= 500 and r.headers["content-type"] == "application/problem+json"
    audit = await api.get(
        "/v1/audit-events", params={"action": "item.downloaded"}, headers=h.msp.headers
    )
    assert len(audit.json()["items"]) == 1  # the first download only
