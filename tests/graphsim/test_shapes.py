"""A write whose property has the wrong shape is refused 400 ``RequestBodyRead``, as Graph's
OData layer refuses a body it cannot read, and nothing is stored: graphsim's handlers read
bodies trusting their shapes, and answered 500 and dropped the connection (a message with a
number for its body, an event with a string for its attendees, a flag that is a list)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

WHEN = {"dateTime": "2026-03-03T10:00:00", "timeZone": "UTC"}


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("messages", {"subject": "s", "body": 0}),
        ("messages", {"subject": "s", "body": {"contentType": "pdf", "content": "x"}}),
        ("messages", {"subject": "s", "toRecipients": "adele@contoso.example"}),
        ("messages", {"subject": "s", "toRecipients": [{"emailAddress": "adele@x"}]}),
        ("messages", {"subject": "s", "from": ["a"]}),
        ("messages", {"subject": "s", "flag": {"flagStatus": "maybe"}}),
        ("messages", {"subject": "s", "categories": "Red"}),
        ("messages", {"subject": "s", "internetMessageHeaders": [{"name": 1, "value": "v"}]}),
        ("messages", {"subject": ["s"]}),
        ("events", {"subject": "s", "start": WHEN, "end": WHEN, "attendees": "x"}),
        ("events", {"subject": "s", "start": WHEN, "end": WHEN, "body": "x"}),
        ("events", {"subject": "s", "start": WHEN, "end": WHEN, "showAs": "asleep"}),
        ("events", {"subject": 0, "start": WHEN, "end": WHEN}),
        (
            "events",
            {"subject": "s", "start": WHEN, "end": WHEN, "reminderMinutesBeforeStart": 2**40},
        ),
        ("contacts", {"displayName": "d", "emailAddresses": "a@b"}),
        ("contacts", {"displayName": "d", "businessPhones": [1]}),
    ],
)
def test_a_body_of_the_wrong_shape_is_refused_and_nothing_is_stored(
    client: httpx.Client, user: Any, kind: str, body: dict[str, Any]
) -> None:
    path = f"/users/{user.id}/{kind}"
    before = len(client.get(path, params={"$top": "999"}).json()["value"])
    refused = client.post(path, json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "RequestBodyRead"
    assert len(client.get(path, params={"$top": "999"}).json()["value"]) == before
    # inside a $batch alike, and the envelope itself is answered
    inner = {"id": "1", "method": "POST", "url": path, "body": body}
    inner["headers"] = {"Content-Type": "application/json"}
    batch = client.post("/$batch", json={"requests": [inner]})
    assert batch.status_code == 200
    [answer] = batch.json()["responses"]
    assert answer["status"] == 400 and answer["body"]["error"]["code"] == "RequestBodyRead"


def test_a_change_of_the_wrong_shape_keeps_the_item(client: httpx.Client, user: Any) -> None:
    message = client.get(f"/users/{user.id}/messages", params={"$top": "1"}).json()["value"][0]
    item = f"/users/{user.id}/messages/{message['id']}"
    for change in ({"flag": ["flagged"]}, {"categories": [1]}, {"isRead": "yes"}):
        refused = client.patch(item, json=change)
        assert refused.status_code == 400, (change, refused.text)
        assert refused.json()["error"]["code"] == "RequestBodyRead"
    after = client.get(item).json()
    assert (after["flag"], after["categories"], after["isRead"]) == (
        message["flag"],
        message["categories"],
        message["isRead"],
    )


def test_drive_writes_of_the_wrong_shape_and_an_upload_to_a_folder_are_refused(
    client: httpx.Client, user: Any
) -> None:
    drive = client.get(f"/users/{user.id}/drive").json()["id"]
    children = f"/drives/{drive}/items/root/children"
    before = len(client.get(children, params={"$top": "999"}).json()["value"])
    for body in (
        {"name": 5, "folder": {}},
        {"name": "x", "folder": {}, "@microsoft.graph.conflictBehavior": "merge"},
    ):
        refused = client.post(children, json=body)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "RequestBodyRead"
    assert len(client.get(children, params={"$top": "999"}).json()["value"]) == before
    upload = client.post(f"/drives/{drive}/items/root/createUploadSession", json={"item": {}})
    assert upload.status_code == 400 and upload.json()["error"]["code"] == "invalidRequest"
    wrong = client.post(f"/drives/{drive}/items/root:/x.txt:/createUploadSession", json={"item": 1})
    assert wrong.status_code == 400, wrong.text


def test_an_id_that_cannot_be_one_is_400_a_well_formed_unknown_one_404(
    client: httpx.Client, user: Any
) -> None:
    """Exchange tells a malformed id (truncated, mis-encoded) from one it does not hold: 400
    ErrorInvalidIdMalformed against 404 ErrorItemNotFound. A client that reads every 404 as
    "deleted" must not see a truncated id as a deletion."""
    from graphsim import ids

    message = client.get(f"/users/{user.id}/messages", params={"$top": "1"}).json()["value"][0]
    unknown = ids.outlook_id("never", "made")
    for kind in ("messages", "events", "contacts", "mailFolders", "contactFolders", "calendars"):
        base = f"/users/{user.id}/{kind}"
        for bad in (message["id"][:-20], "not-an-id", "AAMkAGI2TG93AAA="):
            r = client.get(f"{base}/{bad}")
            assert r.status_code == 400, (kind, bad, r.text)
            assert r.json()["error"] == {**r.json()["error"], "code": "ErrorInvalidIdMalformed"}
        r = client.get(f"{base}/{unknown}")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "ErrorItemNotFound"), kind
    attachments = f"/users/{user.id}/messages/{message['id']}/attachments"
    assert client.get(f"{attachments}/{unknown}").status_code == 404
    assert client.get(f"{attachments}/garbage").status_code == 400
    # Well-known folder names are names, not ids.
    assert client.get(f"/users/{user.id}/mailFolders/inbox").status_code == 200


def test_batch_answers_come_in_an_order_of_their_own(client: httpx.Client, user: Any) -> None:
    """Graph's answers to a batch "might appear in a different order" (JSON batching), so
    graphsim answers each batch in an order of its own: a client that pairs answers with
    requests by position, not by id, fails here. Every answer is there, once, by its id."""
    requests = [
        {"id": str(n), "method": "GET", "url": f"/users/{user.id}/mailFolders/{name}"}
        for n, name in enumerate(["inbox", "drafts", "sentitems", "deleteditems", "junkemail"])
    ]
    orders = set()
    for _ in range(4):
        answers = client.post("/$batch", json={"requests": requests}).json()["responses"]
        assert sorted(a["id"] for a in answers) == ["0", "1", "2", "3", "4"]
        by_id = {a["id"]: a for a in answers}
        assert by_id["0"]["body"]["displayName"] == "Inbox"
        assert by_id["4"]["body"]["displayName"] == "Junk Email"
        orders.add(tuple(a["id"] for a in answers))
    assert orders - {("0", "1", "2", "3", "4")}, orders
