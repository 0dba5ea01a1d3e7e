"""An event as iCalendar (RFC 5545), for download and export.

The series master becomes a VEVENT with its RRULE, EXDATEs for cancelled occurrences and
times in the organiser's zone (a VTIMEZONE is included, so a weekly 9:00 stays 9:00 across
daylight saving); each exception becomes a VEVENT with the same UID and a RECURRENCE-ID.
The text is built with the ``icalendar`` library. File attachments are inlined as
``ATTACH;ENCODING=BASE64;VALUE=BINARY`` and streamed from the blob store with folding done
here, so a 100 MB attachment never sits in memory as one base64 string.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from icalendar import Alarm, Calendar, Event, vCalAddress, vText

from safekeep.backup.outlook import FileType, RenderedForm, component
from safekeep.backup.services.base import Content
from safekeep.backup.services.calendar.search import (
    EVENT_KIND,
    address,
    body_text,
    cancelled_dates,
    end_of,
    location_name,
    offset_time,
    start_of,
    zone,
)
from safekeep.storage.repository import ContentRef, TenantRepository
from safekeep.tenants.models import ItemVersion
from safekeep.text import storable, storable_text

PRODID = "-//Safekeep//Safekeep backup//EN"
MARKER = "X-SAFEKEEP-ATTACHMENTS"
LINE_OCTETS = 75
FILE_ATTACHMENT = "#microsoft.graph.fileAttachment"

_DAYS = {
    "sunday": "SU",
    "monday": "MO",
    "tuesday": "TU",
    "wednesday": "WE",
    "thursday": "TH",
    "friday": "FR",
    "saturday": "SA",
}
_SETPOS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_PARTSTAT = {
    "accepted": "ACCEPTED",
    "declined": "DECLINED",
    "tentativelyaccepted": "TENTATIVE",
    "none": "NEEDS-ACTION",
    "notresponded": "NEEDS-ACTION",
    "organizer": "ACCEPTED",
}
_ROLE = {
    "required": "REQ-PARTICIPANT",
    "optional": "OPT-PARTICIPANT",
    "resource": "NON-PARTICIPANT",
}
_CLASS = {
    "normal": "PUBLIC",
    "personal": "PRIVATE",
    "private": "PRIVATE",
    "confidential": "CONFIDENTIAL",
}
_PRIORITY = {"low": 9, "normal": 5, "high": 1}


def rrule_of(recurrence: Any, start: datetime | date, event_zone: tzinfo) -> dict[str, Any] | None:
    """Graph's ``patternedRecurrence`` as an RRULE value for ``icalendar``."""
    if not isinstance(recurrence, dict):
        return None
    pattern = recurrence.get("pattern") or {}
    rrange = recurrence.get("range") or {}
    kind = str(pattern.get("type") or "")
    rule: dict[str, Any] = {}
    interval = int(pattern.get("interval") or 1)
    days = [_DAYS[d.lower()] for d in pattern.get("daysOfWeek") or [] if d.lower() in _DAYS]
    if kind == "daily":
        rule["freq"] = "DAILY"
    elif kind == "weekly":
        rule["freq"] = "WEEKLY"
        if days:
            rule["byday"] = days
        first = str(pattern.get("firstDayOfWeek") or "").lower()
        if first in _DAYS:
            rule["wkst"] = _DAYS[first]
    elif kind in ("absoluteMonthly", "relativeMonthly"):
        rule["freq"] = "MONTHLY"
    elif kind in ("absoluteYearly", "relativeYearly"):
        rule["freq"] = "YEARLY"
        if pattern.get("month"):
            rule["bymonth"] = int(pattern["month"])
    else:
        return None
    if kind in ("absoluteMonthly", "absoluteYearly") and pattern.get("dayOfMonth"):
        rule["bymonthday"] = int(pattern["dayOfMonth"])
    if kind in ("relativeMonthly", "relativeYearly"):
        rule["byday"] = days or ["MO"]
        rule["bysetpos"] = _SETPOS.get(str(pattern.get("index") or "first").lower(), 1)
    if interval != 1:
        rule["interval"] = interval
    kind_of_range = str(rrange.get("type") or "noEnd")
    if kind_of_range == "numbered" and rrange.get("numberOfOccurrences"):
        rule["count"] = int(rrange["numberOfOccurrences"])
    elif kind_of_range == "endDate" and rrange.get("endDate"):
        last_day = date.fromisoformat(str(rrange["endDate"])[:10])
        if isinstance(start, datetime):
            local = datetime.combine(last_day, start.astimezone(event_zone).time(), event_zone)
            rule["until"] = local.astimezone(UTC)
        else:
            rule["until"] = last_day
    return rule


