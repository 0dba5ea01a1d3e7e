"""What a restore needs from Graph, as graphsim serves it: single-value extended properties
(stored, found with a lambda ``$filter``, read back with ``$expand``), a message attached
inside an attached message, and attachments an exception of a series carries itself."""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from msgraph.generated.models.message import Message as SdkMessage

from graphsim import Simulator
from tests.graphsim.conftest import add_weekly_series, attach_file, sdk_parse

STAMP = "String {6b1f3c1e-5a0d-4d4f-9a8e-5afe4ee90001} Name SafekeepItemId"
OTHER = "String {6b1f3c1e-5a0d-4d4f-9a8e-5afe4ee90001} Name SafekeepVersionId"


def by_stamp(value: str) -> str:
    return f"singleValueExtendedProperties/Any(ep: ep/id eq '{STAMP}' and ep/value eq '{value}')"


EXPAND = f"singleValueExtendedProperties($filter=id eq '{STAMP}')"


def test_message_extended_properties_filter_and_expand(client: httpx.Client, user: Any) -> None:
    base = f"/users/{user.id}/mailFolders/inbox/messages"
    made = {}
    for value in ("item-1", "item-2"):
        resp = client.post(
            base,
            json={
                "subject": f"stamped {value}",
                "singleValueExtendedProperties": [
                    {"id": STAMP, "value": value},
                    {"id": OTHER, "value": f"version-of-{value}"},
                    {"id": "Integer 0x0E07", "value": "5"},
                ],
            },
        )
        assert resp.status_code == 201, resp.text
        assert "singleValueExtendedProperties" not in resp.json()  # served only when asked
        made[value] = resp.json()["id"]

    found = client.get(base, params={"$filter": by_stamp("item-2"), "$select": "id"})
    assert found.status_code == 200, found.text
    assert [m["id"] for m in found.json()["value"]] == [made["item-2"]]
    # Ids are compared without case, as Exchange does; a value that is nowhere finds nothing.
    lower = by_stamp("item-1").replace(STAMP, STAMP.lower())
    assert [m["id"] for m in client.get(base, params={"$filter": lower}).json()["value"]] == [
        made["item-1"]
    ]
    assert client.get(base, params={"$filter": by_stamp("nowhere")}).json()["value"] == []

    one = client.get(f"/users/{user.id}/messages/{made['item-1']}", params={"$expand": EXPAND})
    assert one.json()["singleValueExtendedProperties"] == [{"id": STAMP, "value": "item-1"}]
    sdk_parse(SdkMessage, one.content)
    listed = client.get(base, params={"$expand": EXPAND, "$select": "id", "$top": "1000"})
    stamps = {m["id"]: m.get("singleValueExtendedProperties") for m in listed.json()["value"]}
    assert stamps[made["item-2"]] == [{"id": STAMP, "value": "item-2"}]
    unstamped = [v for k, v in stamps.items() if k not in made.values()]
    assert unstamped and all(v is None for v in unstamped)  # left out when none matches
    # Graph refuses to expand extended properties without saying which.
    refused = client.get(
        f"/users/{user.id}/messages/{made['item-1']}",
        params={"$expand": "singleValueExtendedProperties"},
    )
    assert refused.status_code == 400


