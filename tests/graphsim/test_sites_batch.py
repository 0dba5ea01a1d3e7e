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
        ]
    }
    resp = client.post("/$batch", json=payload)
    assert resp.status_code == 200
    by_id = {r["id"]: r for r in resp.json()["responses"]}
    assert by_id["1"]["status"] == 200
    assert by_id["2"]["status"] == 201
    assert by_id["3"]["status"] == 409
    assert by_id["4"]["status"] == 424


def test_batch_is_fully_sequential_or_fully_parallel(client: httpx.Client, user: Any) -> None:
    """A chain may list its requests in any order; anything else that uses ``dependsOn`` (a
    request outside the chain, two chains, a cycle, a request depending on itself) is
    refused whole, and none of its requests runs (a cycle used to hang the batch)."""
    folders = f"/users/{user.id}/mailFolders/inbox/childFolders"

    def make(rid: str, name: str, *deps: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": rid,
            "method": "POST",
            "url": folders,
            "headers": {"Content-Type": "application/json"},
            "body": {"displayName": name},
        }
        if deps:
            out["dependsOn"] = list(deps)
        return out

    def names() -> set[str]:
        listed = client.get(folders, params={"$top": "1000"}).json()["value"]
        return {f["displayName"] for f in listed}

    refused = {
        "outside the chain": [make("1", "o1"), make("2", "o2", "1"), make("3", "o3")],
        "two chains": [
            *(make("1", "t1"), make("2", "t2", "1")),
            *(make("3", "t3"), make("4", "t4", "3")),
        ],
        "two on one": [make("1", "w1"), make("2", "w2", "1"), make("3", "w3", "1")],
        "on two": [make("1", "n1"), make("2", "n2", "1"), make("3", "n3", "1", "2")],
        "cycle": [make("1", "c1"), make("2", "c2", "3"), make("3", "c3", "2")],
        "itself": [make("1", "s1", "1")],
    }
    for case, requests in refused.items():
        answer = client.post("/$batch", json={"requests": requests})
        assert answer.status_code == 400, case
        assert answer.json()["error"]["message"] == (
            "Batch should be either fully sequential or fully parallel."
        )
        made = {str(r["body"]["displayName"]) for r in requests} & names()
        assert made == set(), case
    # One chain listed out of order: 1, then 2, then 4, then 3.
    chain = [make("1", "q1"), make("2", "q2", "1"), make("3", "q3", "4"), make("4", "q4", "2")]
    answer = client.post("/$batch", json={"requests": chain})
    assert answer.status_code == 200
    assert [r["status"] for r in answer.json()["responses"]] == [201, 201, 201, 201]
    assert {"q1", "q2", "q3", "q4"} <= names()


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


def test_batch_inner_urls_are_relative(client: httpx.Client, user: Any) -> None:
    """Graph reads an inner URL as a path under the envelope's surface: an absolute one
    (what msgraph-core's BatchRequestItem sends, msgraph-sdk-python#1015) is a 400 of its
    own, naming the segment it could not find, while the rest of the batch runs."""
    payload = {
        "requests": [
            {
                "id": "1",
                "method": "GET",
                "url": f"https://graph.microsoft.com/v1.0/users/{user.id}",
            },
            {"id": "2", "method": "GET", "url": f"/users/{user.id}"},
            {"id": "3", "method": "GET", "url": f"users/{user.id}"},
        ]
    }
    answer = client.post("/$batch", json=payload)
    assert answer.status_code == 200
    by_id = {r["id"]: r for r in answer.json()["responses"]}
    assert by_id["1"]["status"] == 400
    assert by_id["1"]["body"]["error"]["code"] == "BadRequest"
    assert by_id["1"]["body"]["error"]["message"] == "Resource not found for the segment 'https:'."
    assert by_id["2"]["status"] == by_id["3"]["status"] == 200
    assert by_id["2"]["body"]["id"] == by_id["3"]["body"]["id"] == user.id
