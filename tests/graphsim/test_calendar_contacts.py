"""Calendars (recurring series, exceptions, calendarView delta) and contacts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from msgraph.generated.models.contact_collection_response import ContactCollectionResponse
from msgraph.generated.models.event import Event
from msgraph.generated.models.event_collection_response import EventCollectionResponse

from graphsim import Simulator, routes_calendar
from tests.graphsim.conftest import add_weekly_series, attach_file, collect, sdk_parse

WINDOW = {"startDateTime": "2025-06-01T00:00:00Z", "endDateTime": "2026-09-01T00:00:00Z"}


def test_calendar_view_delta_expands_series_with_exceptions(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    start = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
    series = add_weekly_series(sim, user, "Standup", start, timedelta(minutes=15), 4)
    values, delta = collect(
        client,
        f"/users/{user.id}/calendarView/delta",
        params=WINDOW,
        headers={"Prefer": "odata.maxpagesize=5"},
    )
    ids = [v["id"] for v in values]
    assert len(ids) == len(set(ids))
    mine = [v for v in values if v.get("seriesMasterId") == series]
    assert len(mine) == 4
    assert {v["type"] for v in mine} == {"occurrence"}
    assert sorted(v["start"]["dateTime"][:10] for v in mine) == [
        "2026-02-02",
        "2026-02-09",
        "2026-02-16",
        "2026-02-23",
    ]
    page = client.get(f"/users/{user.id}/calendarView/delta", params=WINDOW)
    sdk_parse(EventCollectionResponse, page.content)

    occurrences = client.get(f"/users/{user.id}/events/{series}/instances", params=WINDOW).json()[
        "value"
    ]
    second, third = occurrences[1]["id"], occurrences[2]["id"]
    moved = client.patch(
        f"/users/{user.id}/events/{second}",
        json={
            "subject": "Standup (moved)",
            "start": {"dateTime": "2026-02-09T11:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-02-09T11:15:00", "timeZone": "UTC"},
        },
    )
    assert moved.status_code == 200
    assert moved.json()["type"] == "exception"
    assert client.delete(f"/users/{user.id}/events/{third}").status_code == 204

    changes, _ = collect(client, delta)
    by_id = {v["id"]: v for v in changes}
    assert by_id[third]["@removed"] == {"reason": "deleted"}
    assert by_id[second]["subject"] == "Standup (moved)"
    assert by_id[second]["start"]["dateTime"].startswith("2026-02-09T11:00:00")
    remaining = [v for v in changes if v.get("seriesMasterId") == series]
    assert len(remaining) == 3
    master = client.get(
        f"/users/{user.id}/events/{series}", params={"$expand": "exceptionOccurrences"}
    )
    assert [e["subject"] for e in master.json()["exceptionOccurrences"]] == ["Standup (moved)"]
    assert "cancelledOccurrences" not in master.json()
    selected = client.get(
        f"/users/{user.id}/events/{series}", params={"$select": "subject,cancelledOccurrences"}
    ).json()
    assert selected["cancelledOccurrences"] == [f"OID.{series}.2026-02-16"]


def test_calendar_view_after_a_change_shows_it_and_expands_only_that_series(
    sim: Simulator, client: httpx.Client, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view keeps each series' instances per version of the series: a change to one
    series (an occurrence given an attachment, a cancelled occurrence) shows at the next read,
    and the series left alone are not expanded again."""
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    changed = add_weekly_series(sim, user, "Review", start, timedelta(minutes=30), 3)
    quiet = add_weekly_series(sim, user, "Sync", start + timedelta(hours=2), timedelta(hours=1), 3)
    view = f"/users/{user.id}/calendarView"

    def read() -> dict[str, dict[str, Any]]:
        values, _ = collect(client, view, params=WINDOW)
        return {v["id"]: v for v in values if v.get("seriesMasterId") in (changed, quiet)}

    before = read()
    assert len(before) == 6
    first, second = sorted(
        (v for v in before.values() if v["seriesMasterId"] == changed),
        key=lambda v: v["start"]["dateTime"],
    )[:2]
    attached = attach_file(client, f"/users/{user.id}/events/{first['id']}", "notes.txt", b"hi")
    assert attached.status_code == 201
    assert client.delete(f"/users/{user.id}/events/{second['id']}").status_code == 204

    expanded: list[str] = []
    real = routes_calendar._expand_event

    def counting(tenant: Any, event: Any, lo: datetime, hi: datetime) -> Any:
        expanded.append(event.id)
        return real(tenant, event, lo, hi)

    monkeypatch.setattr(routes_calendar, "_expand_event", counting)
    after = read()
    assert second["id"] not in after
    assert after[first["id"]]["type"] == "exception"
    assert after[first["id"]]["hasAttachments"] is True
    assert [v for v in after.values() if v["seriesMasterId"] == quiet] == [
        v for v in before.values() if v["seriesMasterId"] == quiet
    ]
    assert changed in expanded and quiet not in expanded


