"""SharePoint sites, lists and list-item delta; ``$batch`` with dependencies."""

from __future__ import annotations

from typing import Any

import httpx
from msgraph.generated.models.list_item_collection_response import ListItemCollectionResponse
from msgraph.generated.models.site_collection_response import SiteCollectionResponse

from graphsim import Simulator
from tests.graphsim.conftest import collect, sdk_parse


def team_site(client: httpx.Client) -> dict[str, Any]:
    sites = client.get("/sites", params={"search": "*"})
    parsed = sdk_parse(SiteCollectionResponse, sites.content)
    assert parsed.value
    return next(s for s in sites.json()["value"] if "/sites/" in s["webUrl"])


def test_sites_drives_and_lists(client: httpx.Client) -> None:
    everything = client.get("/sites/getAllSites").json()["value"]
    assert any("/personal/" in s["webUrl"] for s in everything)
    root = client.get("/sites/root").json()
    assert "root" in root
    assert len(root["id"].split(",")) == 3
    site = team_site(client)
    drives = client.get(f"/sites/{site['id']}/drives").json()["value"]
    assert [d["driveType"] for d in drives] == ["documentLibrary"]
    files, _ = collect(client, f"/drives/{drives[0]['id']}/root/delta")
    assert any(f["name"].endswith(".docx") for f in files)
    host, path = site["webUrl"].removeprefix("https://").split("/", 1)
    by_path = client.get(f"/sites/{host}:/{path}")
    assert by_path.json()["id"] == site["id"]
    by_path_drives = client.get(f"/sites/{host}:/{path}:/drives").json()["value"]
    assert [d["id"] for d in by_path_drives] == [d["id"] for d in drives]
    lists = client.get(f"/sites/{site['id']}/lists").json()["value"]
    templates = {item["list"]["template"] for item in lists}
    assert {"documentLibrary", "genericList", "sharingLinks"} <= templates


def test_list_items_with_fields_and_delta(sim: Simulator, client: httpx.Client) -> None:
    site = team_site(client)
    tracker = next(
        item
        for item in client.get(f"/sites/{site['id']}/lists").json()["value"]
        if item["list"]["template"] == "genericList"
    )
    base = f"/sites/{site['id']}/lists/{tracker['id']}/items"
    listed = client.get(base, params={"expand": "fields"})
    parsed = sdk_parse(ListItemCollectionResponse, listed.content)
    assert parsed.value
    assert all("Title" in i["fields"] for i in listed.json()["value"])
    values, delta = collect(
        client,
        f"{base}/delta",
        params={"expand": "fields"},
        headers={"Prefer": "odata.maxpagesize=3"},
    )
    assert len(values) == len(listed.json()["value"])

    created = client.post(base, json={"fields": {"Title": "New issue", "Status": "New"}})
    assert created.status_code == 201
    bad = client.post(base, json={"fields": {"Nope": 1}})
    assert bad.status_code == 400
    first = values[0]["id"]
    assert client.patch(f"{base}/{first}/fields", json={"Status": "Resolved"}).status_code == 200
    second = values[1]["id"]
    assert client.delete(f"{base}/{second}").status_code == 204
    sim.add_list_item(sim.tenant().id, tracker["id"], {"Title": "From control"})
    changes, _ = collect(client, delta)
    by_id = {c["id"]: c for c in changes}
    assert set(by_id) == {created.json()["id"], first, second, str(int(created.json()["id"]) + 1)}
    assert by_id[first]["fields"]["Status"] == "Resolved"
    assert by_id[second]["deleted"] == {"state": "deleted"}


def test_batch_runs_requests_with_dependencies(client: httpx.Client, user: Any) -> None:
    make_folder = {  # sent twice: the second, run after the first, finds the name taken
        "method": "POST",
        "url": f"/users/{user.id}/mailFolders/inbox/childFolders",
        "headers": {"Content-Type": "application/json"},
        "body": {"displayName": "Batch made"},
    }
    payload = {
        "requests": [
            {"id": "1", "method": "GET", "url": f"/users/{user.id}/mailFolders/inbox"},
            {"id": "2", **make_folder, "dependsOn": ["1"]},
            {"id": "3", **make_folder, "dependsOn": ["2"]},
            {"id": "4", "method": "GET", "url": "/users?$top=1", "dependsOn": ["3"]},
            {"id": "5", "method": "GET", "url": f"/users/{user.id}/drive"},
        ]
    }
    resp = client.post("/$batch", json=payload)
    assert resp.status_code == 200
    by_id = {r["id"]: r for r in resp.json()["responses"]}
    assert by_id["1"]["status"] == 200
    assert by_id["2"]["status"] == 201
    assert by_id["3"]["status"] == 409
    assert by_id["4"]["status"] == 424
    assert by_id["5"]["status"] == 200
    assert by_id["5"]["body"]["driveType"] == "business"


def test_batch_limits(client: httpx.Client, user: Any) -> None:
    too_many = {"requests": [{"id": str(n), "method": "GET", "url": "/users"} for n in range(21)]}
    assert client.post("/$batch", json=too_many).status_code == 400
    duplicate = {"requests": [{"id": "1", "method": "GET", "url": "/users"}] * 2}
    assert client.post("/$batch", json=duplicate).status_code == 400
    no_type = {"requests": [{"id": "1", "method": "POST", "url": "/users/x/messages", "body": {}}]}
    assert client.post("/$batch", json=no_type).status_code == 400


def test_batch_inner_requests_are_throttled_on_their_own(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    sim.set_throttling(mailbox_requests=3, mailbox_window_s=30.0)
    try:
        payload = {
            "requests": [
                {"id": str(n), "method": "GET", "url": f"/users/{user.id}/mailFolders/inbox"}
                for n in range(5)
            ]
        }
        responses = client.post("/$batch", json=payload).json()["responses"]
        throttled = [r for r in responses if r["status"] == 429]
        assert throttled
        assert all("Retry-After" in r["headers"] for r in throttled)
    finally:
        sim.set_throttling(mailbox_requests=10_000, mailbox_window_s=600.0)
        sim.engine.throttler.reset()
