"""Users and licences as discovery reads them, and the control API that changes them."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from msgraph.generated.models.subscribed_sku_collection_response import (
    SubscribedSkuCollectionResponse,
)
from msgraph.generated.models.user_collection_response import UserCollectionResponse

from graphsim import Simulator
from tests.graphsim.conftest import collect, sdk_parse


@pytest.fixture(scope="module")
def control(sim: Simulator):
    with httpx.Client(base_url=f"{sim.base_url}/_sim", verify=sim.ssl_context()) as c:
        yield c


def test_users_with_licences_page_and_parse(sim: Simulator, client: httpx.Client) -> None:
    fields = "id,userPrincipalName,displayName,mail,accountEnabled,assignedLicenses,userType"
    first = client.get("/users", params={"$select": fields, "$top": "2"})
    parsed = sdk_parse(UserCollectionResponse, first.content)
    assert len(parsed.value) == 2
    assert "@odata.nextLink" in first.json()
    values, _ = collect(client, "/users", params={"$select": fields, "$top": "2"})
    assert len(values) == len(sim.tenant().users)
    for value in values:
        assert set(value) == set(fields.split(","))
        assert value["assignedLicenses"][0]["skuId"]
    default = client.get("/users").json()["value"][0]
    assert "assignedLicenses" not in default
    assert "userPrincipalName" in default


def test_directory_pages_by_top_up_to_999_and_never_skips(client: httpx.Client) -> None:
    """The directory's own paging rules (users and groups alike): $top from 1 to 999 (the
    engine asks for 999), no $skip; they were clamped and honoured."""
    for path in ("/users", "/groups"):
        assert client.get(path, params={"$top": "999"}).status_code == 200
        for top in ("1000", "0", "-1", "x"):
            answer = client.get(path, params={"$top": top})
            assert answer.status_code == 400, (path, top)
            error = answer.json()["error"]
            assert error["code"] == "Request_UnsupportedQuery"
            assert error["message"] == (
                f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive."
            )
        skipped = client.get(path, params={"$skip": "1"})
        assert skipped.status_code == 400, path
        assert skipped.json()["error"] == {
            **skipped.json()["error"],
            "code": "Request_BadRequest",
            "message": "'$skip' is not supported by the service.",
        }


def test_subscribed_skus(client: httpx.Client) -> None:
    resp = client.get("/subscribedSkus")
    parsed = sdk_parse(SubscribedSkuCollectionResponse, resp.content)
    enterprise = next(s for s in parsed.value if s.sku_part_number == "ENTERPRISEPREMIUM")
    assert enterprise.consumed_units >= 3
    assert enterprise.prepaid_units.enabled >= enterprise.consumed_units
    assert enterprise.service_plans


def test_control_api_user_licence_and_tenant_lifecycle(
    sim: Simulator, client: httpx.Client, control: httpx.Client
) -> None:
    tenant = sim.tenant().id
    created = control.post(f"/tenants/{tenant}/users", json={"displayName": "Renée Lefèvre"})
    assert created.status_code == 201
    upn = created.json()["userPrincipalName"]
    assert upn.startswith("renee.lefevre@")
    assert client.get(f"/users/{upn}/mailFolders/inbox").status_code == 200
    mime = b"From: a@b.example\r\nTo: " + upn.encode() + b"\r\nSubject: hello\r\n\r\nbody\r\n"
    added = control.post(f"/tenants/{tenant}/users/{upn}/messages?folder=inbox", content=mime)
    assert added.status_code == 201
    assert client.get(f"/users/{upn}/messages/{added.json()['id']}/$value").content == mime
    file = control.post(
        f"/tenants/{tenant}/users/{upn}/files",
        json={"path": "Docs/a.txt", "contentBase64": base64.b64encode(b"hi").decode()},
    )
    assert file.status_code == 201
    edit = control.post(
        f"/tenants/{tenant}/items/{file.json()['id']}/edit",
        json={"contentBase64": base64.b64encode(b"changed").decode()},
    )
    assert edit.status_code == 200
    moved = control.post(
        f"/tenants/{tenant}/items/{added.json()['id']}/move", json={"destination": "archive"}
    )
    assert moved.status_code == 200
    ransom = control.post(f"/tenants/{tenant}/users/{upn}/ransomware", json={"count": 1})
    assert ransom.json()["items"] == [file.json()["id"]]

    sku = control.post(f"/tenants/{tenant}/skus", json={"skuPartNumber": "SPE_E3", "units": 5})
    assert sku.status_code == 201
    assigned = control.post(
        f"/tenants/{tenant}/users/{upn}/licenses", json={"skuId": sku.json()["skuId"]}
    )
    assert assigned.status_code == 200
    skus = {s["skuPartNumber"]: s for s in client.get("/subscribedSkus").json()["value"]}
    assert skus["SPE_E3"]["consumedUnits"] == 1
    assert control.delete(f"/tenants/{tenant}/users/{upn}/licenses").status_code == 200
    users = {
        u["userPrincipalName"]: u
        for u in client.get(
            "/users", params={"$select": "userPrincipalName,assignedLicenses", "$top": "999"}
        ).json()["value"]
    }
    assert users[upn]["assignedLicenses"] == []
    assert client.get(f"/users/{upn}/mailFolders/inbox").status_code == 404
    assert client.get(f"/users/{upn}/drive").status_code == 404

    new_tenant = control.post("/tenants", json={"name": "Empty Co"}).json()
    listed = control.get("/tenants").json()
    assert new_tenant["id"] in [t["id"] for t in listed]
    assert control.get("/tenants/nope/users").status_code in (404, 405)
    assert control.post("/tenants/nope/users", json={"displayName": "x"}).status_code == 404


def test_edit_move_delete_as_a_user_reach_delta(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    tenant = sim.tenant()
    _, contacts_delta = collect(client, f"/users/{user.id}/contacts/delta")
    contact = next(iter(tenant.folder_items(user.contacts_root)))
    sim.edit_item(tenant.id, contact.id, {"jobTitle": "Chief Backup Officer"})
    changes, contacts_delta = collect(client, contacts_delta)
    assert [c["jobTitle"] for c in changes] == ["Chief Backup Officer"]
    sim.delete_item(tenant.id, contact.id)
    changes, _ = collect(client, contacts_delta)
    assert changes == [
        {
            "@odata.type": "#microsoft.graph.contact",
            "id": contact.id,
            "@removed": {"reason": "deleted"},
        }
    ]


ADVANCED = {"ConsistencyLevel": "eventual"}


def test_directory_advanced_queries_need_consistency_level_and_count(
    sim: Simulator, client: httpx.Client
) -> None:
    tenant = sim.tenant().id
    unlicensed = sim.add_user(tenant, "Ulla Unlicensed", licensed=False)
    total = len(sim.tenant().users)
    plain = client.get("/users", params={"$count": "true", "$top": "999"})
    assert plain.status_code == 200
    assert "@odata.count" not in plain.json()  # silently ignored without the header
    counted = client.get("/users", params={"$count": "true"}, headers=ADVANCED).json()
    assert counted["@odata.count"] == total
    licensed = {"$filter": "assignedLicenses/$count ne 0", "$select": "id", "$top": "999"}
    refused = client.get("/users", params=licensed)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "Request_UnsupportedQuery"
    with_count = {**licensed, "$count": "true"}
    found = client.get("/users", params=with_count, headers=ADVANCED).json()
    ids = {u["id"] for u in found["value"]}
    holders = {u.id for u in sim.tenant().users.values() if u.licenses}
    assert unlicensed["id"] not in holders
    assert ids == holders
    assert found["@odata.count"] == len(holders)
    without = {"$filter": "assignedLicenses/$count eq 0", "$count": "true"}
    bare = client.get("/users", params=without, headers=ADVANCED).json()["value"]
    assert {u["id"] for u in bare} == set(sim.tenant().users) - holders
    # A lambda over assignedLicenses works by default.
    sku = next(iter(sim.tenant().skus))
    with_sku = client.get(
        "/users", params={"$filter": f"assignedLicenses/any(x:x/skuId eq {sku})", "$top": "999"}
    )
    assert with_sku.status_code == 200
    assert unlicensed["id"] not in {u["id"] for u in with_sku.json()["value"]}
    assert with_sku.json()["value"]
    ends = {"$filter": "endsWith(userPrincipalName,'" + sim.tenant().domain + "')"}
    assert client.get("/users", params=ends).status_code == 400
    ends_ok = client.get("/users", params={**ends, "$count": "true"}, headers=ADVANCED)
    assert len(ends_ok.json()["value"]) == total
    mixed = {"$filter": "accountEnabled eq true", "$orderby": "displayName"}
    assert client.get("/users", params=mixed).status_code == 400
    assert client.get("/users", params={**mixed, "$count": "true"}, headers=ADVANCED).is_success


def test_directory_count_segment_and_search(sim: Simulator, client: httpx.Client) -> None:
    refused = client.get("/users/$count")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "$count is not currently supported."
    counted = client.get("/users/$count", headers=ADVANCED)
    assert counted.text == str(len(sim.tenant().users))
    someone = sorted(sim.tenant().users.values(), key=lambda u: u.upn)[0]
    word = someone.display_name.split()[-1][:3]
    query = {"$search": f'"displayName:{word}"'}
    assert client.get("/users", params=query).status_code == 400
    hits = client.get("/users", params=query, headers=ADVANCED).json()["value"]
    assert someone.id in {u["id"] for u in hits}
    assert all(
        any(w.lower().startswith(word.lower()) for w in u["displayName"].split()) for u in hits
    )
    either = client.get(
        "/users",
        params={"$search": f'"displayName:{word}" OR "mail:nobody-at-all"'},
        headers=ADVANCED,
    ).json()["value"]
    assert {u["id"] for u in either} == {u["id"] for u in hits}
