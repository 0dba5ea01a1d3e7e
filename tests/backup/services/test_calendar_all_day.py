"""An all-day recurring series outside UTC through backup, export and restore, against
graphsim answering as Graph does: start/end midnight to midnight of the dates labelled UTC
(microsoftgraph/microsoft-graph-docs#1802), ``originalStart`` of an occurrence the true
instant of its local midnight (#2804). East of UTC that instant falls on the day before in
UTC, west of it on the same day, so both sides are tried."""

from __future__ import annotations

import base64
import io
import zipfile
from datetime import date
from typing import Any
from urllib.parse import quote

import icalendar
import pytest

from safekeep.backup.context import graph_client
from safekeep.backup.services.calendar import render as ics
from safekeep.tenants.models import Account
from tests.backup.harness import EngineHarness
from tests.backup.services.test_calendar import default_calendar, events_in, sim_events

MINUTES = b"Notes of the changed holiday only.\n"
ZONES = ["W. Europe Standard Time", "Pacific Standard Time"]


async def _holiday_series(h: EngineHarness, uid: str, zone: str) -> str:
    """Four Mondays from 7 Dec 2026, all day in ``zone``; the second changed (with a file of
    its own), the third cancelled. Made through Graph, as a user's client would."""
    base = f"/users/{quote(uid, safe='')}"
    async with graph_client(h.runtime, h.tenant) as g:
        made = await g.request_json(
            "POST",
            f"{base}/events",
            json={
                "subject": "Holiday series",
                "isAllDay": True,
                "start": {"dateTime": "2026-12-07T00:00:00", "timeZone": zone},
                "end": {"dateTime": "2026-12-08T00:00:00", "timeZone": zone},
                "recurrence": {
                    "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                    "range": {
                        "type": "numbered",
                        "startDate": "2026-12-07",
                        "numberOfOccurrences": 4,
                    },
                },
            },
            mailbox=uid,
            expected=(201,),
        )
        assert made is not None
        instances = [
            i
            async for page in g.paginate(
                f"{base}/events/{made['id']}/instances",
                params={
                    "startDateTime": "2026-12-01T00:00:00Z",
                    "endDateTime": "2027-01-10T00:00:00Z",
                },
                mailbox=uid,
            )
            for i in page
        ]
        changed, cancelled = instances[1]["id"], instances[2]["id"]
        await g.request_json(
            "PATCH",
            f"{base}/events/{quote(changed, safe='')}",
            json={"subject": "Holiday (changed)"},
            mailbox=uid,
            expected=(200,),
        )
        await g.request_json(
            "POST",
            f"{base}/events/{quote(changed, safe='')}/attachments",
            json={
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "notes.txt",
                "contentType": "text/plain",
                "contentBytes": base64.b64encode(MINUTES).decode(),
            },
            mailbox=uid,
            expected=(201,),
        )
        await g.request_json(
            "DELETE", f"{base}/events/{quote(cancelled, safe='')}", mailbox=uid, expected=(204,)
        )
    return str(made["id"])


def _vevents(data: bytes) -> list[Any]:
    archive = zipfile.ZipFile(io.BytesIO(data))
    (name,) = [n for n in archive.namelist() if "Holiday series" in n]
    return list(icalendar.Calendar.from_ical(archive.read(name)).walk("VEVENT"))


@pytest.mark.parametrize("zone", ZONES)
async def test_an_all_day_series_keeps_its_dates_and_exception_through_restore(
    engine: EngineHarness, account: Account, zone: str
) -> None:
    h = engine
    uid = account.graph_id
    series = await _holiday_series(h, uid, zone)
    await h.backup(account, "calendar")
    h.sim.delete_item(h.sim_tenant_id, series)

    report = await h.restore(account, "calendar")
    assert report.failed_count == 0
    assert report.restored_count == 1

    (back,) = [
        e for e in events_in(h, default_calendar(h, uid)) if e.props["subject"] == "Holiday series"
    ]
    assert back.props["isAllDay"] is True
    assert back.props["start"]["dateTime"].startswith("2026-12-07T00:00:00")
    assert back.props["end"]["dateTime"].startswith("2026-12-08T00:00:00")
    # Created in the organiser's zone, not as an all-day event in UTC.
    assert back.props["originalStartTimeZone"] == zone
    assert {d: e.get("subject") for d, e in back.exceptions.items()} == {
        "2026-12-14": "Holiday (changed)"
    }
    assert back.cancelled == ["2026-12-21"]
    ((day, own),) = back.instance_attachments.items()
    assert day == "2026-12-14"
    assert [(a.name, a.content.read() if a.content else b"") for a in own] == [
        ("notes.txt", MINUTES)
    ]
    assert len([e for e in sim_events(h, uid).values() if "Holiday" in e.props["subject"]]) == 1


@pytest.mark.parametrize("zone", ZONES)
async def test_the_ics_of_an_all_day_series_names_its_exception_by_date(
    engine: EngineHarness, account: Account, zone: str
) -> None:
    """RFC 5545 §3.8.4.4: RECURRENCE-ID has DTSTART's value type and names the instance the
    RRULE makes; east of UTC the UTC date of ``originalStart`` is the day before."""
    h = engine
    await _holiday_series(h, account.graph_id, zone)
    await h.backup(account, "calendar")
    master, exception = _vevents(await h.export(account, "calendar"))

    assert master["dtstart"].dt == date(2026, 12, 7)
    assert master["dtend"].dt == date(2026, 12, 8)
    assert master.get("recurrence-id") is None
    assert [d.dt for d in master["exdate"].dts] == [date(2026, 12, 21)]
    assert str(exception["summary"]) == "Holiday (changed)"
    assert exception["dtstart"].dt == date(2026, 12, 14)
    assert exception["recurrence-id"].dt == date(2026, 12, 14)
    assert type(exception["recurrence-id"].dt) is type(master["dtstart"].dt)


async def test_the_ics_carries_the_files_of_each_exception(
    engine: EngineHarness, account: Account
) -> None:
    """A file only an exception carries is inlined in that exception's VEVENT, as the
    series' own files are in the series' (the export and the item download alike)."""
    h = engine
    await _holiday_series(h, account.graph_id, ZONES[0])
    await h.backup(account, "calendar")
    master, exception = _vevents(await h.export(account, "calendar"))

    assert master.get("attach") is None
    attach = exception["attach"]
    assert attach.params["X-FILENAME"] == "notes.txt"
    assert attach.params["FMTTYPE"] == "text/plain"
    assert base64.b64decode(attach.to_ical()) == MINUTES
    assert ics.MARKER.encode() not in await _download(h, account)


async def _download(h: EngineHarness, account: Account) -> bytes:
    """The series' ICS as the item download streams it."""
    from safekeep.backup.context import open_repository
    from safekeep.backup.services.base import read_document

    (version,) = [
        v
        for v in await h.all_versions(account, "calendar")
        if v.kind == "event" and v.name == "Holiday series"
    ]
    repo = await open_repository(h.runtime, h.tenant)
    document = await read_document(repo, version)
    assert document is not None
    out = b"".join([piece async for piece in ics.stream(repo, document)])
    events = list(icalendar.Calendar.from_ical(out).walk("VEVENT"))
    assert base64.b64decode(events[1]["attach"].to_ical()) == MINUTES
    return out
