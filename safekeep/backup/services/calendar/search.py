"""Reading a stored event document: times in their own zone, the browse metadata and the
searchable text (``search_fields``, the service's search hook). Shared by the collector, the
ICS renderer, restore and the index retry job, so that all of them agree on what an event
says."""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from safekeep.backup.catalog import SearchFields
from safekeep.backup.outlook import document_search
from safekeep.search.extract import html_to_text
from safekeep.settings import settings

# Keys we add to a Graph event document; Graph never sends keys starting with "_".
PRIVATE = "_safekeep"
CALENDAR_KIND = "calendar"
EVENT_KIND = "event"
MAX_META_ATTENDEES = 50


def zone(name: str | None) -> tzinfo:
    """The tz of a Graph time zone name: Windows names ("W. Europe Standard Time") through
    CLDR's mapping, IANA names as they are, anything unknown (Outlook's "Customized Time
    Zone", "tzone://Microsoft/Utc") as UTC, since Graph then reports the time in UTC."""
    if not name or name.upper() in ("UTC", "Z", "ETC/UTC", "TZONE://MICROSOFT/UTC"):
        return UTC
    candidate = WINDOWS_TO_OLSON.get(name, name)
    try:
        return ZoneInfo(candidate)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def graph_time(value: Any) -> datetime | None:
    """A Graph ``dateTimeTimeZone`` ({"dateTime", "timeZone"}) as an aware datetime."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    text = str(value["dateTime"]).strip().rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone(value.get("timeZone")))
    return parsed


def offset_time(value: Any) -> datetime | None:
    """An ``Edm.DateTimeOffset`` string ("2026-01-05T09:00:00Z") as an aware datetime."""
    if not value:
        return None
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        tail = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{tail}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def start_of(event: dict[str, Any]) -> datetime | None:
    return graph_time(event.get("start"))


def end_of(event: dict[str, Any]) -> datetime | None:
    return graph_time(event.get("end"))


def local_start(event: dict[str, Any]) -> datetime | None:
    """The start in the zone the organiser chose (Graph reports UTC unless asked)."""
    start = start_of(event)
    if start is None:
        return None
    return start.astimezone(zone(event.get("originalStartTimeZone")))


def cancelled_dates(event: dict[str, Any]) -> list[date]:
    """Dates of cancelled occurrences; Graph names them "OID.<master id>.<yyyy-mm-dd>"."""
    out: list[date] = []
    for value in event.get("cancelledOccurrences") or []:
        tail = str(value).rsplit(".", 1)[-1]
        try:
            out.append(date.fromisoformat(tail[:10]))
        except ValueError:
            continue
    return out


def address(recipient: Any) -> tuple[str, str]:
    """(name, address) of a Graph recipient or attendee."""
    email = (recipient or {}).get("emailAddress") or {}
    return str(email.get("name") or ""), str(email.get("address") or "")


def location_name(event: dict[str, Any]) -> str:
    loc = event.get("location") or {}
    name = str(loc.get("displayName") or "")
    if not name:
        names = [str(x.get("displayName") or "") for x in event.get("locations") or []]
        name = "; ".join(n for n in names if n)
    return name


def body_text(event: dict[str, Any]) -> str:
    body = event.get("body") or {}
    content = str(body.get("content") or "")
    if str(body.get("contentType") or "").lower() == "html":
        return html_to_text(content)
    return content.strip()


_ORDINAL = {"first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "last": "last"}


def recurrence_summary(recurrence: Any) -> str | None:
    """A short human description of a Graph ``patternedRecurrence``."""
    if not isinstance(recurrence, dict):
        return None
    pattern = recurrence.get("pattern") or {}
    rrange = recurrence.get("range") or {}
    kind = str(pattern.get("type") or "")
    interval = int(pattern.get("interval") or 1)
    days = ", ".join(str(d) for d in pattern.get("daysOfWeek") or [])
    unit = {
        "daily": "day",
        "weekly": "week",
        "absoluteMonthly": "month",
        "relativeMonthly": "month",
        "absoluteYearly": "year",
        "relativeYearly": "year",
    }.get(kind, kind)
    text = f"every {unit}" if interval == 1 else f"every {interval} {unit}s"
    if kind == "weekly" and days:
        text += f" on {days}"
    elif kind in ("absoluteMonthly", "absoluteYearly"):
        text += f" on day {pattern.get('dayOfMonth')}"
        if kind == "absoluteYearly":
            text += f" of month {pattern.get('month')}"
    elif kind in ("relativeMonthly", "relativeYearly"):
        text += f" on the {_ORDINAL.get(str(pattern.get('index')), pattern.get('index'))} {days}"
    if rrange.get("startDate"):
        text += f" from {rrange['startDate']}"
    if rrange.get("type") == "endDate" and rrange.get("endDate"):
        text += f" until {rrange['endDate']}"
    elif rrange.get("type") == "numbered":
        text += f", {rrange.get('numberOfOccurrences')} times"
    return text


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def meta_of(event: dict[str, Any], calendar_name: str) -> dict[str, Any]:
    """What the browse API shows of an event without reading its document:
    subject, organizer {name, address}, attendees [{name, address, type, response}]
    (first 50), location, start/end (UTC ISO), time_zone, is_all_day, type, recurrence
    (a summary), exceptions and cancelled (counts), has_attachments, attachments (count),
    calendar, is_online_meeting, join_url, ical_uid, categories, sensitivity, show_as."""
    org_name, org_address = address(event.get("organizer"))
    attendees = [
        {
            "name": address(a)[0],
            "address": address(a)[1],
            "type": a.get("type"),
            "response": ((a.get("status") or {}).get("response")),
        }
        for a in (event.get("attendees") or [])[:MAX_META_ATTENDEES]
    ]
    online = event.get("onlineMeeting") or {}
    attachments = event.get("attachments") or []
    return {
        "subject": event.get("subject") or "",
        "organizer": {"name": org_name, "address": org_address},
        "attendees": attendees,
        "attendee_count": len(event.get("attendees") or []),
        "location": location_name(event),
        "start": iso(start_of(event)),
        "end": iso(end_of(event)),
        "time_zone": event.get("originalStartTimeZone"),
        "is_all_day": bool(event.get("isAllDay")),
        "type": event.get("type"),
        "recurrence": recurrence_summary(event.get("recurrence")),
        "exceptions": len(event.get("exceptionOccurrences") or []),
        "cancelled": len(event.get("cancelledOccurrences") or []),
        "has_attachments": bool(attachments) or bool(event.get("hasAttachments")),
        "attachments": len(attachments),
        "calendar": calendar_name,
        "is_online_meeting": bool(event.get("isOnlineMeeting")),
        "join_url": online.get("joinUrl") or event.get("onlineMeetingUrl"),
        "ical_uid": event.get("iCalUId"),
        "categories": list(event.get("categories") or []),
        "sensitivity": event.get("sensitivity"),
        "show_as": event.get("showAs"),
    }


def fields_of(event: dict[str, Any], calendar_name: str) -> SearchFields:
    """Subject, location, organiser, attendees, body text (with the exceptions' own
    subjects and bodies) and attachment names and text, bounded by
    ``search_body_max_chars``. Attachment text is extracted when the bytes are in hand
    (collection) and kept in the document, so the index retry job needs only the document."""
    limit = settings.search_body_max_chars
    org_name, org_address = address(event.get("organizer"))
    people: list[str] = []
    recipients: list[str] = []
    for attendee in event.get("attendees") or []:
        name, addr = address(attendee)
        if addr:
            recipients.append(addr)
        people.extend(p for p in (name, addr) if p)
    people.extend(p for p in (org_name, org_address) if p)
    parts = [body_text(event)]
    for exception in event.get("exceptionOccurrences") or []:
        if exception.get("subject") and exception.get("subject") != event.get("subject"):
            parts.append(str(exception["subject"]))
        parts.append(body_text(exception))
    body = "\n".join(p for p in parts if p)[:limit]
    attachments = event.get("attachments") or []
    private = event.get(PRIVATE) or {}
    return SearchFields(
        title=str(event.get("subject") or ""),
        folder_path="/" + calendar_name if calendar_name else "/",
        date=start_of(event),
        sender=org_address or None,
        recipients=recipients,
        people=people,
        location=location_name(event) or None,
        body=body,
        attachment_names=[str(a.get("name") or "") for a in attachments if a.get("name")],
        attachment_text=str(private.get("attachment_text") or "")[:limit],
        has_attachments=bool(attachments),
        file_type="ics",
    )


# The service's search hook.
search_fields = document_search(EVENT_KIND, fields_of, folder="calendar", default="")