def _times(event: dict[str, Any], event_zone: tzinfo) -> tuple[datetime | date, datetime | date]:
    start = start_of(event) or datetime.now(UTC)
    end = end_of(event) or start
    if event.get("isAllDay"):
        # All-day events are floating dates: Graph reports them as midnight.
        first = start.date()
        last = end.date() if end.date() > first else first + timedelta(days=1)
        return first, last
    end_zone = (
        zone(event.get("originalEndTimeZone")) if event.get("originalEndTimeZone") else event_zone
    )
    return start.astimezone(event_zone), end.astimezone(end_zone)


def _person(recipient: Any, role: str | None = None) -> vCalAddress | None:
    name, addr = address(recipient)
    if not addr:
        return None
    person = vCalAddress(f"mailto:{addr}")
    if name:
        person.params["CN"] = vText(name)
    if role is not None:
        person.params["ROLE"] = _ROLE.get(role.lower(), "REQ-PARTICIPANT")
        person.params["CUTYPE"] = "RESOURCE" if role.lower() == "resource" else "INDIVIDUAL"
        response = str(((recipient or {}).get("status") or {}).get("response") or "none")
        person.params["PARTSTAT"] = _PARTSTAT.get(response.lower(), "NEEDS-ACTION")
    return person


def _vevent(
    event: dict[str, Any],
    uid: str,
    event_zone: tzinfo,
    *,
    master: dict[str, Any] | None = None,
    marker: str | None = None,
) -> Event:
    """One VEVENT: a single event, a series master (``master`` None) or an exception."""
    vevent = Event()
    vevent.add("uid", uid)
    stamp = offset_time(event.get("lastModifiedDateTime")) or datetime.now(UTC)
    vevent.add("dtstamp", stamp.astimezone(UTC))
    if event.get("createdDateTime"):
        created = offset_time(event["createdDateTime"])
        if created:
            vevent.add("created", created.astimezone(UTC))
    vevent.add("last-modified", stamp.astimezone(UTC))
    start, end = _times(event, event_zone)
    vevent.add("dtstart", start)
    vevent.add("dtend", end)
    if master is not None:
        original = offset_time(event.get("originalStart"))
        if original is not None:
            value: datetime | date = (
                original_day(original, master)
                if master.get("isAllDay")
                else original.astimezone(event_zone)
            )
            vevent.add("recurrence-id", value)
    else:
        rule = rrule_of(event.get("recurrence"), start, event_zone)
        if rule:
            vevent.add("rrule", rule)
            cancelled = cancelled_dates(event)
            if cancelled:
                if isinstance(start, datetime):
                    exdates: list[datetime | date] = [
                        datetime.combine(
                            d, time(start.hour, start.minute, start.second), start.tzinfo
                        )
                        for d in cancelled
                    ]
                else:
                    exdates = list(cancelled)
                vevent.add("exdate", exdates)
    vevent.add("summary", str(event.get("subject") or ""))
    text = body_text(event)
    if text:
        vevent.add("description", text)
    body = event.get("body") or {}
    if str(body.get("contentType") or "").lower() == "html" and body.get("content"):
        vevent.add("x-alt-desc", str(body["content"]), parameters={"FMTTYPE": "text/html"})
    location = location_name(event)
    if location:
        vevent.add("location", location)
    organizer = _person(event.get("organizer"))
    if organizer is not None:
        vevent.add("organizer", organizer)
    for attendee in event.get("attendees") or []:
        person = _person(attendee, str(attendee.get("type") or "required"))
        if person is not None:
            if event.get("responseRequested"):
                person.params["RSVP"] = "TRUE"
            vevent.add("attendee", person)
    if event.get("categories"):
        vevent.add("categories", [str(c) for c in event["categories"]])
    sensitivity = str(event.get("sensitivity") or "normal").lower()
    vevent.add("class", _CLASS.get(sensitivity, "PUBLIC"))
    show_as = str(event.get("showAs") or "busy")
    vevent.add("transp", "TRANSPARENT" if show_as.lower() == "free" else "OPAQUE")
    vevent.add("x-microsoft-cdo-busystatus", show_as.upper())
    vevent.add("priority", _PRIORITY.get(str(event.get("importance") or "normal").lower(), 5))
    vevent.add("status", "CANCELLED" if event.get("isCancelled") else "CONFIRMED")
    if event.get("isAllDay"):
        vevent.add("x-microsoft-cdo-alldayevent", "TRUE")
    join = (event.get("onlineMeeting") or {}).get("joinUrl") or event.get("onlineMeetingUrl")
    if join:
        vevent.add("url", str(join))
        vevent.add("x-microsoft-skypeteamsmeetingurl", str(join))
    for attachment in event.get("attachments") or []:
        if attachment.get(
            "@odata.type"
        ) == "#microsoft.graph.referenceAttachment" and attachment.get("sourceUrl"):
            vevent.add("attach", str(attachment["sourceUrl"]))
    if event.get("isReminderOn") and event.get("reminderMinutesBeforeStart") is not None:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", "Reminder")
        alarm.add("trigger", timedelta(minutes=-int(event["reminderMinutesBeforeStart"])))
        vevent.add_component(alarm)
    if marker is not None:
        vevent.add(MARKER, marker)
    return vevent