def test_generated_calendars_have_series_exceptions_and_cancellations(sim: Simulator) -> None:
    events = [i for i in sim.tenant().items.values() if i.kind == "event"]
    assert any(e.props.get("recurrence") for e in events)
    assert any(e.exceptions for e in events)
    assert any(e.cancelled for e in events)


def test_event_create_for_restore(client: httpx.Client, user: Any) -> None:
    body = {
        "subject": "Restored meeting",
        "body": {"contentType": "html", "content": "<p>Agenda: café</p>"},
        "start": {"dateTime": "2026-03-03T10:00:00", "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": "2026-03-03T11:00:00", "timeZone": "W. Europe Standard Time"},
        "location": {"displayName": "Room 1"},
        "attendees": [
            {"type": "required", "emailAddress": {"name": "A", "address": "a@x.example"}}
        ],
    }
    created = client.post(f"/users/{user.id}/calendars/calendar/events", json=body)
    assert created.status_code == 201
    event = sdk_parse(Event, created.content)
    assert event.start.date_time.startswith("2026-03-03T09:00:00")
    assert event.type.value == "singleInstance"
    assert created.json()["iCalUId"]
    with_id = client.post(f"/users/{user.id}/events", json={**body, "id": "AAMk-nope"})
    assert with_id.status_code == 400
    att = attach_file(client, f"/users/{user.id}/events/{event.id}", "agenda.txt", b"agenda")
    assert att.status_code == 201
    assert client.get(f"/users/{user.id}/events/{event.id}").json()["hasAttachments"] is True
    missing = client.get(f"/users/{user.id}/calendarView/delta")
    assert missing.status_code == 400


def test_an_event_in_an_unknown_zone_is_refused_and_not_created(
    client: httpx.Client, user: Any
) -> None:
    """Graph answers 400 TimeZoneNotSupportedException to a zone it does not know, for an
    event and for the preference a reader asks its times in alike (the second is ignored)."""
    path = f"/users/{user.id}/calendars/calendar/events"
    before = len(client.get(path, params={"$top": "999"}).json()["value"])
    when = {"dateTime": "2026-03-03T10:00:00", "timeZone": "Mars Standard Time"}
    refused = client.post(path, json={"subject": "x", "start": when, "end": when})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "TimeZoneNotSupportedException"
    assert len(client.get(path, params={"$top": "999"}).json()["value"]) == before
    listed = client.get(
        path, params={"$top": "1"}, headers={"Prefer": 'outlook.timezone="Mars Standard Time"'}
    )
    assert listed.status_code == 200 and "Preference-Applied" not in listed.headers
    assert listed.json()["value"][0]["start"]["timeZone"] == "UTC"


