"""SharePoint lists a restore re-creates (generic lists, document libraries) and list delta."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from msgraph.generated.models.column_definition_collection_response import (
    ColumnDefinitionCollectionResponse,
)
from msgraph.generated.models.drive import Drive
from msgraph.generated.models.list_ import List_
from msgraph.generated.models.list_item_collection_response import ListItemCollectionResponse

from graphsim import Simulator
from tests.graphsim.conftest import collect, sdk_parse


@pytest.fixture(scope="module")
def site(client: httpx.Client) -> dict[str, Any]:
    sites = client.get("/sites").json()["value"]
    return next(s for s in sites if "/sites/" in s["webUrl"])


def create(client: httpx.Client, site: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    return client.post(f"/sites/{site['id']}/lists", json=body)


def test_create_generic_list_with_columns(client: httpx.Client, site: dict[str, Any]) -> None:
    made = create(
        client,
        site,
        {
            "displayName": "Books",
            "columns": [{"name": "Author", "text": {}}, {"name": "PageCount", "number": {}}],
            "list": {"template": "genericList"},
        },
    )
    assert made.status_code == 201
    parsed = sdk_parse(List_, made.content)
    assert parsed.display_name == "Books"
    assert parsed.list_.template == "genericList"
    assert made.json()["webUrl"] == f"{site['webUrl']}/Lists/Books"
    base = f"/sites/{site['id']}/lists/{made.json()['id']}"
    columns = client.get(f"{base}/columns")
    names = {c.name for c in sdk_parse(ColumnDefinitionCollectionResponse, columns.content).value}
    assert {"Title", "Author", "PageCount"} <= names
    page_count = next(c for c in columns.json()["value"] if c["name"] == "PageCount")
    assert "number" in page_count
    item = client.post(f"{base}/items", json={"fields": {"Title": "Dune", "PageCount": 412}})
    assert item.status_code == 201
    assert item.json()["fields"]["PageCount"] == 412
    listed = client.get(f"/sites/{site['id']}/lists").json()["value"]
    assert made.json()["id"] in {lst["id"] for lst in listed}
    # No list facet: the genericList template.
    default = create(client, site, {"displayName": "Plain notes"})
    assert default.status_code == 201
    assert default.json()["list"]["template"] == "genericList"
    assert client.get(f"/sites/{site['id']}/lists/{default.json()['id']}/drive").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"displayName": "Books"}, 409, "nameAlreadyExists"),
        ({"displayName": "BOOKS", "list": {"template": "documentLibrary"}}, 409, None),
        ({"displayName": "Odd", "list": {"template": "generic"}}, 400, "invalidRequest"),
        ({"displayName": "Links", "list": {"template": "sharingLinks"}}, 400, "invalidRequest"),
        ({"name": "Books2", "displayName": "Books 2"}, 400, "invalidRequest"),
        ({"columns": [{"name": "A", "text": {}}]}, 400, "invalidRequest"),
        ({"displayName": "Dup", "columns": [{"name": "Title", "text": {}}]}, 400, None),
        ({"displayName": "Nameless", "columns": [{"text": {}}]}, 400, None),
    ],
)
def test_create_list_errors(
    client: httpx.Client, site: dict[str, Any], body: dict[str, Any], status: int, code: str | None
) -> None:
    if not any(lst["displayName"] == "Books" for lst in lists_of(client, site)):
        assert create(client, site, {"displayName": "Books"}).status_code == 201
    resp = create(client, site, body)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert set(error) >= {"code", "message", "innerError"}
    if code:
        assert error["code"] == code
    assert not any(
        lst["displayName"] in ("Odd", "Links", "Books 2", "Dup", "Nameless")
        for lst in lists_of(client, site)
    )


def lists_of(client: httpx.Client, site: dict[str, Any]) -> list[dict[str, Any]]:
    return list(client.get(f"/sites/{site['id']}/lists").json()["value"])


def test_document_library_gets_a_drive(client: httpx.Client, site: dict[str, Any]) -> None:
    made = create(
        client, site, {"displayName": "Contracts 2024", "list": {"template": "documentLibrary"}}
    )
    assert made.status_code == 201
    assert made.json()["webUrl"] == f"{site['webUrl']}/Contracts%202024"
    base = f"/sites/{site['id']}/lists/{made.json()['id']}"
    drive = client.get(f"{base}/drive")
    assert drive.status_code == 200
    parsed = sdk_parse(Drive, drive.content)
    assert parsed.drive_type == "documentLibrary"
    assert parsed.name == "Contracts 2024"
    site_drives = client.get(f"/sites/{site['id']}/drives").json()["value"]
    assert parsed.id in {d["id"] for d in site_drives}
    uploaded = client.put(f"/drives/{parsed.id}/root:/Signed/nda.txt:/content", content=b"nda")
    assert uploaded.status_code == 201
    via_list = client.get(f"{base}/drive/root:/Signed:/children").json()["value"]
    assert [c["name"] for c in via_list] == ["nda.txt"]
    rows = client.get(f"{base}/items", params={"$expand": "fields"})
    parsed_rows = sdk_parse(ListItemCollectionResponse, rows.content)
    assert len(parsed_rows.value) == 2  # the folder and the file
    assert {r["fields"]["FileLeafRef"] for r in rows.json()["value"]} == {"Signed", "nda.txt"}
    refused = client.post(f"{base}/items", json={"fields": {"Title": "x"}})
    assert refused.status_code == 400


def test_delete_list_takes_its_drive(client: httpx.Client, site: dict[str, Any]) -> None:
    made = create(client, site, {"displayName": "Scratch", "list": {"template": "documentLibrary"}})
    base = f"/sites/{site['id']}/lists/{made.json()['id']}"
    drive_id = client.get(f"{base}/drive").json()["id"]
    assert client.delete(base).status_code == 204
    assert client.get(base).status_code == 404
    assert client.get(f"/drives/{drive_id}").status_code == 404
    again = create(client, site, {"displayName": "Scratch", "list": {"template": "genericList"}})
    assert again.status_code == 201
    assert again.json()["id"] != made.json()["id"]


def tracker(client: httpx.Client, site: dict[str, Any]) -> dict[str, Any]:
    return next(lst for lst in lists_of(client, site) if lst["displayName"] == "Issue tracker")


def test_expired_list_delta_location_keeps_the_query(
    sim: Simulator, client: httpx.Client, site: dict[str, Any]
) -> None:
    lst = tracker(client, site)
    path = f"/sites/{site['id']}/lists/{lst['id']}/items/delta"
    values, delta = collect(client, path, params={"$expand": "fields($select=Title,Status)"})
    assert values
    assert all(set(v["fields"]) <= {"@odata.etag", "Title", "Status"} for v in values)
    sim.expire_delta_tokens(sim.tenant().id, lst["id"])
    expired = client.get(delta)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "resyncRequired"
    location = expired.headers["location"]
    assert location.startswith(f"{sim.graph_url}{path}?")
    again, fresh_delta = collect(client, location)
    assert {v["id"] for v in again} == {v["id"] for v in values}
    assert all(set(v["fields"]) == {"@odata.etag", "Title", "Status"} for v in again)
    assert not any("deleted" in v for v in again)
    sim.add_list_item(sim.tenant().id, lst["id"], {"Title": "After resync", "Status": "New"})
    changes, _ = collect(client, fresh_delta)
    assert [c["fields"]["Title"] for c in changes] == ["After resync"]


def test_expired_drive_delta_location_keeps_select(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    drive_id = client.get(f"/users/{user.id}/drive").json()["id"]
    path = f"/drives/{drive_id}/root/delta"
    values, delta = collect(client, path, params={"$select": "id,name,file"})
    assert all(set(v) <= {"id", "name", "file", "@odata.etag"} for v in values)
    sim.expire_delta_tokens(sim.tenant().id, drive_id)
    expired = client.get(delta)
    assert expired.status_code == 410
    again, _ = collect(client, expired.headers["location"])
    assert {v["id"] for v in again} == {v["id"] for v in values}
    assert all(set(v) <= {"id", "name", "file", "@odata.etag"} for v in again)


def test_select_on_list_items_keeps_expanded_fields(
    client: httpx.Client, site: dict[str, Any]
) -> None:
    lst = tracker(client, site)
    rows = client.get(
        f"/sites/{site['id']}/lists/{lst['id']}/items",
        params={"$select": "id,eTag", "$expand": "fields($select=Title)"},
    ).json()["value"]
    assert rows
    for row in rows:
        assert set(row) - {"@odata.etag", "fields@odata.context"} == {"id", "eTag", "fields"}
        assert set(row["fields"]) == {"@odata.etag", "Title"}