def original_day(original: datetime, master: dict[str, Any]) -> date:
    """The date an occurrence of an all-day series stands for, from its ``originalStart``.
    Graph gives that as the true instant of the occurrence's midnight in the series' zone
    (microsoftgraph/microsoft-graph-docs#2804: ``2018-06-05T07:00:00Z`` for 5 June in
    Pacific time), not midnight UTC, so its UTC date is the day before east of UTC. Read on
    the series' clock (its ``recurrenceTimeZone``, else its start's zone); when that zone is
    unknown, the nearest midnight (right for offsets up to 12 hours either way)."""
    rrange = (master.get("recurrence") or {}).get("range") or {}
    series_zone = zone(rrange.get("recurrenceTimeZone") or master.get("originalStartTimeZone"))
    if series_zone is UTC:
        return (original.astimezone(UTC) + timedelta(hours=12)).date()
    return original.astimezone(series_zone).date()


def render(event: dict[str, Any]) -> bytes:
    """The iCalendar text of an event and its exceptions (file attachments left out; see
    ``stream``)."""
    return _render(event, markers=False)


def _render(event: dict[str, Any], *, markers: bool) -> bytes:
    """The text; with ``markers``, each VEVENT with files of its own carries a marker line
    naming whose files go there (``0`` the event itself, ``i`` its i-th exception)."""
    event = storable(event)  # iCalendar is UTF-8: no lone surrogate (safekeep.text)
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    event_zone = zone(event.get("originalStartTimeZone"))
    uid = str(event.get("iCalUId") or event.get("id") or "")

    def marker(owner: dict[str, Any], key: int) -> str | None:
        return str(key) if markers and file_attachments(owner) else None

    calendar.add_component(_vevent(event, uid, event_zone, marker=marker(event, 0)))
    for index, exception in enumerate(event.get("exceptionOccurrences") or [], start=1):
        calendar.add_component(
            _vevent(exception, uid, event_zone, master=event, marker=marker(exception, index))
        )
    calendar.add_missing_timezones()
    data: bytes = calendar.to_ical()
    return data


def file_attachments(event: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        a
        for a in event.get("attachments") or []
        if a.get("@odata.type") == FILE_ATTACHMENT and a.get("content")
    ]


_MARKER_LINE = re.compile(rb"^" + re.escape(MARKER.encode()) + rb":(\d+)\r\n", re.MULTILINE)