def test_an_event_outside_the_calendars_span_is_refused_not_a_500(
    client: httpx.Client, user: Any
) -> None:
    """A time before 1601 or after 4500 (Outlook's calendar span; Exchange keeps Windows file
    times) is a 400, not graphsim's own failure: year 1 east of UTC and year 9999 west of it
    do not even convert to UTC. Nothing is created; the span's own edges are kept. A view's
    window outside the span is refused the same way."""
    path = f"/users/{user.id}/calendars/calendar/events"
    before = len(client.get(path, params={"$top": "999"}).json()["value"])
    for when, zone in (
        ("0001-01-01T00:00:00", "Tokyo Standard Time"),
        ("9999-12-31T23:00:00", "Pacific Standard Time"),
        ("1600-12-31T23:59:59", "UTC"),
        ("4501-01-01T00:00:00", "UTC"),
    ):
        at = {"dateTime": when, "timeZone": zone}
        refused = client.post(path, json={"subject": "x", "start": at, "end": at})
        assert refused.status_code == 400, (when, refused.text)
        assert refused.json()["error"]["code"] == "ErrorInvalidRequest"
    assert len(client.get(path, params={"$top": "999"}).json()["value"]) == before
    first = {"dateTime": "1601-01-01T00:00:00", "timeZone": "UTC"}
    last = {"dateTime": "4500-12-31T23:00:00", "timeZone": "UTC"}
    created = client.post(path, json={"subject": "edges", "start": first, "end": last})
    assert created.status_code == 201, created.text
    assert created.json()["start"]["dateTime"].startswith("1601-01-01T00:00:00")
    assert created.json()["end"]["dateTime"].startswith("4500-12-31T23:00:00")
    moved = client.patch(
        f"/users/{user.id}/events/{created.json()['id']}",
        json={"end": {"dateTime": "9999-12-31T23:00:00", "timeZone": "Pacific Standard Time"}},
    )
    assert moved.status_code == 400
    # a view's window alike, and the connection stays usable after the refusal
    for view in ("calendarView", "calendarView/delta"):
        window = {"startDateTime": "0001-01-01T00:00:00Z", "endDateTime": "9999-12-31T00:00:00Z"}
        refused = client.get(f"/users/{user.id}/{view}", params=window)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "ErrorInvalidParameter"
    window = {"startDateTime": "1601-01-01T00:00:00Z", "endDateTime": "4500-12-31T00:00:00Z"}
    seen = client.get(f"/users/{user.id}/calendarView", params={**window, "$top": "999"})
    assert seen.status_code == 200 and "edges" in [e["subject"] for e in seen.json()["value"]]