def test_event_and_contact_extended_properties(client: httpx.Client, user: Any) -> None:
    start = datetime(2026, 5, 4, 10, tzinfo=UTC)
    event = client.post(
        f"/users/{user.id}/calendars/calendar/events",
        json={
            "subject": "stamped event",
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {
                "dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
            "singleValueExtendedProperties": [{"id": STAMP, "value": "event-1"}],
        },
    )
    assert event.status_code == 201, event.text
    found = client.get(
        f"/users/{user.id}/calendars/calendar/events",
        params={"$filter": by_stamp("event-1"), "$expand": EXPAND},
    ).json()["value"]
    assert [(e["id"], e["singleValueExtendedProperties"]) for e in found] == [
        (event.json()["id"], [{"id": STAMP, "value": "event-1"}])
    ]
    contact = client.post(
        f"/users/{user.id}/contactFolders/contacts/contacts",
        json={"givenName": "Zoë", "singleValueExtendedProperties": [{"id": STAMP, "value": "c"}]},
    )
    assert contact.status_code == 201, contact.text
    assert "singleValueExtendedProperties" not in contact.json()
    found = client.get(
        f"/users/{user.id}/contactFolders/contacts/contacts",
        params={"$filter": by_stamp("c"), "$expand": EXPAND},
    ).json()["value"]
    assert [c["id"] for c in found] == [contact.json()["id"]]
    assert found[0]["singleValueExtendedProperties"] == [{"id": STAMP, "value": "c"}]


def subject_of(part: email.message.Message) -> str:
    inner = part.get_payload(0)
    assert isinstance(inner, email.message.Message)
    return str(inner["Subject"])


def test_message_attached_inside_an_attached_message(client: httpx.Client, user: Any) -> None:
    deepest = b"PDF-ish bytes \x00\x01"
    created = client.post(
        f"/users/{user.id}/mailFolders/inbox/messages",
        json={
            "subject": "outer",
            "body": {"contentType": "text", "content": "outer body"},
            "attachments": [
                {
                    "@odata.type": "#microsoft.graph.itemAttachment",
                    "name": "middle",
                    "item": {
                        "@odata.type": "#microsoft.graph.message",
                        "subject": "middle",
                        "body": {"contentType": "text", "content": "middle body"},
                        "attachments": [
                            {
                                "@odata.type": "#microsoft.graph.itemAttachment",
                                "name": "inner",
                                "item": {
                                    "@odata.type": "#microsoft.graph.message",
                                    "subject": "inner",
                                    "body": {"contentType": "text", "content": "inner body"},
                                    "attachments": [
                                        {
                                            "@odata.type": "#microsoft.graph.fileAttachment",
                                            "name": "deep.bin",
                                            "contentType": "application/octet-stream",
                                            "contentBytes": base64.b64encode(deepest).decode(),
                                        }
                                    ],
                                },
                            }
                        ],
                    },
                }
            ],
        },
    )
    assert created.status_code == 201, created.text
    raw = client.get(f"/users/{user.id}/messages/{created.json()['id']}/$value").content
    outer = email.message_from_bytes(raw, policy=email.policy.default)
    middle = next(p for p in outer.walk() if p.get_content_type() == "message/rfc822")
    parts = list(middle.walk())
    subjects = [subject_of(p) for p in parts if p.get_content_type() == "message/rfc822"]
    assert subjects[:2] == ["middle", "inner"]
    files = [p.get_payload(decode=True) for p in parts if p.get_filename() == "deep.bin"]
    assert files == [deepest]


def test_exception_carries_its_own_attachments(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    series = add_weekly_series(sim, user, "Weekly review", start, timedelta(hours=1), 3)
    window = {"startDateTime": "2026-03-01T00:00:00Z", "endDateTime": "2026-03-31T00:00:00Z"}
    first, second, _third = client.get(
        f"/users/{user.id}/events/{series}/instances", params=window
    ).json()["value"]
    added = attach_file(
        client, f"/users/{user.id}/events/{second['id']}", "minutes.txt", b"only this week"
    )
    assert added.status_code == 201, added.text
    own = client.get(f"/users/{user.id}/events/{second['id']}/attachments").json()["value"]
    assert [a["name"] for a in own] == ["minutes.txt"]
    assert client.get(f"/users/{user.id}/events/{first['id']}/attachments").json()["value"] == []
    assert client.get(f"/users/{user.id}/events/{series}/attachments").json()["value"] == []
    master = client.get(
        f"/users/{user.id}/events/{series}", params={"$expand": "exceptionOccurrences"}
    ).json()
    (exception,) = master["exceptionOccurrences"]
    assert (exception["id"], exception["type"], exception["hasAttachments"]) == (
        second["id"],
        "exception",
        True,
    )
    assert master["hasAttachments"] is False
