"""Partial delta updates (``graphsim.changes``): with the switch on, an incremental round sends
an updated contact, message or folder as its id, change key and changed properties only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from graphsim import Simulator
from tests.graphsim.conftest import collect, graph_client

ETAGGED = {"@odata.etag", "id", "changeKey"}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=11, users=1, messages=12, contacts=6, consented=True) as running:
        yield running


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with graph_client(sim) as c:
        yield c


def _user(sim: Simulator) -> Any:
    return next(iter(sim.tenant().users.values()))


def _by_id(values: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in values}


def test_updates_carry_exactly_the_properties_changed_since_the_token(
    sim: Simulator, client: httpx.Client
) -> None:
    user = _user(sim)
    tenant = sim.tenant()
    sim.set_partial_delta_updates(True)
    contacts_url = f"/users/{user.id}/contacts/delta"
    first, link = collect(client, contacts_url)
    assert all("createdDateTime" in c for c in first)  # the first enumeration: whole
    edited, untouched = first[0]["id"], first[1]["id"]

    # Two edits of different properties between rounds, one clearing a property to null.
    assert client.patch(f"/users/{user.id}/contacts/{edited}", json={"jobTitle": "CTO"}).is_success
    sim.edit_item(tenant.id, edited, {"companyName": None})
    new = sim.add_contact(tenant.id, user.id, given_name="Nova", surname="Newman")
    values, link = collect(client, link)
    got = _by_id(values)
    assert set(got) == {edited, new}
    assert set(got[edited]) == ETAGGED | {"jobTitle", "companyName"}
    assert got[edited]["jobTitle"] == "CTO" and got[edited]["companyName"] is None
    assert got[edited]["changeKey"] == tenant.items[edited].change_key
    assert got[new]["givenName"] == "Nova" and "createdDateTime" in got[new]  # created: whole
    assert untouched not in got

    # A later round starts from the later token: only what changed after it.
    sim.edit_item(tenant.id, edited, {"department": "Research"})
    values, _ = collect(client, link)
    assert [set(v) for v in values] == [ETAGGED | {"department"}]

    # Mail folders: a rename is the name alone.
    _, folder_link = collect(client, f"/users/{user.id}/mailFolders/delta")
    inbox = user.well_known["inbox"]
    renamed = client.patch(f"/users/{user.id}/mailFolders/{inbox}", json={"displayName": "In"})
    assert renamed.is_success
    values, _ = collect(client, folder_link)
    assert values == [{"id": inbox, "displayName": "In"}]

    # Contact folders: a move is the parent alone.
    cfolders, cfolder_link = collect(client, f"/users/{user.id}/contactFolders/delta")
    moved = cfolders[0]["id"]
    target = client.post(f"/users/{user.id}/contactFolders", json={"displayName": "Target"})
    moving = client.patch(
        f"/users/{user.id}/contactFolders/{moved}", json={"parentFolderId": target.json()["id"]}
    )
    assert moving.is_success
    got = _by_id(collect(client, cfolder_link)[0])
    assert got[moved] == {"id": moved, "parentFolderId": target.json()["id"]}
    assert got[target.json()["id"]]["displayName"] == "Target"  # created: whole

    # Messages: a read flag toggled is the flag alone, even with $expand=attachments.
    message = next(i for i in tenant.items.values() if i.kind == "message")
    url = f"/users/{user.id}/mailFolders/{message.folder_id}/messages/delta"
    _, message_link = collect(client, url, params={"$expand": "attachments"})
    read = not message.props.get("isRead")
    assert client.patch(f"/users/{user.id}/messages/{message.id}", json={"isRead": read})
    values, _ = collect(client, message_link)
    assert values == [
        {
            "@odata.etag": f'W/"{message.change_key}"',
            "@odata.type": "#microsoft.graph.message",
            "id": message.id,
            "changeKey": message.change_key,
            "isRead": read,
        }
    ]


def test_off_by_default_and_switched_through_the_control_api(
    sim: Simulator, client: httpx.Client
) -> None:
    user = _user(sim)
    tenant = sim.tenant()
    assert sim.partial_delta_updates() == {"enabled": False, "tenants": {tenant.id: False}}
    first, link = collect(client, f"/users/{user.id}/contacts/delta")
    edited, name = first[0]["id"], first[0]["givenName"]
    sim.edit_item(tenant.id, edited, {"jobTitle": "Off"})
    values, link = collect(client, link)
    assert values[0]["givenName"] == name  # off: whole, as before

    control = httpx.Client(base_url=sim.base_url, verify=sim.ssl_context())
    sim.edit_item(tenant.id, edited, {"department": "Before the switch"})
    answer = control.put(f"/_sim/tenants/{tenant.id}/partial-delta-updates", json={"enabled": True})
    assert answer.status_code == 200
    assert answer.json()["tenants"] == {tenant.id: True}
    sim.edit_item(tenant.id, edited, {"jobTitle": "On"})
    # The token predates a change made before the switch: not known property by property.
    values, link = collect(client, link)
    assert values[0]["givenName"] == name and values[0]["department"] == "Before the switch"
    sim.edit_item(tenant.id, edited, {"jobTitle": "Again"})
    values, link = collect(client, link)
    assert values == [
        {
            "@odata.etag": f'W/"{tenant.items[edited].change_key}"',
            "id": edited,
            "changeKey": tenant.items[edited].change_key,
            "jobTitle": "Again",
        }
    ]
    assert control.get("/_sim/partial-delta-updates").json()["tenants"] == {tenant.id: True}
    assert control.put("/_sim/partial-delta-updates", json={"enabled": False}).json() == {
        "enabled": False,
        "tenants": {tenant.id: False},
    }
    sim.edit_item(tenant.id, edited, {"jobTitle": "Off again"})
    values, _ = collect(client, link)
    assert values[0]["givenName"] == name
    control.close()