def _weekly(**changes: Any) -> dict[str, Any]:
    """A weekly series as Graph writes one back (its unused fields zero, a noEnd range's end
    the year 1), changed by ``changes`` (``pattern.x`` or ``range.x``)."""
    recurrence: dict[str, Any] = {
        "pattern": {
            "type": "weekly",
            "interval": 1,
            "month": 0,
            "dayOfMonth": 0,
            "daysOfWeek": ["tuesday"],
            "firstDayOfWeek": "sunday",
            "index": "first",
        },
        "range": {
            "type": "noEnd",
            "startDate": "2026-03-03",
            "endDate": "0001-01-01",
            "recurrenceTimeZone": "UTC",
            "numberOfOccurrences": 0,
        },
    }
    for key, value in changes.items():
        part, _, name = key.partition("__")
        recurrence[part][name] = value
    return recurrence


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"pattern__type": "hourly"}, "UnableToDeserializePostBody"),
        ({"pattern__interval": "1"}, "UnableToDeserializePostBody"),
        ({"pattern__daysOfWeek": ["funday"]}, "UnableToDeserializePostBody"),
        ({"pattern__index": "sixth"}, "UnableToDeserializePostBody"),
        ({"range__type": "whenever"}, "UnableToDeserializePostBody"),
        ({"range__startDate": "03/03/2026"}, "UnableToDeserializePostBody"),
        ({"range__type": "endDate", "range__endDate": "nope"}, "UnableToDeserializePostBody"),
        ({"pattern__interval": 0}, "ErrorPropertyValidationFailure"),
        ({"pattern__daysOfWeek": []}, "ErrorPropertyValidationFailure"),
        ({"range__startDate": "0001-01-01"}, "ErrorPropertyValidationFailure"),
        (
            {"range__type": "endDate", "range__endDate": "2026-03-01"},
            "ErrorPropertyValidationFailure",
        ),
        (
            {"range__type": "numbered", "range__numberOfOccurrences": 0},
            "ErrorPropertyValidationFailure",
        ),
        (
            {"range__type": "numbered", "range__numberOfOccurrences": 10**12},
            "ErrorPropertyValidationFailure",
        ),
        (
            {"pattern__type": "absoluteMonthly", "pattern__dayOfMonth": 40},
            "ErrorPropertyValidationFailure",
        ),
        (
            {"pattern__type": "absoluteYearly", "pattern__dayOfMonth": 3},
            "ErrorPropertyValidationFailure",
        ),
    ],
)
def test_a_recurrence_that_cannot_recur_is_refused_and_not_kept(
    client: httpx.Client, user: Any, changes: dict[str, Any], code: str
) -> None:
    """A series Exchange would not keep is refused when it is made or changed, and nothing
    is stored: kept, it failed every later read of its calendar (a 500, then the connection
    dropped), and a backup of the mailbox with it. The recurrence as Graph writes it back
    (the form a restore sends) is taken."""
    path = f"/users/{user.id}/calendars/calendar/events"
    view = {"startDateTime": "2026-03-01T00:00:00Z", "endDateTime": "2026-04-01T00:00:00Z"}

    def at(hour: int) -> dict[str, str]:
        return {"dateTime": f"2026-03-03T{hour:02}:00:00", "timeZone": "UTC"}

    before = len(client.get(path, params={"$top": "999"}).json()["value"])
    body = {"subject": "series", "start": at(10), "end": at(11)}
    refused = client.post(path, json={**body, "recurrence": _weekly(**changes)})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == code
    assert len(client.get(path, params={"$top": "999"}).json()["value"]) == before
    series = client.post(path, json={**body, "recurrence": _weekly()})
    assert series.status_code == 201, series.text
    item = f"/users/{user.id}/events/{series.json()['id']}"
    changed = client.patch(item, json={"recurrence": _weekly(**changes)})
    assert changed.status_code == 400 and changed.json()["error"]["code"] == code
    assert client.get(item).json()["recurrence"]["pattern"]["daysOfWeek"] == ["tuesday"]
    first = client.get(f"{item}/instances", params=view).json()["value"][0]
    on_one = client.patch(f"/users/{user.id}/events/{first['id']}", json={"recurrence": None})
    assert on_one.status_code == 400
    assert client.get(f"/users/{user.id}/calendarView", params=view).status_code == 200
    assert client.delete(item).status_code == 204