async def stream(repo: TenantRepository, event: dict[str, Any]) -> AsyncIterator[bytes]:
    """The ICS bytes with every file attachment inlined, in bounded memory: the event's own
    files in its VEVENT, each exception's files in that exception's VEVENT (RFC 5545 allows
    ATTACH in any VEVENT, one with a RECURRENCE-ID too)."""
    owners = [event, *(event.get("exceptionOccurrences") or [])]
    if not any(file_attachments(owner) for owner in owners):
        yield _render(event, markers=False)
        return
    parts = _MARKER_LINE.split(_render(event, markers=True))
    yield parts[0]
    for key, text in zip(parts[1::2], parts[2::2], strict=True):
        for attachment in file_attachments(owners[int(key)]):
            async for piece in _attach_lines(repo, attachment):
                yield piece
        yield text


def _param(value: str) -> str:
    """A parameter value: no control characters or DQUOTE, quoted when it has ``:;,``."""
    cleaned = "".join(c for c in value if c >= " " and c not in '"\x7f')
    if any(c in cleaned for c in ":;,"):
        return f'"{cleaned}"'
    return cleaned


class _Folder:
    """Fold one content line at 75 octets (CRLF + space), never inside a UTF-8 sequence."""

    def __init__(self) -> None:
        self.used = 0

    def feed(self, text: str) -> bytes:
        out = bytearray()
        for char in storable_text(text):  # iCalendar is UTF-8: no lone surrogate
            encoded = char.encode()
            if self.used + len(encoded) > LINE_OCTETS:
                out += b"\r\n "
                self.used = 1
            out += encoded
            self.used += len(encoded)
        return bytes(out)

    def feed_ascii(self, data: bytes) -> bytes:
        out = bytearray()
        pos = 0
        while pos < len(data):
            room = LINE_OCTETS - self.used
            if room <= 0:
                out += b"\r\n "
                self.used = 1
                room = LINE_OCTETS - 1
            piece = data[pos : pos + room]
            out += piece
            self.used += len(piece)
            pos += len(piece)
        return bytes(out)


async def _attach_lines(repo: TenantRepository, attachment: dict[str, Any]) -> AsyncIterator[bytes]:
    folder = _Folder()
    content_type = str(attachment.get("contentType") or "application/octet-stream")
    name = str(attachment.get("name") or "attachment")
    header = (
        f"ATTACH;FMTTYPE={_param(content_type)};ENCODING=BASE64;VALUE=BINARY;"
        f"X-FILENAME={_param(name)}:"
    )
    yield folder.feed(header)
    carry = b""
    async for chunk in repo.read(ContentRef.from_json(attachment["content"])):
        data = carry + chunk
        cut = len(data) - len(data) % 3
        carry = data[cut:]
        if cut:
            yield folder.feed_ascii(base64.b64encode(data[:cut]))
    if carry:
        yield folder.feed_ascii(base64.b64encode(carry))
    yield b"\r\n"


ICS = FileType("text/calendar; charset=utf-8", "ics", "an ICS form")


def ics_filename(version: ItemVersion) -> str:
    """Named like "2026-01-05 0900 Weekly sync.ics", so a folder listing sorts by date."""
    start = offset_time((version.meta or {}).get("start"))
    stamp = f"{start:%Y-%m-%d %H%M} " if start else ""
    return component(f"{stamp}{version.name or 'event'}")[:140] + ".ics"


class IcsForm(RenderedForm):
    """An event (a series with its exceptions) as one ``.ics`` file."""

    kind = EVENT_KIND
    file = ICS

    def filename(self, version: ItemVersion) -> str:
        return ics_filename(version)

    def render(self, repo: TenantRepository, document: dict[str, Any]) -> AsyncIterator[bytes]:
        return stream(repo, document)

    def default_folder(self, version: ItemVersion) -> str:
        return str((version.meta or {}).get("calendar") or "Calendar")


FORM = IcsForm()


async def content(repo: TenantRepository, version: ItemVersion) -> Content:
    return await FORM.content(repo, version)
