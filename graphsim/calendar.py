"""Recurring events: expanding a series into occurrences and exceptions, as Outlook does.

A series master keeps its pattern; an occurrence is identified by its master and its
original date. Exceptions (moved or edited instances) and cancellations are stored on the
master, so that editing one instance changes the master's change number like in Exchange.
"""

from __future__ import annotations

import calendar as cal
import functools
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from graphsim import ids
from graphsim.http import GraphError
from graphsim.state import OItem, Tenant

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
INDEX = {"first": 0, "second": 1, "third": 2, "fourth": 3, "last": -1}
MAX_SCAN_DAYS = 366 * 12
# The Windows zone names graphsim knows (Graph's dateTimeTimeZone takes Windows or IANA names).
WINDOWS_ZONES = {
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Romance Standard Time": "Europe/Paris",
    "GMT Standard Time": "Europe/London",
    "Eastern Standard Time": "America/New_York",
    "Pacific Standard Time": "America/Los_Angeles",
    "Tokyo Standard Time": "Asia/Tokyo",
}


def zone_named(name: str | None) -> tzinfo | None:
    """A Windows (``Pacific Standard Time``) or IANA (``Europe/Paris``) zone; None when
    unknown."""
    if not name or name.upper() in ("UTC", "Z", "COORDINATED UNIVERSAL TIME", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(WINDOWS_ZONES.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def series_zone(master: OItem) -> tzinfo:
    """The zone a series recurs in: its range's ``recurrenceTimeZone``, else the zone its
    start was given in. Exchange keeps a series at its wall-clock time there: a weekly 09:00
    in Berlin is 08:00 UTC in winter and 07:00 UTC in summer, and its dates are Berlin's."""
    rrange = (master.props.get("recurrence") or {}).get("range") or {}
    name = rrange.get("recurrenceTimeZone") or master.props.get("originalStartTimeZone")
    return zone_named(name) or UTC


# The calendar's span in Outlook (its first and last selectable days, 1601-04-01 to 4500-08-31,
# lie inside these): Exchange keeps times as Windows file times, which begin in 1601. Graph does
# not document its answer to a time outside it; graphsim refuses one as it refuses a malformed
# one.
EARLIEST = datetime(1601, 1, 1, tzinfo=UTC)
LATEST = datetime(4501, 1, 1, tzinfo=UTC)


def in_span(value: datetime) -> datetime | None:
    """``value`` in UTC when it lies in the calendar's span, else None (also when it does not
    convert: year 1 east of UTC, year 9999 west of it)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        return None
    return utc if EARLIEST <= utc < LATEST else None


PATTERN_TYPES = (
    "daily",
    "weekly",
    "absoluteMonthly",
    "relativeMonthly",
    "absoluteYearly",
    "relativeYearly",
)
RANGE_TYPES = ("endDate", "noEnd", "numbered")
MAX_OCCURRENCES = 999  # a numbered range in Outlook


def check_recurrence(value: Any) -> None:
    """Refuse a ``patternedRecurrence`` Exchange would not keep, as a create or a change of
    a series gives it, before anything is stored (one kept would fail every later read of
    its calendar). A value of the wrong shape, an unknown name or a date that does not parse
    is refused as a body Graph cannot read; one that reads but cannot recur (an interval or
    count below one, a day or month that does not exist, a range that ends before it starts,
    a weekly or relative pattern without its days) as a property that failed validation.
    Graph documents neither answer; the codes are its usual ones for each."""
    if value is None:
        return
    unreadable = GraphError(
        400, "UnableToDeserializePostBody", "were unable to deserialize the recurrence"
    )
    invalid = GraphError(
        400, "ErrorPropertyValidationFailure", "At least one property failed validation."
    )
    if not isinstance(value, dict):
        raise unreadable
    pattern, rrange = value.get("pattern"), value.get("range")
    if not isinstance(pattern, dict) or not isinstance(rrange, dict):
        raise unreadable
    if pattern.get("type") not in PATTERN_TYPES or rrange.get("type") not in RANGE_TYPES:
        raise unreadable
    numbers = [pattern.get(n) for n in ("interval", "dayOfMonth", "month")]
    numbers.append(rrange.get("numberOfOccurrences"))
    if any(n is not None and type(n) is not int for n in numbers):
        raise unreadable
    days = pattern.get("daysOfWeek")
    if days is not None and (
        not isinstance(days, list) or any(str(d).lower() not in DAYS for d in days)
    ):
        raise unreadable
    index, first_day = pattern.get("index"), pattern.get("firstDayOfWeek")
    if (index is not None and str(index).lower() not in INDEX) or (
        first_day is not None and str(first_day).lower() not in DAYS
    ):
        raise unreadable
    try:
        start = date.fromisoformat(str(rrange["startDate"]))
        end = date.fromisoformat(str(rrange["endDate"])) if rrange["type"] == "endDate" else None
    except (KeyError, ValueError) as exc:
        raise unreadable from exc
    kind = pattern["type"]
    if (
        not 1 <= (pattern.get("interval") or 0) <= MAX_OCCURRENCES
        or not EARLIEST.date() <= start < LATEST.date()
        or (end is not None and not start <= end < LATEST.date())
        or (
            rrange["type"] == "numbered"
            and not 1 <= (rrange.get("numberOfOccurrences") or 0) <= MAX_OCCURRENCES
        )
        or (kind in ("weekly", "relativeMonthly", "relativeYearly") and not days)
        or (kind.startswith("absolute") and not 1 <= (pattern.get("dayOfMonth") or 0) <= 31)
        or (kind.endswith("Yearly") and not 1 <= (pattern.get("month") or 0) <= 12)
    ):
        raise invalid


def parse_dt(value: dict[str, Any] | str) -> datetime:
    text = value["dateTime"] if isinstance(value, dict) else value
    text = text.strip().rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = head + "." + frac[:6]
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def fmt_dt(value: datetime) -> dict[str, str]:
    return {
        "dateTime": value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
        "timeZone": "UTC",
    }


# -- all-day events --------------------------------------------------------------------------
# Graph answers an all-day event's start and end as midnight to midnight of its dates,
# whatever its zone: "All day events always return midnight-to-midnight regardless of time
# zone" (microsoftgraph/microsoft-graph-docs#1802), labelled UTC by default and with the
# zone a ``Prefer: outlook.timezone`` names otherwise, still at midnight (#6003, #16798). The
# event itself lies at midnight of those dates in its own zone (``originalStartTimeZone``):
# that is where a calendar view finds it, and an occurrence's ``originalStart`` is that
# instant in UTC (#2804: ``"originalStart": "2018-06-05T07:00:00Z"`` beside a start of
# ``2018-06-05T00:00:00`` UTC for a Pacific series). graphsim keeps the dates as Graph shows
# them (``all_day_time``) and works the instants out from the zone.


class AllDayTime(dict[str, str]):
    """An all-day ``dateTimeTimeZone`` in an answer: a date at midnight, which a requested
    zone relabels but never moves (``in_request_zone``)."""


def all_day_time(day: date) -> dict[str, str]:
    return AllDayTime(dateTime=f"{day.isoformat()}T00:00:00.0000000", timeZone="UTC")


def day_of(value: dict[str, Any] | str) -> date:
    """The date of a stored all-day start or end (its text, never converted)."""
    text = value["dateTime"] if isinstance(value, dict) else value
    return date.fromisoformat(str(text).strip()[:10])


def is_all_day(props: dict[str, Any]) -> bool:
    return bool(props.get("isAllDay"))


def event_zone(props: dict[str, Any]) -> tzinfo:
    """The zone an event's dates belong to (the zone its start was given in)."""
    return zone_named(props.get("originalStartTimeZone")) or UTC


def midnight(day: date, zone: tzinfo) -> datetime:
    """The UTC instant of ``day``'s midnight in ``zone``."""
    local = datetime.combine(day, time(), zone)
    return local if zone is UTC else local.astimezone(UTC)


def instants(props: dict[str, Any], zone: tzinfo | None = None) -> tuple[datetime, datetime]:
    """An event's (or an exception's) start and end as instants in UTC: an all-day one from
    midnight of its first date to midnight after its last, in ``zone`` (its own by default)."""
    if is_all_day(props):
        where = zone or event_zone(props)
        return midnight(day_of(props["start"]), where), midnight(day_of(props["end"]), where)
    return parse_dt(props["start"]), parse_dt(props["end"])


def mark_all_day(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with its start and end marked as all-day dates when it is an all-day event."""
    if is_all_day(obj):
        for key in ("start", "end"):
            value = obj.get(key)
            if isinstance(value, dict) and not isinstance(value, AllDayTime):
                obj[key] = AllDayTime(value)
    return obj


def in_request_zone(body: Any, wanted: str | None) -> Any:
    """The answer with each all-day date labelled with the zone ``Prefer:
    outlook.timezone`` asked for, at the same midnight (a copy: cached answers are not
    changed). The server's zone conversion then leaves them alone, as it converts only times
    labelled UTC. An unknown zone leaves UTC, as for timed events."""
    if not wanted or zone_named(wanted) in (None, UTC):
        return body

    def walk(value: Any) -> Any:
        if isinstance(value, AllDayTime):
            return {"dateTime": value["dateTime"], "timeZone": wanted}
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(body)


def _matches(pattern: dict[str, Any], start: date, day: date) -> bool:
    kind = pattern.get("type", "daily")
    interval = max(1, int(pattern.get("interval") or 1))
    if kind == "daily":
        return (day - start).days % interval == 0
    if kind == "weekly":
        days = [d.lower() for d in pattern.get("daysOfWeek") or [DAYS[start.weekday()]]]
        if DAYS[day.weekday()] not in days:
            return False
        first = DAYS.index((pattern.get("firstDayOfWeek") or "sunday").lower())
        week_start = start - timedelta(days=(start.weekday() - first) % 7)
        return ((day - week_start).days // 7) % interval == 0
    months = (day.year - start.year) * 12 + day.month - start.month
    if kind in ("absoluteMonthly", "relativeMonthly") and months % interval != 0:
        return False
    if kind in ("absoluteYearly", "relativeYearly") and (
        day.month != int(pattern.get("month") or start.month) or (day.year - start.year) % interval
    ):
        return False
    if kind in ("absoluteMonthly", "absoluteYearly"):
        return day.day == int(pattern.get("dayOfMonth") or start.day)
    if kind in ("relativeMonthly", "relativeYearly"):
        days = [d.lower() for d in pattern.get("daysOfWeek") or [DAYS[start.weekday()]]]
        if DAYS[day.weekday()] not in days:
            return False
        index = INDEX.get((pattern.get("index") or "first").lower(), 0)
        if index == -1:
            return day.day + 7 > cal.monthrange(day.year, day.month)[1]
        return (day.day - 1) // 7 == index
    return False


def occurrence_dates(event: OItem, lo: date, hi: date) -> list[date]:
    """Pattern dates of a series in ``[lo, hi]`` (cancelled ones included)."""
    recurrence = event.props.get("recurrence")
    if not recurrence:
        return []
    pattern = recurrence.get("pattern") or {}
    rrange = recurrence.get("range") or {}
    start = (
        date.fromisoformat(rrange["startDate"])
        if rrange.get("startDate")
        else (
            day_of(event.props["start"])
            if is_all_day(event.props)
            else parse_dt(event.props["start"]).astimezone(series_zone(event)).date()
        )
    )
    kind = rrange.get("type", "noEnd")
    end_date = date.fromisoformat(rrange["endDate"]) if kind == "endDate" else None
    count = int(rrange.get("numberOfOccurrences") or 0) if kind == "numbered" else None
    out: list[date] = []
    seen = 0
    day = start
    last = min(hi, end_date) if end_date else hi
    scanned = 0
    while day <= last and scanned < MAX_SCAN_DAYS:
        if _matches(pattern, start, day):
            seen += 1
            if count is not None and seen > count:
                break
            if day >= lo:
                out.append(day)
        day += timedelta(days=1)
        scanned += 1
    return out


def occurrence_id(tenant: Tenant, master: OItem, day: date) -> str:
    occ = _occurrence_id(master.id, day.isoformat())
    tenant.occurrences[occ] = (master.id, day.isoformat())
    return occ


@functools.lru_cache(maxsize=1 << 16)
def _occurrence_id(master_id: str, day: str) -> str:
    """An occurrence's id (a pure function of its master and date: each expansion of a
    series names its occurrences again)."""
    return ids.outlook_id("occurrence", master_id, day)


def instance_json(tenant: Tenant, master: OItem, day: date, base: dict[str, Any]) -> dict[str, Any]:
    return _instance(tenant, master, day, base, _Span.of(master))


class _Span:
    """A master's start time of day on its own clock, its length and zone, read once for all
    of its instances. An all-day series starts at midnight and lasts whole days
    (``days``)."""

    __slots__ = ("clock", "days_long", "length", "zone")

    def __init__(
        self, start: datetime, end: datetime, zone: tzinfo, days_long: int | None = None
    ) -> None:
        self.zone = zone
        self.clock = start.astimezone(zone).time()
        self.length = end - start
        self.days_long = days_long

    @classmethod
    def of(cls, master: OItem) -> _Span:
        zone = series_zone(master)
        if is_all_day(master.props):
            first, last = day_of(master.props["start"]), day_of(master.props["end"])
            return cls(midnight(first, zone), midnight(last, zone), zone, (last - first).days)
        return cls(parse_dt(master.props["start"]), parse_dt(master.props["end"]), zone)

    def start_on(self, day: date) -> datetime:
        """The occurrence's start (UTC) on ``day``, a date on the series' clock."""
        local = datetime.combine(day, self.clock, self.zone)
        return local if self.zone is UTC else local.astimezone(UTC)

    def end_on(self, day: date, start: datetime) -> datetime:
        """The end (UTC) of the occurrence of ``day`` that starts at ``start``: whole days
        later at midnight for an all-day series (a day across a change of clock is 23 or 25
        hours), else the series' length later."""
        if self.days_long is not None:
            return midnight(day + timedelta(days=self.days_long), self.zone)
        return start + self.length

    def days(self, lo: datetime, hi: datetime) -> tuple[date, date]:
        """The dates on the series' clock whose occurrences may touch ``[lo, hi)`` (from two
        days before ``lo``, for one that began earlier and is still going)."""
        return (lo.astimezone(self.zone) - timedelta(days=2)).date(), hi.astimezone(
            self.zone
        ).date()


def _instance(
    tenant: Tenant, master: OItem, day: date, base: dict[str, Any], span: _Span
) -> dict[str, Any]:
    original = span.start_on(day)
    at = original.strftime("%Y-%m-%dT%H:%M:%S")  # fmt_dt's and iso's text, formatted once
    occ = dict(base)
    override = master.exceptions.get(day.isoformat())
    own = master.instance_attachments.get(day.isoformat())
    if span.days_long is not None:  # all day: its dates, midnight to midnight
        start: dict[str, str] = all_day_time(day)
        end = all_day_time(day + timedelta(days=span.days_long))
    else:
        start = {"dateTime": at + ".0000000", "timeZone": "UTC"}
        end = fmt_dt(span.end_on(day, original))
    occ.update(
        {
            "id": occurrence_id(tenant, master, day),
            "type": "exception" if override or own is not None else "occurrence",
            "seriesMasterId": master.id,
            "recurrence": None,
            "start": start,
            "end": end,
            "originalStart": at + "Z",  # the true instant, all day or not (#2804)
        }
    )
    if override:
        occ.update(override)
        mark_all_day(occ)
    if own is not None:  # an exception with attachments of its own
        occ["hasAttachments"] = bool(own)
    return occ


def _bounds(
    inst: dict[str, Any], override: dict[str, Any] | None, original: datetime, span: _Span
) -> tuple[datetime, datetime]:
    """An instance's start and end as ``parse_dt`` reads them back from its JSON (whole
    seconds), without the round trip through text unless an exception moved it."""
    if override and ("start" in override or "end" in override or "isAllDay" in override):
        return instants(inst, span.zone)
    end = span.end_on(original.astimezone(span.zone).date(), original)
    return original.replace(microsecond=0), end.replace(microsecond=0)


def series_instances(
    tenant: Tenant, master: OItem, lo: datetime, hi: datetime, base: dict[str, Any]
) -> list[dict[str, Any]]:
    span = _Span.of(master)
    out = []
    for day in occurrence_dates(master, *span.days(lo, hi)):
        if day.isoformat() in master.cancelled:
            continue
        inst = _instance(tenant, master, day, base, span)
        override = master.exceptions.get(day.isoformat())
        start, end = _bounds(inst, override, span.start_on(day), span)
        if start < hi and end > lo:
            out.append(inst)
    return out


def instance_ids(tenant: Tenant, master: OItem, lo: datetime, hi: datetime) -> list[str]:
    if not master.props.get("recurrence"):
        return [master.id]
    return [
        occurrence_id(tenant, master, d)
        for d in occurrence_dates(master, *_Span.of(master).days(lo, hi))
    ]


def overlaps(event: OItem, lo: datetime, hi: datetime) -> bool:
    start, end = instants(event.props)
    return start < hi and end > lo