def test_an_event_that_ends_before_it_starts_is_refused(client: httpx.Client, user: Any) -> None:
    """Exchange answers 400 ErrorPropertyValidationFailure to an event, or a change of one or
    of an occurrence, that would end before it starts, and keeps what it had."""
    path = f"/users/{user.id}/calendars/calendar/events"
    before = len(client.get(path, params={"$top": "999"}).json()["value"])

    def at(hour: int) -> dict[str, str]:
        return {"dateTime": f"2026-03-03T{hour:02}:00:00", "timeZone": "UTC"}

    refused = client.post(path, json={"subject": "x", "start": at(11), "end": at(10)})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "ErrorPropertyValidationFailure"
    assert len(client.get(path, params={"$top": "999"}).json()["value"]) == before
    weekly = {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"]}}
    weekly["range"] = {"type": "numbered", "startDate": "2026-03-03", "numberOfOccurrences": 3}
    series = client.post(
        path, json={"subject": "s", "start": at(10), "end": at(11), "recurrence": weekly}
    ).json()
    item = f"/users/{user.id}/events/{series['id']}"
    assert client.patch(item, json={"end": at(9)}).status_code == 400
    assert client.patch(item, json={"start": at(12)}).status_code == 400
    assert client.get(item).json()["end"]["dateTime"].startswith("2026-03-03T11:00:00")
    [first, *_] = client.get(
        f"{item}/instances",
        params={"startDateTime": "2026-03-01T00:00:00Z", "endDateTime": "2026-04-01T00:00:00Z"},
    ).json()["value"]
    occurrence = f"/users/{user.id}/events/{first['id']}"
    moved = client.patch(occurrence, json={"end": at(9)})
    assert moved.status_code == 400
    assert moved.json()["error"]["code"] == "ErrorPropertyValidationFailure"
    assert (
        client.patch(occurrence, json={"end": at(12)})
        .json()["end"]["dateTime"]
        .startswith("2026-03-03T12:00:00")
    )


def test_contacts_folders_delta_and_create(sim: Simulator, client: httpx.Client, user: Any) -> None:
    folders, _ = collect(client, f"/users/{user.id}/contactFolders/delta")
    names = {f["displayName"] for f in folders}
    assert "Clients" in names
    default, delta = collect(
        client, f"/users/{user.id}/contacts/delta", headers={"Prefer": "odata.maxpagesize=2"}
    )
    expected = {i.id for i in sim.tenant().folder_items(user.contacts_root)}
    assert {c["id"] for c in default} == expected
    listed = client.get(f"/users/{user.id}/contacts", params={"$top": "100"})
    parsed = sdk_parse(ContactCollectionResponse, listed.content)
    assert all(c.email_addresses for c in parsed.value)
    assert any(len(c.email_addresses) > 1 for c in parsed.value) or len(parsed.value) < 3

    created = client.post(
        f"/users/{user.id}/contacts",
        json={
            "givenName": "Łukasz",
            "surname": "Dvořák",
            "emailAddresses": [
                {"name": "Ł D", "address": "l@x.example"},
                {"address": "l2@y.example"},
            ],
            "businessAddress": {"city": "Kraków"},
        },
    )
    assert created.status_code == 201
    cid = created.json()["id"]
    edited = default[0]["id"]
    client.patch(f"/users/{user.id}/contacts/{edited}", json={"jobTitle": "CFO"})
    changes, _ = collect(client, delta)
    assert {c["id"] for c in changes} == {cid, edited}
    clients = next(f for f in folders if f["displayName"] == "Clients")
    in_folder = client.post(
        f"/users/{user.id}/contactFolders/{clients['id']}/contacts",
        json={"givenName": "Ana", "surname": "Costa"},
    )
    assert in_folder.json()["parentFolderId"] == clients["id"]


def test_contact_photos(sim: Simulator, client: httpx.Client, user: Any) -> None:
    contacts = [
        i for i in sim.tenant().items.values() if i.kind == "contact" and i.user_id == user.id
    ]
    with_photo = [c for c in contacts if c.attachments]
    without = [c for c in contacts if not c.attachments]
    assert with_photo
    assert without
    meta = client.get(f"/users/{user.id}/contacts/{with_photo[0].id}/photo")
    assert meta.status_code == 200
    assert meta.json()["@odata.mediaContentType"] == "image/jpeg"
    image = client.get(f"/users/{user.id}/contacts/{with_photo[0].id}/photo/$value")
    assert image.content.startswith(b"\xff\xd8\xff")
    missing = client.get(f"/users/{user.id}/contacts/{without[0].id}/photo/$value")
    assert missing.status_code == 404
    put = client.put(
        f"/users/{user.id}/contacts/{without[0].id}/photo/$value",
        content=b"\xff\xd8\xffnew",
        headers={"Content-Type": "image/jpeg"},
    )
    assert put.status_code == 200
    again = client.get(f"/users/{user.id}/contacts/{without[0].id}/photo/$value")
    assert again.content == b"\xff\xd8\xffnew"


def _plain_instances(tenant: Any, master: Any, lo: datetime, hi: datetime) -> list[Any]:
    """A series' instances in a window by the definition, each read back from its own JSON:
    what ``series_instances`` must give however it computes them."""
    from graphsim.calendar import instance_json, occurrence_dates, parse_dt
    from graphsim.routes_calendar import event_json

    base = event_json(tenant, master)
    out = []
    for day in occurrence_dates(master, (lo - timedelta(days=2)).date(), hi.date()):
        if day.isoformat() in master.cancelled:
            continue
        inst = instance_json(tenant, master, day, base)
        if parse_dt(inst["start"]) < hi and parse_dt(inst["end"]) > lo:
            out.append(inst)
    return out


def test_series_expansion_equals_its_definition() -> None:
    """Every recurring series of a generated tenant (moved and cancelled occurrences
    included), over windows from a day to six years whose edges fall inside occurrences."""
    from graphsim.calendar import series_instances
    from graphsim.routes_calendar import event_json

    with Simulator(seed=5, users=4, messages=4, files=1, events=120, contacts=2) as sim:
        tenant = next(iter(sim.engine.world.tenants.values()))
        series = [i for i in tenant.items.values() if i.props.get("recurrence")]
        assert len(series) >= 5
        assert any(s.exceptions for s in series) and any(s.cancelled for s in series)
        compared = 0
        for master in series:
            first = datetime.fromisoformat(master.props["start"]["dateTime"][:19])
            first = first.replace(tzinfo=UTC)
            windows = [
                (first - timedelta(days=400), timedelta(days=6 * 365)),
                (first + timedelta(days=7, minutes=5), timedelta(days=30)),
                (first + timedelta(days=14, minutes=-1), timedelta(days=1)),
            ]
            for day in master.exceptions:  # around a moved occurrence: its new time only
                moved = datetime.combine(datetime.fromisoformat(day).date(), first.timetz())
                windows.append((moved + timedelta(hours=1), timedelta(hours=2)))
            for lo, span in windows:
                hi = lo + span
                fast = series_instances(tenant, master, lo, hi, event_json(tenant, master))
                plain = _plain_instances(tenant, master, lo, hi)
                assert fast == plain
                compared += len(plain)
        assert compared > 100


def test_a_calendar_is_made_with_its_colour(client: httpx.Client, user: Any) -> None:
    made = client.post(f"/users/{user.id}/calendars", json={"name": "Teal", "color": "lightTeal"})
    assert made.status_code == 201 and made.json()["color"] == "lightTeal"
    plain = client.post(f"/users/{user.id}/calendars", json={"name": "Plain"})
    assert plain.json()["color"] == "auto"
    bad = client.post(f"/users/{user.id}/calendars", json={"name": "Odd", "color": "teal"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "RequestBodyRead"
    names = {c["name"] for c in client.get(f"/users/{user.id}/calendars").json()["value"]}
    assert "Odd" not in names


def test_calendar_view_delta_reports_what_left_the_window_or_changed_outside_it(
    client: httpx.Client, user: Any
) -> None:
    """Graph's event-delta page: a round returns under ``@removed`` (reason ``deleted``) the
    events inside the window deleted since, and the events outside it added, deleted or
    updated since. An event moved out, one edited while outside, one added outside and a
    series moved out are named (the series by its master and the occurrences the window
    held); a series made shorter loses the occurrences it no longer has; what did not
    change is not named, and a quiet round names nothing."""
    made = client.post(f"/users/{user.id}/calendars", json={"name": "Window edges"})
    assert made.status_code == 201
    calendar = made.json()["id"]
    events = f"/users/{user.id}/calendars/{calendar}/events"

    def add(subject: str, start: str, end: str, recurrence: Any = None) -> str:
        body: dict[str, Any] = {
            "subject": subject,
            "start": {"dateTime": start, "timeZone": "UTC"},
            "end": {"dateTime": end, "timeZone": "UTC"},
        }
        if recurrence is not None:
            body["recurrence"] = recurrence
        created = client.post(events, json=body)
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    def weekly(start: str, count: int) -> dict[str, Any]:
        return {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
            "range": {"type": "numbered", "startDate": start, "numberOfOccurrences": count},
        }

    leaving = add("Moved out", "2026-03-03T10:00:00", "2026-03-03T11:00:00")
    outside = add("Far ahead", "2027-02-01T10:00:00", "2027-02-01T11:00:00")
    shortened = add(
        "Shortened", "2026-03-02T09:00:00", "2026-03-02T09:30:00", weekly("2026-03-02", 6)
    )
    series_out = add(
        "Series out", "2026-04-06T14:00:00", "2026-04-06T15:00:00", weekly("2026-04-06", 4)
    )
    deleted = add("Deleted", "2026-03-04T10:00:00", "2026-03-04T11:00:00")
    quiet = add("Left alone", "2026-03-05T10:00:00", "2026-03-05T11:00:00")
    # A series wholly outside the window, edited: it is named by its master alone.
    far_series = add(
        "Far series", "2027-03-01T08:00:00", "2027-03-01T08:30:00", weekly("2027-03-01", 3)
    )

    view = f"/users/{user.id}/calendars/{calendar}/calendarView/delta"
    first, delta = collect(client, view, params=WINDOW, headers={"Prefer": "odata.maxpagesize=3"})
    assert not any("@removed" in v for v in first)
    held = {v["id"]: v for v in first}
    assert leaving in held and quiet in held and outside not in held
    shortened_ids = sorted(
        (v for v in first if v.get("seriesMasterId") == shortened),
        key=lambda v: v["start"]["dateTime"],
    )
    assert len(shortened_ids) == 6
    series_out_ids = {v["id"] for v in first if v.get("seriesMasterId") == series_out}
    assert len(series_out_ids) == 4

    def patch(event_id: str, body: dict[str, Any]) -> None:
        answer = client.patch(f"/users/{user.id}/events/{event_id}", json=body)
        assert answer.status_code == 200, answer.text

    patch(
        leaving,
        {
            "start": {"dateTime": "2027-01-11T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2027-01-11T11:00:00", "timeZone": "UTC"},
        },
    )
    patch(outside, {"subject": "Far ahead (edited)"})
    patch(shortened, {"recurrence": weekly("2026-03-02", 3)})
    patch(
        series_out,
        {
            "start": {"dateTime": "2027-04-05T14:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2027-04-05T15:00:00", "timeZone": "UTC"},
            "recurrence": weekly("2027-04-05", 4),
        },
    )
    patch(far_series, {"subject": "Far series (edited)"})
    assert client.delete(f"/users/{user.id}/events/{deleted}").status_code == 204
    added_outside = add("Added far ahead", "2027-05-03T10:00:00", "2027-05-03T11:00:00")

    changes, again = collect(client, delta, headers={"Prefer": "odata.maxpagesize=3"})
    removed = [v["id"] for v in changes if "@removed" in v]
    assert all(
        v["@removed"] == {"reason": "deleted"} and v["@odata.type"] == "#microsoft.graph.event"
        for v in changes
        if "@removed" in v
    )
    assert len(removed) == len(set(removed))
    dropped = {v["id"] for v in shortened_ids[3:]}
    assert set(removed) == {
        leaving,
        outside,
        deleted,
        added_outside,
        far_series,
        series_out,
        *series_out_ids,
        *dropped,
    }
    live = {v["id"]: v for v in changes if "@removed" not in v}
    # The shortened series' remaining occurrences come again (their master changed).
    assert set(live) == {v["id"] for v in shortened_ids[:3]}
    assert quiet not in live and quiet not in removed

    nothing, _ = collect(client, again)
    assert nothing == []
