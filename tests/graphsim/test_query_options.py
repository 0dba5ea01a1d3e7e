"""OData query options as Graph applies them: $filter literals, nested $select, kept $expand."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from msgraph.generated.models.attachment_collection_response import AttachmentCollectionResponse
from msgraph.generated.models.event import Event
from msgraph.generated.models.message import Message
from msgraph.generated.models.message_collection_response import MessageCollectionResponse

from graphsim import Simulator
from tests.graphsim.conftest import add_weekly_series, attach_file, collect, sdk_parse

ODD_ID = "<o'brien+co=1&x@x.example>"


def quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@pytest.fixture(scope="module")
def odd_message(sim: Simulator, user: Any) -> str:
    raw = (
        f"From: Pat O'Brien <pat@x.example>\r\nTo: {user.upn}\r\nSubject: quoting 'and' matters\r\n"
        f"Message-ID: {ODD_ID}\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nbody\r\n"
    ).encode()
    return sim.add_message(sim.tenant().id, user.id, raw, "inbox")


@pytest.fixture(scope="module")
def with_attachments(client: httpx.Client, user: Any) -> str:
    mid = client.post(f"/users/{user.id}/messages", json={"subject": "carrying"}).json()["id"]
    base = f"/users/{user.id}/messages/{mid}/attachments"
    file_made = client.post(
        base,
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "notes.txt",
            "contentType": "text/plain",
            "contentBytes": base64.b64encode(b"attached bytes").decode(),
        },
    )
    assert file_made.status_code == 201
    item_made = client.post(
        base,
        json={
            "@odata.type": "#microsoft.graph.itemAttachment",
            "name": "Forwarded",
            "item": {"@odata.type": "#microsoft.graph.message", "subject": "inner subject"},
        },
    )
    assert item_made.status_code == 201
    return str(mid)


def test_filter_by_internet_message_id_with_quotes(
    client: httpx.Client, user: Any, odd_message: str
) -> None:
    resp = client.get(
        f"/users/{user.id}/mailFolders/inbox/messages",
        params={
            "$filter": f"internetMessageId eq {quoted(ODD_ID)}",
            "$select": "id,internetMessageId",
            "$top": "50",
        },
    )
    assert resp.status_code == 200
    parsed = sdk_parse(MessageCollectionResponse, resp.content)
    assert [m.id for m in parsed.value] == [odd_message]
    assert resp.json()["value"][0]["internetMessageId"] == ODD_ID
    # The same id unescaped is a syntax error, never a silently unfiltered folder.
    broken = client.get(
        f"/users/{user.id}/mailFolders/inbox/messages",
        params={"$filter": f"internetMessageId eq '{ODD_ID}'"},
    )
    assert broken.status_code == 400
    absent = client.get(
        f"/users/{user.id}/mailFolders/inbox/messages",
        params={"$filter": "internetMessageId eq '<nobody@x.example>'"},
    )
    assert absent.json()["value"] == []


def test_filter_grammar(client: httpx.Client, user: Any, odd_message: str) -> None:
    def ids(expression: str) -> set[str]:
        resp = client.get(
            f"/users/{user.id}/messages", params={"$filter": expression, "$top": "999"}
        )
        assert resp.status_code == 200, resp.text
        return {m["id"] for m in resp.json()["value"]}

    everything = ids("isRead eq true or isRead eq false")
    assert odd_message in everything
    unread = ids("isRead eq false")
    assert ids("not (isRead eq false)") == everything - unread
    assert ids("startswith(subject,'QUOTING')") == {odd_message}
    assert odd_message in ids(
        "(subject eq 'quoting ''and'' matters' or subject eq 'nothing') and "
        "sentDateTime lt 2024-01-01T10:00:00.500Z and sentDateTime ge 2024-01-01T10:00:00Z"
    )
    assert ids("from/emailAddress/address eq 'PAT@x.example'") == {odd_message}
    for bad in ("contains(subject,'q')", "isRead eq", "(isRead eq true", "subject eq x y"):
        resp = client.get(f"/users/{user.id}/messages", params={"$filter": bad})
        assert resp.status_code == 400, bad
        assert resp.json()["error"]["code"] == "BadRequest"


def test_nested_select_on_expanded_attachments(
    client: httpx.Client, user: Any, with_attachments: str
) -> None:
    base = f"/users/{user.id}/messages/{with_attachments}"
    slim = client.get(
        base, params={"$expand": "attachments($select=id,name,contentType,size,isInline)"}
    )
    assert slim.status_code == 200
    sdk_parse(Message, slim.content)
    attachments = slim.json()["attachments"]
    assert len(attachments) == 2
    for att in attachments:
        assert "contentBytes" not in att
        assert {"id", "name", "size", "isInline"} <= set(att)
        assert not {k for k in att if not k.startswith("@")} - {
            "id",
            "name",
            "contentType",
            "size",
            "isInline",
        }
    full = client.get(base, params={"$expand": "attachments"}).json()["attachments"]
    file_att = next(a for a in full if a["name"] == "notes.txt")
    assert base64.b64decode(file_att["contentBytes"]) == b"attached bytes"


def test_select_keeps_expanded_navigation_properties(
    client: httpx.Client, user: Any, with_attachments: str
) -> None:
    base = f"/users/{user.id}/messages/{with_attachments}"
    message = client.get(base, params={"$select": "subject", "$expand": "attachments"}).json()
    assert message["subject"] == "carrying"
    assert len(message["attachments"]) == 2
    assert "body" not in message
    listed = client.get(
        f"{base}/attachments",
        params={"$select": "id,name", "$expand": "microsoft.graph.itemattachment/item"},
    )
    sdk_parse(AttachmentCollectionResponse, listed.content)
    item_att = next(a for a in listed.json()["value"] if a["name"] == "Forwarded")
    assert item_att["item"]["subject"] == "inner subject"
    assert "size" not in item_att
    one = client.get(
        f"{base}/attachments/{item_att['id']}",
        params={
            "$select": "id,name",
            "$expand": "microsoft.graph.itemattachment/item($select=subject)",
        },
    ).json()
    assert set(one["item"]) - {"@odata.type", "@odata.etag"} == {"id", "subject"}


def test_event_select_keeps_expanded_attachments(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    event_id = add_weekly_series(sim, user, "Review", start, timedelta(hours=1), 3)
    made = attach_file(client, f"/users/{user.id}/events/{event_id}", "agenda.txt", b"agenda")
    assert made.status_code == 201
    resp = client.get(
        f"/users/{user.id}/events/{event_id}",
        params={
            "$select": "subject,cancelledOccurrences",
            "$expand": "attachments($select=name,size),exceptionOccurrences",
        },
    )
    assert resp.status_code == 200
    sdk_parse(Event, resp.content)
    body = resp.json()
    assert body["subject"] == "Review"
    assert "start" not in body
    assert body["cancelledOccurrences"] == []
    assert body["exceptionOccurrences"] == []
    assert [a["name"] for a in body["attachments"]] == ["agenda.txt"]
    assert "contentBytes" not in body["attachments"][0]


def test_orderby_sorts_and_follows_outlooks_filter_rule(
    client: httpx.Client, user: Any, odd_message: str
) -> None:
    base = f"/users/{user.id}/messages"
    oldest_first = client.get(
        base, params={"$orderby": "receivedDateTime asc", "$select": "receivedDateTime"}
    ).json()["value"]
    stamps = [m["receivedDateTime"] for m in oldest_first]
    assert stamps == sorted(stamps)
    by_subject = client.get(
        base, params={"$orderby": "subject desc,receivedDateTime", "$top": "999"}
    ).json()["value"]
    subjects = [m["subject"].lower() for m in by_subject]
    assert subjects == sorted(subjects, reverse=True)
    led = client.get(
        base,
        params={
            "$filter": "receivedDateTime ge 2020-01-01T00:00:00Z and isRead eq false",
            "$orderby": "receivedDateTime desc",
        },
    )
    assert led.status_code == 200
    ranged = client.get(  # a range names its property twice; the rule still holds
        base,
        params={
            "$filter": "receivedDateTime ge 2020-01-01T00:00:00Z and receivedDateTime le "
            "2031-01-01T00:00:00Z and isRead eq false",
            "$orderby": "receivedDateTime desc,isRead",
        },
    )
    assert ranged.status_code == 200, ranged.text
    too_complex = client.get(
        base, params={"$filter": "isRead eq false", "$orderby": "receivedDateTime desc"}
    )
    assert too_complex.status_code == 400
    assert too_complex.json()["error"]["code"] == "InefficientFilter"
    bad = client.get(base, params={"$orderby": "subject sideways"})
    assert bad.status_code == 400
    users = client.get("/users", params={"$orderby": "displayName desc"}).json()["value"]
    names = [u["displayName"].lower() for u in users]
    assert names == sorted(names, reverse=True)


def test_search_messages(client: httpx.Client, user: Any, odd_message: str) -> None:
    def found(query: str, folder: str | None = None) -> list[dict[str, Any]]:
        path = f"/users/{user.id}/mailFolders/{folder}/messages" if folder else None
        resp = client.get(
            path or f"/users/{user.id}/messages", params={"$search": query, "$top": "999"}
        )
        assert resp.status_code == 200, resp.text
        return list(resp.json()["value"])

    assert [m["id"] for m in found('"quoting"')] == [odd_message]  # subject, a default
    assert [m["id"] for m in found('"from:pat"', "inbox")] == [odd_message]
    assert [m["id"] for m in found('"from:O\'Brien subject:matters"')] == [odd_message]
    assert found('"subject:atters"') == []  # words match from their start
    assert odd_message in {m["id"] for m in found('"quoting OR zzzz-nothing"')}
    hits = found('"hasAttachment:true"')
    assert hits
    assert all(m["hasAttachments"] for m in hits)
    sent = [m["sentDateTime"] for m in found('"participants:' + user.upn.split("@")[0] + '"')]
    assert len(sent) > 1
    assert sent == sorted(sent, reverse=True)
    for params in (
        {"$search": "pizza"},  # not quoted
        {"$search": '"pizza"', "$filter": "isRead eq true"},
        {"$search": '"pizza"', "$orderby": "subject"},
        {"$search": '"received:2024-01-01"'},  # not modelled: refused, never ignored
    ):
        resp = client.get(f"/users/{user.id}/messages", params=params)
        assert resp.status_code == 400, params
    events = client.get(f"/users/{user.id}/events", params={"$search": '"x"'})
    assert events.status_code == 400


def test_drive_children_orderby(client: httpx.Client, user: Any) -> None:
    drive = client.get(f"/users/{user.id}/drive").json()["id"]
    for name, size in (("b.txt", 3), ("a.txt", 1), ("c.txt", 2)):
        client.put(f"/drives/{drive}/root:/Sorted/{name}:/content", content=b"x" * size)
    names = [
        c["name"]
        for c in client.get(
            f"/drives/{drive}/root:/Sorted:/children", params={"$orderby": "size desc"}
        ).json()["value"]
    ]
    assert names == ["b.txt", "c.txt", "a.txt"]
    default = client.get(f"/drives/{drive}/root:/Sorted:/children").json()["value"]
    assert [c["name"] for c in default] == ["a.txt", "b.txt", "c.txt"]


def test_skip_must_be_a_non_negative_integer(client: httpx.Client, user: Any) -> None:
    """``$skip`` pages a plain collection; anything but a non-negative integer is refused
    (it was read as 0, so a client's bad arithmetic paged from the start again)."""
    for n in range(3):
        made = client.post(f"/users/{user.id}/contacts", json={"givenName": f"Skip {n}"})
        assert made.status_code == 201
    everyone = client.get(f"/users/{user.id}/contacts", params={"$top": "1000"}).json()["value"]
    skipped = client.get(f"/users/{user.id}/contacts", params={"$skip": "1", "$top": "1000"})
    assert skipped.status_code == 200
    assert [c["id"] for c in skipped.json()["value"]] == [c["id"] for c in everyone[1:]]
    for bad in ("-1", "x", "1.5", "", "١"):  # the last is an Arabic-Indic digit one
        answer = client.get(f"/users/{user.id}/contacts", params={"$skip": bad})
        assert answer.status_code == 400, bad
        error = answer.json()["error"]
        assert error["code"] == "BadRequest"
        assert "$skip query option requires a non-negative integer" in error["message"]


def dated(user: Any, subject: str) -> bytes:
    return (
        f"From: a@x.example\r\nTo: {user.upn}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nbody of {subject}\r\n"
    ).encode()


def test_message_delta_options_travel_in_the_links(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    folder = client.post(
        f"/users/{user.id}/mailFolders/inbox/childFolders", json={"displayName": "Delta options"}
    ).json()["id"]
    months = {}
    for month in (1, 2, 3, 4):
        months[month] = sim.add_message(
            sim.tenant().id,
            user.id,
            dated(user, f"month {month}"),
            folder,
            received=datetime(2024, month, 1, tzinfo=UTC),
        )
    path = f"/users/{user.id}/mailFolders/{folder}/messages/delta"
    values, _ = collect(
        client,
        path,
        params={
            "$filter": "receivedDateTime ge 2024-02-01T00:00:00Z",
            "$orderby": "receivedDateTime desc",
            "$select": "subject",
            "$expand": "attachments($select=name)",
        },
        headers={"Prefer": "odata.maxpagesize=2"},
    )
    assert [v["subject"] for v in values] == ["month 4", "month 3", "month 2"]
    assert all("body" not in v and v["attachments"] == [] for v in values)
    after, _ = collect(client, path, params={"$filter": "receivedDateTime gt 2024-02-01T00:00:00Z"})
    assert {v["subject"] for v in after} == {"month 3", "month 4"}

    created_only, created_link = collect(client, path, params={"changeType": "created"})
    assert {v["id"] for v in created_only} == set(months.values())
    _, updated_link = collect(client, path, params={"changeType": "updated", "$select": "isRead"})
    _, deleted_link = collect(client, path, params={"changeType": "deleted"})
    client.patch(f"/users/{user.id}/messages/{months[1]}", json={"isRead": True})
    client.delete(f"/users/{user.id}/messages/{months[2]}")
    fresh = sim.add_message(sim.tenant().id, user.id, dated(user, "month 5"), folder)
    created, _ = collect(client, created_link)
    assert [v["id"] for v in created] == [fresh]
    updated, _ = collect(client, updated_link)
    assert [(v["id"], v["isRead"]) for v in updated] == [(months[1], True)]
    deleted, _ = collect(client, deleted_link)
    assert [(v["id"], v["@removed"]) for v in deleted] == [(months[2], {"reason": "deleted"})]
    for params in (
        {"$filter": "isRead eq false"},
        {"$orderby": "subject"},
        {"$search": '"month"'},
        {"changeType": "moved"},
    ):
        assert client.get(path, params=params).status_code == 400, params
