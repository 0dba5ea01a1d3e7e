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
from tests.graphsim.conftest import sdk_parse

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
    event_id = sim.add_event(
        sim.tenant().id,
        user.id,
        subject="Review",
        start=start,
        end=start + timedelta(hours=1),
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
            "range": {"type": "numbered", "startDate": "2026-03-02", "numberOfOccurrences": 3},
        },
    )
    made = client.post(
        f"/users/{user.id}/events/{event_id}/attachments",
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "agenda.txt",
            "contentBytes": base64.b64encode(b"agenda").decode(),
        },
    )
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
