"""All-day events as Graph shapes them.

- ``start``/``end``: midnight to midnight of the event's dates, whatever its zone ("This is by
  design. All day events always return midnight-to-midnight regardless of time zone",
  microsoftgraph/microsoft-graph-docs#1802; an all-day event on 2017-10-12 in Pacific time
  answers ``2017-10-12T00:00:00.0000000`` UTC), labelled UTC unless ``Prefer:
  outlook.timezone`` names a zone, which relabels them without moving them (#6003, #16798).
- ``originalStart`` of an occurrence or exception: the true UTC instant of local midnight
  (#2804: ``"originalStart": "2018-06-05T07:00:00Z"`` beside a start of
  ``2018-06-05T00:00:00.0000000`` UTC).
- A create with times other than midnight: Exchange moves the start to the midnight before it
  and the end to the midnight after it, in the request's zone ("Create all-day events by using
  EWS in Exchange").
"""

from __future__ import annotations

from typing import Any

import httpx
from msgraph.generated.models.event import Event
from msgraph.generated.models.event_collection_response import EventCollectionResponse

from tests.graphsim.conftest import sdk_parse

BERLIN = "W. Europe Standard Time"
PACIFIC = "Pacific Standard Time"
WINDOW = {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2027-01-10T00:00:00Z"}


def _all_day_series(client: httpx.Client, user: Any, zone: str, subject: str) -> dict[str, Any]:
    made = client.post(
        f"/users/{user.id}/events",
        json={
            "subject": subject,
            "isAllDay": True,
            "start": {"dateTime": "2026-12-07T00:00:00", "timeZone": zone},
            "end": {"dateTime": "2026-12-08T00:00:00", "timeZone": zone},
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                "range": {"type": "numbered", "startDate": "2026-12-07", "numberOfOccurrences": 4},
            },
        },
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def test_an_all_day_series_east_of_utc_answers_its_dates_and_true_original_starts(
    client: httpx.Client, user: Any
) -> None:
    made = _all_day_series(client, user, BERLIN, "Holiday east")
    assert made["start"] == {"dateTime": "2026-12-07T00:00:00.0000000", "timeZone": "UTC"}
    assert made["end"] == {"dateTime": "2026-12-08T00:00:00.0000000", "timeZone": "UTC"}
    assert made["originalStartTimeZone"] == BERLIN and made["isAllDay"] is True
    got = client.get(f"/users/{user.id}/events/{made['id']}")
    assert got.json()["start"] == made["start"] and got.json()["end"] == made["end"]
    sdk_parse(Event, got.content)

    page = client.get(f"/users/{user.id}/events/{made['id']}/instances", params=WINDOW)
    sdk_parse(EventCollectionResponse, page.content)
    instances = page.json()["value"]
    assert [i["start"]["dateTime"] for i in instances] == [
        f"2026-12-{d:02d}T00:00:00.0000000" for d in (7, 14, 21, 28)
    ]
    assert {i["start"]["timeZone"] for i in instances} == {"UTC"}
    assert instances[0]["end"] == {"dateTime": "2026-12-08T00:00:00.0000000", "timeZone": "UTC"}
    # Midnight in Berlin (UTC+1 in December) is 23:00 UTC the day before.
    assert [i["originalStart"] for i in instances] == [
        "2026-12-06T23:00:00Z",
        "2026-12-13T23:00:00Z",
        "2026-12-20T23:00:00Z",
        "2026-12-27T23:00:00Z",
    ]

    changed = client.patch(
        f"/users/{user.id}/events/{instances[1]['id']}", json={"subject": "Holiday (changed)"}
    )
    assert changed.status_code == 200
    exception = changed.json()
    assert exception["type"] == "exception"
    assert exception["start"]["dateTime"] == "2026-12-14T00:00:00.0000000"
    assert exception["originalStart"] == "2026-12-13T23:00:00Z"
    expanded = client.get(
        f"/users/{user.id}/events/{made['id']}", params={"$expand": "exceptionOccurrences"}
    ).json()
    (kept,) = expanded["exceptionOccurrences"]
    assert kept["start"] == {"dateTime": "2026-12-14T00:00:00.0000000", "timeZone": "UTC"}
    assert kept["originalStart"] == "2026-12-13T23:00:00Z"


def test_an_all_day_series_west_of_utc(client: httpx.Client, user: Any) -> None:
    made = _all_day_series(client, user, PACIFIC, "Holiday west")
    assert made["start"]["dateTime"] == "2026-12-07T00:00:00.0000000"
    instances = client.get(f"/users/{user.id}/events/{made['id']}/instances", params=WINDOW).json()[
        "value"
    ]
    assert instances[0]["start"]["dateTime"] == "2026-12-07T00:00:00.0000000"
    assert instances[0]["originalStart"] == "2026-12-07T08:00:00Z"  # PST is UTC-8


def test_a_calendar_view_finds_an_all_day_event_at_midnight_of_its_own_zone(
    client: httpx.Client, user: Any
) -> None:
    """Graph shows the dates but keeps the event where its zone puts it: a window that ends
    before Tokyo's midnight of the day (15:00 UTC the day before) does not hold it."""
    made = client.post(
        f"/users/{user.id}/events",
        json={
            "subject": "Tokyo day off",
            "isAllDay": True,
            "start": {"dateTime": "2026-12-10T00:00:00", "timeZone": "Tokyo Standard Time"},
            "end": {"dateTime": "2026-12-11T00:00:00", "timeZone": "Tokyo Standard Time"},
        },
    ).json()
    view = f"/users/{user.id}/calendarView"

    def ids(lo: str, hi: str) -> set[str]:
        found = client.get(view, params={"startDateTime": lo, "endDateTime": hi, "$top": "999"})
        return {v["id"] for v in found.json()["value"]}

    assert made["id"] in ids("2026-12-09T14:00:00Z", "2026-12-09T16:00:00Z")
    assert made["id"] not in ids("2026-12-09T00:00:00Z", "2026-12-09T14:59:00Z")
    assert made["id"] not in ids("2026-12-10T15:00:00Z", "2026-12-11T00:00:00Z")


def test_a_requested_zone_relabels_all_day_dates_without_moving_them(
    client: httpx.Client, user: Any
) -> None:
    made = _all_day_series(client, user, BERLIN, "Holiday zoned")
    prefer = {"Prefer": f'outlook.timezone="{PACIFIC}"'}
    got = client.get(f"/users/{user.id}/events/{made['id']}", headers=prefer)
    assert got.json()["start"] == {
        "dateTime": "2026-12-07T00:00:00.0000000",
        "timeZone": PACIFIC,
    }
    assert got.json()["end"] == {"dateTime": "2026-12-08T00:00:00.0000000", "timeZone": PACIFIC}
    assert got.headers["Preference-Applied"] == f'outlook.timezone="{PACIFIC}"'
    instances = client.get(
        f"/users/{user.id}/events/{made['id']}/instances", params=WINDOW, headers=prefer
    ).json()["value"]
    assert instances[0]["start"] == {"dateTime": "2026-12-07T00:00:00.0000000", "timeZone": PACIFIC}
    assert instances[0]["originalStart"] == "2026-12-06T23:00:00Z"  # an instant, not converted
    # A timed event beside it is converted as before.
    timed = client.post(
        f"/users/{user.id}/events",
        json={
            "subject": "timed",
            "start": {"dateTime": "2026-12-07T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-07T10:00:00", "timeZone": "UTC"},
        },
    ).json()
    shown = client.get(f"/users/{user.id}/events/{timed['id']}", headers=prefer).json()
    assert shown["start"] == {"dateTime": "2026-12-07T01:00:00.0000000", "timeZone": PACIFIC}
    # The cached answer without the header is still UTC.
    again = client.get(f"/users/{user.id}/events/{made['id']}/instances", params=WINDOW)
    assert again.json()["value"][0]["start"]["timeZone"] == "UTC"


def test_an_all_day_create_off_midnight_is_moved_to_the_midnights_around_it(
    client: httpx.Client, user: Any
) -> None:
    made = client.post(
        f"/users/{user.id}/events",
        json={
            "subject": "Off midnight",
            "isAllDay": True,
            "start": {"dateTime": "2026-06-06T13:00:00", "timeZone": PACIFIC},
            "end": {"dateTime": "2026-06-06T15:00:00", "timeZone": PACIFIC},
        },
    )
    assert made.status_code == 201, made.text
    assert made.json()["start"]["dateTime"] == "2026-06-06T00:00:00.0000000"
    assert made.json()["end"]["dateTime"] == "2026-06-07T00:00:00.0000000"
    # The times are read on the clock of the zone they are given in.
    late = client.post(
        f"/users/{user.id}/events",
        json={
            "subject": "Late UTC",
            "isAllDay": True,
            "start": {"dateTime": "2026-06-06T23:00:00", "timeZone": BERLIN},
            "end": {"dateTime": "2026-06-08T00:00:00", "timeZone": BERLIN},
        },
    ).json()
    assert late["start"]["dateTime"] == "2026-06-06T00:00:00.0000000"
    assert late["end"]["dateTime"] == "2026-06-08T00:00:00.0000000"
    empty = client.post(
        f"/users/{user.id}/events",
        json={
            "subject": "No day",
            "isAllDay": True,
            "start": {"dateTime": "2026-06-06T00:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-06-06T00:00:00", "timeZone": "UTC"},
        },
    )
    assert empty.status_code == 400
