"""Calendars (events, recurring series, calendarView delta) and contacts."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from graphsim import changes, extended, ids, ops
from graphsim.calendar import (
    all_day_time,
    check_recurrence,
    day_of,
    event_zone,
    fmt_dt,
    in_request_zone,
    in_span,
    instance_ids,
    is_all_day,
    mark_all_day,
    midnight,
    occurrence_id,
    overlaps,
    parse_dt,
    series_instances,
    zone_named,
)
from graphsim.content import BytesContent
from graphsim.core import (
    Engine,
    apply_select,
    collection,
    delta_page,
    delta_resp,
    filtered,
    json_resp,
    mailbox_of,
    outlook_delta_state,
    removed_entry,
    tenant_of,
)
from graphsim.http import (
    GraphError,
    Req,
    Resp,
    Router,
    nested_select,
    not_found,
    outlook_missing,
)
from graphsim.mail import html_to_text, outlook_item
from graphsim.routes_mail import (
    add_attachment_routes,
    addressed_folder,
    folder_delta,
    get_item,
    resolve_folder,
)
from graphsim.state import Attachment, Folder, OItem, Tenant, User, iso
from graphsim.state import utcnow as iso_now

EVENT_WRITABLE = {
    "subject",
    "body",
    "start",
    "end",
    "location",
    "locations",
    "attendees",
    "recurrence",
    "isAllDay",
    "showAs",
    "sensitivity",
    "importance",
    "categories",
    "isReminderOn",
    "reminderMinutesBeforeStart",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "responseRequested",
    "hideAttendees",
    "allowNewTimeProposals",
    "originalStartTimeZone",
    "originalEndTimeZone",
    "organizer",
    "isCancelled",
    "singleValueExtendedProperties",
    "transactionId",
}


def to_utc(value: Any) -> dict[str, str]:
    return fmt_dt(_local(value))


def _local(value: Any) -> datetime:
    """A written ``dateTimeTimeZone`` as an aware time on its own zone's clock."""
    if not isinstance(value, dict) or "dateTime" not in value:
        raise GraphError(400, "ErrorInvalidRequest", "start and end need dateTime and timeZone.")
    zone_name = str(value.get("timeZone") or "UTC")
    text = str(value["dateTime"]).rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = head + "." + frac[:6]
    try:
        local = datetime.fromisoformat(text)
    except ValueError as exc:
        raise GraphError(
            400, "ErrorInvalidRequest", f"Invalid dateTime '{value['dateTime']}'."
        ) from exc
    if local.tzinfo is None:
        zone = zone_named(zone_name)
        if zone is None:
            raise GraphError(
                400,
                "TimeZoneNotSupportedException",
                f"A valid TimeZone value must be specified. '{zone_name}' is not supported.",
            )
        local = local.replace(tzinfo=zone)
    if in_span(local) is None:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"Invalid dateTime '{value['dateTime']}': outside 1601-01-01 to 4500-12-31.",
        )
    return local


def to_all_day(value: Any, *, end: bool) -> dict[str, str]:
    """An all-day event's start or end as the date it stands for. Graph's event resource asks
    for midnight ("If true, regardless of whether it's a single-day or multi-day event, start
    and end time must be set to midnight and be in the same time zone"); Exchange moves a
    time that is not midnight in the request's zone to the midnight before it (a start) or
    after it (an end), so the event covers the times given ("Create all-day events by using
    EWS in Exchange", learn.microsoft.com/exchange/client-developer/exchange-web-services/
    how-to-create-all-day-events-by-using-ews-in-exchange)."""
    return _snapped(_local(value), end=end)


def _snapped(local: datetime, *, end: bool) -> dict[str, str]:
    day = local.date()
    if end and local.time() != datetime.min.time():
        day += timedelta(days=1)
    return dict(all_day_time(day))


def _series_zone_name(master: OItem) -> str:
    """The name of the zone a series recurs in (``graphsim.calendar.series_zone``)."""
    rrange = (master.props.get("recurrence") or {}).get("range") or {}
    return str(
        rrange.get("recurrenceTimeZone") or master.props.get("originalStartTimeZone") or "UTC"
    )


def _times(
    changes: dict[str, Any], all_day: bool, current: dict[str, Any] | None
) -> dict[str, Any]:
    """The start and end a write gives an event, as graphsim keeps them: instants in UTC, or
    the dates of an all-day event. ``current``: the event's (or occurrence's) stored
    properties, whose times are converted when the write turns all day on or off without
    giving new ones."""
    out: dict[str, Any] = {}
    for key in ("start", "end"):
        if key in changes:
            out[key] = (
                to_all_day(changes[key], end=key == "end") if all_day else to_utc(changes[key])
            )
        elif current is not None and all_day != is_all_day(current) and key in current:
            zone = event_zone(current)
            if all_day:  # the dates it covers on its own clock
                out[key] = _snapped(parse_dt(current[key]).astimezone(zone), end=key == "end")
            else:  # from midnight of its dates on its own clock
                out[key] = fmt_dt(midnight(day_of(current[key]), zone))
    if all_day and "start" in out and "end" in out and day_of(out["end"]) <= day_of(out["start"]):
        # Outlook's REST API refuses it so ("The duration of an event marked as All day must
        # be at least 24 hours.", OfficeDev/Office-365-SDK-for-Java#5); the code is graphsim's.
        raise GraphError(
            400,
            "ErrorPropertyValidationFailure",
            "The duration of an event marked as All day must be at least 24 hours.",
        )
    return out


def _original_zones(body: dict[str, Any]) -> dict[str, str]:
    """Exchange records the zone an event's start and end were given in
    (``originalStartTimeZone``, ``originalEndTimeZone``); a series recurs on that clock."""
    out = {}
    for field, key in (("start", "originalStartTimeZone"), ("end", "originalEndTimeZone")):
        value = body.get(field)
        if isinstance(value, dict) and value.get("timeZone"):
            out[key] = str(value["timeZone"])
    return out


def event_json(tenant: Tenant, event: OItem) -> dict[str, Any]:
    props = event.props
    body = props.get("body") or {"contentType": "text", "content": ""}
    content = str(body.get("content") or "")
    preview = html_to_text(content) if body.get("contentType") == "html" else content
    out: dict[str, Any] = {
        **outlook_item(event),
        "transactionId": props.get("transactionId"),
        "webLink": f"https://outlook.office365.com/owa/?itemid={event.id}&exvsurl=1&path=/calendar/item",
        "bodyPreview": " ".join(preview.split())[:255],
        "seriesMasterId": None,
        "type": "seriesMaster" if props.get("recurrence") else "singleInstance",
        "onlineMeeting": None,
    }
    for key, value in props.items():
        if key not in ("singleValueExtendedProperties",):
            out[key] = value
    out["hasAttachments"] = bool(event.attachments)
    return mark_all_day(out)


def event_out(req: Req, tenant: Tenant, event: OItem) -> dict[str, Any]:
    selected = {s.lower() for s in req.select() or []}
    expanded = req.expand_options()
    expand = list(expanded)
    full = event_json(tenant, event)
    plain = dict(full)  # what an instance copies from its master
    if "cancelledoccurrences" in selected | set(expand) and event.props.get("recurrence"):
        # Graph returns it only when selected ("Requires $select to retrieve").
        full["cancelledOccurrences"] = [f"OID.{event.id}.{d}" for d in event.cancelled]
    body = apply_select(full, req.select())
    if "cancelledOccurrences" in full:
        body["cancelledOccurrences"] = full["cancelledOccurrences"]
    # Expanded navigation properties are added after $select, which never drops them.
    if "exceptionoccurrences" in expand and event.props.get("recurrence"):
        inner_select = nested_select(expanded["exceptionoccurrences"])
        lo = datetime(1900, 1, 1, tzinfo=UTC)
        hi = parse_dt(event.props["start"]) + timedelta(days=3660)
        body["exceptionOccurrences"] = (
            [
                apply_select(i, inner_select)
                for i in series_instances(tenant, event, lo, hi, plain)
                if i["type"] == "exception"
            ]
            if event.exceptions
            else []
        )
    if "attachments" in expand:
        from graphsim.routes_mail import expanded_attachments

        body["attachments"] = expanded_attachments(req, event.attachments, expanded["attachments"])
    return extended.expand(req, event, body)


def window(req: Req, required: bool = True) -> tuple[datetime, datetime] | None:
    start = req.query.get("startDateTime") or req.query.get("startdatetime")
    end = req.query.get("endDateTime") or req.query.get("enddatetime")
    if not start or not end:
        if required:
            raise GraphError(
                400,
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string "
                "parameters StartDateTime and EndDateTime.",
            )
        return None
    invalid = GraphError(400, "ErrorInvalidParameter", "Invalid StartDateTime or EndDateTime.")
    try:
        first, last = in_span(parse_dt(start)), in_span(parse_dt(end))
    except (ValueError, OverflowError) as exc:
        raise invalid from exc
    if first is None or last is None:
        raise invalid
    return first, last


def resolve_event(tenant: Tenant, user: User, event_id: str) -> tuple[OItem, str | None]:
    """An event id may name a series master/single event or one occurrence of a series."""
    item = tenant.items.get(event_id)
    if item is not None and not item.deleted and item.user_id == user.id and item.kind == "event":
        return item, None
    occurrence = tenant.occurrences.get(event_id)
    if occurrence is not None:
        master = tenant.items.get(occurrence[0])
        if master is not None and not master.deleted and master.user_id == user.id:
            if occurrence[1] in master.cancelled:
                raise not_found()
            return master, occurrence[1]
    raise outlook_missing(event_id)


def attachment_owner(tenant: Tenant, user: User, event_id: str, *, writing: bool) -> OItem:
    """Whose attachment list ``/events/{id}/attachments`` means. An occurrence shows its
    series' attachments; an exception carries its own (Exchange keeps an exception as an item
    embedded in its master), and adding one to an occurrence makes it an exception."""
    master, day = resolve_event(tenant, user, event_id)
    if day is None:
        return master
    own = master.instance_attachments.get(day)
    if own is None and writing:
        own = master.instance_attachments.setdefault(day, [])
        master.exceptions.setdefault(day, {})  # an occurrence with its own items is an exception
    return OItem(
        id=event_id,
        kind="event",
        user_id=master.user_id,
        folder_id=master.folder_id,
        seq=master.seq,
        created=master.created,
        modified=master.modified,
        change_key=master.change_key,
        attachments=master.attachments if own is None else own,
        master_id=master.id,
    )


ViewEntries = list[tuple[int, str, dict[str, Any]]]


# Series expansions the view cache holds before it starts again (each a few instances).
VIEW_CACHE_ENTRIES = 20_000
# What each event showed in a window, for its last few versions: the ids a round held, so a
# later round can name those a change took out of the window (calendarView delta).
VIEW_HISTORY_VERSIONS = 8
VIEW_HISTORY_ENTRIES = 200_000
NOTHING: frozenset[str] = frozenset()


def _view(
    engine: Engine, tenant: Tenant, calendar: Folder, lo: datetime, hi: datetime
) -> ViewEntries:
    """Instances in a window (see ``_view_by_event``)."""
    return [
        entry
        for _event, entries in _view_by_event(engine, tenant, calendar, lo, hi)
        for entry in entries
    ]


def _view_by_event(
    engine: Engine, tenant: Tenant, calendar: Folder, lo: datetime, hi: datetime
) -> list[tuple[OItem, ViewEntries]]:
    """Each event of the calendar with its instances in a window. Each event's share is
    worked out once per version of it: its ``seq`` moves with every change to it, its
    exceptions, cancellations and attachments (``touch_item``, ``touch_owner``), so delta pages
    repeat nothing, and a round after an edit expands only the series edited rather than every
    series of the calendar. The ids each version showed are kept too (``_held``)."""
    cache: dict[Any, ViewEntries] = engine.caches.setdefault("calendar_view", {})
    history: dict[Any, list[tuple[int, frozenset[str]]]] = engine.caches.setdefault(
        "calendar_view_history", {}
    )
    out: list[tuple[OItem, ViewEntries]] = []
    for event in tenant.folder_items(calendar.id):
        key = (tenant.id, event.id, event.seq, lo, hi)
        entries = cache.get(key)
        if entries is None:
            if len(cache) >= VIEW_CACHE_ENTRIES:
                cache.clear()
            entries = cache[key] = _expand_event(tenant, event, lo, hi)
        held_key = (tenant.id, calendar.id, event.id, lo, hi)
        versions = history.get(held_key)
        if versions is None or versions[-1][0] != event.seq:
            if versions is None:
                if len(history) >= VIEW_HISTORY_ENTRIES:
                    history.clear()
                versions = history[held_key] = []
            held = frozenset(i for _s, i, _v in entries) if entries else NOTHING
            if versions and versions[-1][1] == held:
                held = versions[-1][1]  # one set for the versions that showed the same
            versions.append((event.seq, held))
            del versions[:-VIEW_HISTORY_VERSIONS]
        out.append((event, entries))
    return out


def _held(
    engine: Engine,
    tenant: Tenant,
    calendar: Folder,
    event: OItem,
    window: tuple[datetime, datetime],
    at: int,
) -> frozenset[str] | None:
    """The instance ids ``event`` showed in the calendar's window as it was at change number
    ``at`` (the version a delta token's round returned), or None when no read saw it."""
    history = engine.caches.get("calendar_view_history", {})
    found = None
    for seq, held in history.get((tenant.id, calendar.id, event.id, *window), ()):
        if seq <= at:
            found = held
    return found


def _expand_event(tenant: Tenant, event: OItem, lo: datetime, hi: datetime) -> ViewEntries:
    base = event_json(tenant, event)
    if event.props.get("recurrence"):
        return [
            (event.seq, inst["id"], inst) for inst in series_instances(tenant, event, lo, hi, base)
        ]
    return [(event.seq, event.id, base)] if overlaps(event, lo, hi) else []


def _view_removed(
    tenant: Tenant, calendar: Folder, lo: datetime, hi: datetime
) -> list[tuple[int, str, None]]:
    out: list[tuple[int, str, None]] = []
    for item_id, seq in tenant.tombs.get(calendar.id, {}).items():
        event = tenant.items.get(item_id)
        if event is None:
            out.append((seq, item_id, None))
            continue
        for inst in instance_ids(tenant, event, lo, hi):
            out.append((seq, inst, None))
        if event.props.get("recurrence"):
            out.append((seq, event.id, None))
    for event in tenant.folder_items(calendar.id):
        for day in event.cancelled:
            out.append((event.seq, occurrence_id(tenant, event, date.fromisoformat(day)), None))
    return out


def _view_left(
    engine: Engine,
    tenant: Tenant,
    calendar: Folder,
    window: tuple[datetime, datetime],
    by_event: list[tuple[OItem, ViewEntries]],
    since: int,
    upto: int,
) -> list[tuple[int, str, None]]:
    """What a round reports ``@removed`` besides deletions and cancellations: each event
    changed since the token's position that has no instance in the window (moved or edited
    out of it, edited while outside it, added outside it), by its id (a series by its
    master's and by the occurrences the window held before); and the instances the window
    held that a change took away (a series made shorter, an exception moved out). Graph's
    event-delta page says so: besides what was deleted inside the range, a round may name
    under ``@removed`` (reason ``deleted``) events outside it that were added, deleted or
    updated since the previous call (learn.microsoft.com/graph/api/event-delta)."""
    out: list[tuple[int, str, None]] = []
    for event, entries in by_event:
        if not since < event.seq <= upto:
            continue
        before = _held(engine, tenant, calendar, event, window, since) or NOTHING
        gone = (before | {event.id}) if not entries else before - {i for _s, i, _v in entries}
        if gone and event.cancelled:  # reported with the cancellations already
            gone -= {occurrence_id(tenant, event, date.fromisoformat(d)) for d in event.cancelled}
        out.extend((event.seq, i, None) for i in sorted(gone))
    return out


def _check_span(start: dict[str, str], end: dict[str, str]) -> None:
    """An event (or an occurrence) that ends before it starts: Exchange names no property,
    only that one failed its validation."""
    if parse_dt(end) < parse_dt(start):
        raise GraphError(
            400, "ErrorPropertyValidationFailure", "At least one property failed validation."
        )


def create_event(tenant: Tenant, user: User, calendar: Folder, body: dict[str, Any]) -> OItem:
    for forbidden in ("id", "changeKey", "iCalUId", "webLink"):
        if forbidden in body:
            raise GraphError(
                400, "ErrorInvalidPropertySet", f"The property '{forbidden}' is read-only."
            )
    unknown = set(body) - EVENT_WRITABLE - {"@odata.type"}
    if unknown:
        raise GraphError(
            400,
            "RequestBodyRead",
            f"The property '{sorted(unknown)[0]}' does not exist on type 'microsoft.graph.event'.",
        )
    if "start" not in body or "end" not in body:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Your request can't be completed. The start and end are required.",
        )
    times = _times(body, is_all_day(body), None)
    start, end = times["start"], times["end"]
    _check_span(start, end)
    check_recurrence(body.get("recurrence"))
    from graphsim.generator import event_props
    from graphsim.mail import Addr

    props = event_props(
        subject=str(body.get("subject") or ""),
        body="",
        start=parse_dt(start),
        end=parse_dt(end),
        organizer=Addr(user.display_name, user.upn),
        attendees=[],
        location="",
        recurrence=None,
        categories=[],
        is_all_day=False,
    )
    for key, value in body.items():
        if key in EVENT_WRITABLE and key != "singleValueExtendedProperties":
            props[key] = value
    props["start"], props["end"] = start, end
    props.update(_original_zones(body))
    props["body"] = body.get("body") or {"contentType": "text", "content": ""}
    props["attendees"] = [
        {
            "type": a.get("type", "required"),
            "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
            "emailAddress": a.get("emailAddress") or {},
        }
        for a in body.get("attendees") or []
    ]
    event = ops.new_item(tenant, user, "event", calendar.id, props=props)
    extended.store(event, body)
    event.props["iCalUId"] = (
        "040000008200E00074C5B7101A82E008" + ids.digest(event.id, size=28).hex().upper()
    )
    return event


def contact_json(item: OItem) -> dict[str, Any]:
    return {
        **outlook_item(item),
        "parentFolderId": item.folder_id,
        **item.props,
    }


router = Router()


def _zoned(handler: Callable[[Engine, Req], Resp]) -> Callable[[Engine, Req], Resp]:
    """An event route whose all-day dates follow ``Prefer: outlook.timezone``: labelled with
    the zone asked for, still at midnight (``graphsim.calendar.in_request_zone``)."""

    @functools.wraps(handler)
    def zoned(engine: Engine, req: Req) -> Resp:
        resp = handler(engine, req)
        wanted = req.prefer().get("outlook.timezone")
        if wanted and resp.is_json:
            resp.body = in_request_zone(resp.body, wanted)
        return resp

    return zoned


# -- calendars ------------------------------------------------------------------------
def calendar_json(tenant: Tenant, user: User, folder: Folder) -> dict[str, Any]:
    return {
        "@odata.etag": f'W/"{folder.change_key}"',
        "id": folder.id,
        "name": folder.display_name,
        "changeKey": folder.change_key,
        "owner": {"name": user.display_name, "address": user.upn},
        **{k: v for k, v in folder.props.items()},
    }


@router.add("GET", "/users/{user}/calendars", "exchange")
def calendars(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    folders = sorted(
        tenant.user_folders(user.id, "calendar"),
        key=lambda f: (f.id != user.default_calendar, f.display_name),
    )
    return collection(
        req,
        engine,
        "calendars",
        [apply_select(calendar_json(tenant, user, f), req.select()) for f in folders],
    )


@router.add("GET", "/users/{user}/calendars/{calendar}", "exchange")
def get_calendar(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    folder = resolve_folder(tenant, user, req.params["calendar"], "calendar")
    return json_resp(apply_select(calendar_json(tenant, user, folder), req.select()))


CALENDAR_COLORS = frozenset(
    {
        "auto",
        "lightBlue",
        "lightGreen",
        "lightOrange",
        "lightGray",
        "lightYellow",
        "lightTeal",
        "lightPink",
        "lightBrown",
        "lightRed",
        "maxColor",
    }
)


@router.add("POST", "/users/{user}/calendars", "exchange")
def create_calendar(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    body = req.json()
    name = str(body.get("name") or "").strip()
    if not name:
        raise GraphError(400, "ErrorInvalidRequest", "name is required.")
    color = str(body.get("color") or "auto")
    if color not in CALENDAR_COLORS:
        raise GraphError(
            400,
            "RequestBodyRead",
            f"Cannot convert the literal '{color}' to the expected type "
            "'microsoft.graph.calendarColor'.",
        )
    if any(
        f.display_name.lower() == name.lower() for f in tenant.user_folders(user.id, "calendar")
    ):
        raise GraphError(
            409, "ErrorFolderExists", "A folder with the specified name already exists."
        )
    folder = ops.new_folder(
        tenant,
        user,
        "calendar",
        name,
        None,
        props={
            "color": color,
            "hexColor": "",
            "isDefaultCalendar": False,
            "isRemovable": True,
            "canShare": True,
            "canViewPrivateItems": True,
            "canEdit": True,
            "isTallyingResponses": False,
            "allowedOnlineMeetingProviders": ["teamsForBusiness"],
            "defaultOnlineMeetingProvider": "teamsForBusiness",
        },
    )
    return json_resp(calendar_json(tenant, user, folder), 201)


def list_events(engine: Engine, req: Req, folders: list[Folder]) -> Resp:
    tenant = tenant_of(req)
    events = [e for f in folders for e in tenant.folder_items(f.id)]
    events.sort(key=lambda e: (e.props["start"]["dateTime"], e.id))
    return collection(
        req,
        engine,
        "events",
        filtered(req, events, lambda e: extended.with_properties(event_json(tenant, e), e)),
        default=10,
        render=lambda e: event_out(req, tenant, e),
    )


@router.add("GET", "/users/{user}/events", "exchange")
@_zoned
def all_events(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    return list_events(engine, req, tenant.user_folders(user.id, "calendar"))


@router.add("GET", "/users/{user}/calendars/{calendar}/events", "exchange")
@_zoned
def calendar_events(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    return list_events(
        engine, req, [resolve_folder(tenant, user, req.params["calendar"], "calendar")]
    )


@router.add("POST", "/users/{user}/events", "exchange")
@router.add("POST", "/users/{user}/calendars/{calendar}/events", "exchange")
@_zoned
def create_in(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    user, folder, _path = addressed_folder(req, "calendar")
    event = create_event(tenant, user, folder, req.json())
    return json_resp(event_out(req, tenant, event), 201)


@router.add("GET", "/users/{user}/events/{item}", "exchange")
@_zoned
def get_event(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    master, day = resolve_event(tenant, user, req.params["item"])
    if day is None:
        return json_resp(event_out(req, tenant, master))
    from graphsim.calendar import instance_json

    inst = instance_json(tenant, master, date.fromisoformat(day), event_json(tenant, master))
    return json_resp(apply_select(inst, req.select()))


@router.add("PATCH", "/users/{user}/events/{item}", "exchange")
@_zoned
def patch_event(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    master, day = resolve_event(tenant, user, req.params["item"])
    body = req.json()
    unknown = set(body) - EVENT_WRITABLE
    if unknown:
        raise GraphError(
            400,
            "RequestBodyRead",
            f"The property '{sorted(unknown)[0]}' does not exist on type 'microsoft.graph.event'.",
        )
    changes = {k: v for k, v in body.items() if k != extended.FIELD}
    if "start" in changes or "end" in changes or "isAllDay" in changes:
        current = master.props if day is None else _occurrence(tenant, master, day)
        if day is not None:  # an occurrence's dates are on its series' clock
            current = {**current, "originalStartTimeZone": _series_zone_name(master)}
        changes.update(_times(body, is_all_day({**current, **changes}), current))
    if "recurrence" in changes:
        if day is not None:  # an occurrence is not a series
            raise GraphError(
                400, "ErrorPropertyValidationFailure", "At least one property failed validation."
            )
        check_recurrence(changes["recurrence"])
    if "start" in changes or "end" in changes:
        current = master.props if day is None else _occurrence(tenant, master, day)
        _check_span(changes.get("start", current["start"]), changes.get("end", current["end"]))
    if day is None:
        extended.store(master, body)
        master.props.update(changes)
        master.props.update(_original_zones(body))
    else:
        master.exceptions.setdefault(day, {}).update(changes)
    tenant.touch_item(master)
    if day is None:
        return json_resp(event_out(req, tenant, master))
    return json_resp(_occurrence(tenant, master, day))


def _occurrence(tenant: Tenant, master: OItem, day: str) -> dict[str, Any]:
    """One occurrence of a series as Graph shows it (``day``: its original date, ISO)."""
    from graphsim.calendar import instance_json

    return instance_json(tenant, master, date.fromisoformat(day), event_json(tenant, master))


@router.add("DELETE", "/users/{user}/events/{item}", "exchange")
def delete_event(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    master, day = resolve_event(tenant, user, req.params["item"])
    if day is None:
        tenant.delete_item(master)
    else:
        master.cancelled.append(day)
        master.exceptions.pop(day, None)
        master.instance_attachments.pop(day, None)
        tenant.touch_item(master)
    return Resp(204)


@router.add("GET", "/users/{user}/events/{item}/instances", "exchange")
@_zoned
def instances(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    master, _day = resolve_event(tenant, user, req.params["item"])
    bounds = window(req)
    assert bounds is not None
    base = event_json(tenant, master)
    if not master.props.get("recurrence"):
        values = [base] if overlaps(master, *bounds) else []
    else:
        values = series_instances(tenant, master, bounds[0], bounds[1], base)
    return collection(
        req, engine, "events", [apply_select(v, req.select()) for v in values], default=10
    )


def view(engine: Engine, req: Req, calendar: Folder) -> Resp:
    tenant = tenant_of(req)
    bounds = window(req)
    assert bounds is not None
    values = sorted(
        _view(engine, tenant, calendar, *bounds),
        key=lambda e: (e[2]["start"]["dateTime"], e[1]),
    )
    return collection(
        req, engine, "events", [apply_select(v[2], req.select()) for v in values], default=10
    )


@router.add("GET", "/users/{user}/calendarView", "exchange")
@router.add("GET", "/users/{user}/calendars/{calendar}/calendarView", "exchange")
@_zoned
def calendar_view(engine: Engine, req: Req) -> Resp:
    return view(engine, req, addressed_folder(req, "calendar")[1])


def view_delta(engine: Engine, req: Req, user: User, calendar: Folder, path: str) -> Resp:
    tenant = tenant_of(req)

    def first() -> dict[str, Any]:  # the window travels in the links
        bounds = window(req)
        assert bounds is not None
        return {"lo": iso(bounds[0]), "hi": iso(bounds[1])}

    collection = f"view:{calendar.id}"
    state = outlook_delta_state(
        req, engine, collection=collection, owner=user.id, path=path, first=first
    )
    lo, hi = parse_dt(state.query["lo"]), parse_dt(state.query["hi"])
    by_event = _view_by_event(engine, tenant, calendar, lo, hi)
    live = [entry for _event, entries in by_event for entry in entries]
    removed: list[tuple[int, str, None]] = []
    if not state.fresh:  # a first round reports what is there, never what left
        removed = _view_removed(tenant, calendar, lo, hi)
        removed += _view_left(engine, tenant, calendar, (lo, hi), by_event, state.since, state.upto)
    page, more = delta_page(state, live, removed)
    values = [removed_entry("event", i) if gone else obj for _s, i, obj, gone in page]
    return delta_resp(req, engine, state, page, more, entity="event", values=values)


@router.add("GET", "/users/{user}/calendarView/delta", "exchange")
@router.add("GET", "/users/{user}/calendars/{calendar}/calendarView/delta", "exchange")
@_zoned
def calendar_view_delta(engine: Engine, req: Req) -> Resp:
    user, folder, path = addressed_folder(req, "calendar")
    return view_delta(engine, req, user, folder, f"{path}/calendarView/delta")


add_attachment_routes(router, "/users/{user}/events/{item}", "event")

# -- contacts ---------------------------------------------------------------------------


def cfolder_json(folder: Folder) -> dict[str, Any]:
    return {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id or folder.id,
    }


@router.add("GET", "/users/{user}/contactFolders", "exchange")
def contact_folders(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    folders = sorted(
        (f for f in tenant.user_folders(user.id, "contact") if f.parent_id == user.contacts_root),
        key=lambda f: f.display_name.lower(),
    )
    return collection(
        req,
        engine,
        "contactFolders",
        [apply_select(cfolder_json(f), req.select()) for f in folders],
    )


@router.add("GET", "/users/{user}/contactFolders/delta", "exchange")
def contact_folders_delta(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    path = f"/users/{user.id}/contactFolders/delta"
    return folder_delta(engine, req, tenant, user, "contact", path, cfolder_json)


@router.add("GET", "/users/{user}/contactFolders/{folder}", "exchange")
def contact_folder(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    return json_resp(cfolder_json(resolve_folder(tenant, user, req.params["folder"], "contact")))


@router.add("GET", "/users/{user}/contactFolders/{folder}/childFolders", "exchange")
def contact_children(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    parent = resolve_folder(tenant, user, req.params["folder"], "contact")
    kids = [f for f in tenant.user_folders(user.id, "contact") if f.parent_id == parent.id]
    return collection(req, engine, "contactFolders", [cfolder_json(f) for f in kids])


def new_contact_folder(req: Req, parent: Folder, user: User) -> Resp:
    tenant = tenant_of(req)
    name = str(req.json().get("displayName") or "").strip()
    if not name:
        raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
    if any(
        f.parent_id == parent.id and f.display_name.lower() == name.lower()
        for f in tenant.user_folders(user.id, "contact")
    ):
        raise GraphError(
            409, "ErrorFolderExists", "A folder with the specified name already exists."
        )
    return json_resp(cfolder_json(ops.new_folder(tenant, user, "contact", name, parent.id)), 201)


@router.add("POST", "/users/{user}/contactFolders", "exchange")
@router.add("POST", "/users/{user}/contactFolders/{folder}/childFolders", "exchange")
def create_contact_folder(engine: Engine, req: Req) -> Resp:
    user, parent, _path = addressed_folder(req, "contact")
    return new_contact_folder(req, parent, user)


@router.add("PATCH", "/users/{user}/contactFolders/{folder}", "exchange")
def patch_contact_folder(engine: Engine, req: Req) -> Resp:
    """Rename or move a contact folder (``displayName``, ``parentFolderId``: what "Update
    contactFolder" writes); a name its new siblings hold is 409 ``ErrorFolderExists``."""
    tenant, user = tenant_of(req), mailbox_of(req)
    folder = resolve_folder(tenant, user, req.params["folder"], "contact")
    body = req.json()
    name = str(body.get("displayName") or folder.display_name).strip()
    parent_id = folder.parent_id
    if body.get("parentFolderId"):
        parent = resolve_folder(tenant, user, str(body["parentFolderId"]), "contact")
        ancestor: Folder | None = parent
        while ancestor is not None:  # not into itself or below it
            if ancestor.id == folder.id:
                raise GraphError(400, "ErrorMoveCopyFailed", "Cannot move a folder into itself.")
            ancestor = tenant.folders.get(ancestor.parent_id or "")
        parent_id = parent.id
    if any(
        f.id != folder.id and f.parent_id == parent_id and f.display_name.lower() == name.lower()
        for f in tenant.user_folders(user.id, "contact")
    ):
        raise GraphError(
            409, "ErrorFolderExists", "A folder with the specified name already exists."
        )
    if (name, parent_id) != (folder.display_name, folder.parent_id):
        folder.display_name, folder.parent_id = name, parent_id
        tenant.touch_folder(folder)
    return json_resp(cfolder_json(folder))


def contacts_in(engine: Engine, req: Req, folder: Folder) -> Resp:
    tenant = tenant_of(req)
    items = sorted(
        tenant.folder_items(folder.id), key=lambda c: (str(c.props.get("displayName")), c.id)
    )
    return collection(
        req,
        engine,
        "contacts",
        filtered(req, items, lambda c: extended.with_properties(contact_json(c), c)),
        render=lambda c: extended.expand(req, c, apply_select(contact_json(c), req.select())),
    )


@router.add("GET", "/users/{user}/contacts", "exchange")
@router.add("GET", "/users/{user}/contactFolders/{folder}/contacts", "exchange")
def folder_contacts(engine: Engine, req: Req) -> Resp:
    return contacts_in(engine, req, addressed_folder(req, "contact")[1])


def contacts_delta(engine: Engine, req: Req, user: User, folder: Folder, path: str) -> Resp:
    tenant = tenant_of(req)
    state = outlook_delta_state(
        req,
        engine,
        collection=folder.id,
        owner=user.id,
        path=path,
        first=lambda: {"select": req.query.get("$select", "")},
    )
    select = [s for s in str(state.query.get("select", "")).split(",") if s] or None
    live = ((c.seq, c.id, c) for c in tenant.folder_items(folder.id))
    removed = ((seq, i, None) for i, seq in tenant.tombs.get(folder.id, {}).items())
    page, more = delta_page(state, live, removed)
    since = None if state.fresh else state.since
    values = [
        removed_entry("contact", i)
        if gone
        else changes.delta_entry(obj, apply_select(contact_json(obj), select), since)
        for _s, i, obj, gone in page
    ]
    return delta_resp(req, engine, state, page, more, entity="contact", values=values)


@router.add("GET", "/users/{user}/contacts/delta", "exchange")
@router.add("GET", "/users/{user}/contactFolders/{folder}/contacts/delta", "exchange")
def folder_contacts_delta(engine: Engine, req: Req) -> Resp:
    user, folder, path = addressed_folder(req, "contact")
    return contacts_delta(engine, req, user, folder, f"{path}/contacts/delta")


def create_contact(req: Req, user: User, folder: Folder) -> Resp:
    tenant = tenant_of(req)
    body = req.json()
    for forbidden in ("id", "changeKey", "parentFolderId"):
        if forbidden in body:
            raise GraphError(
                400, "ErrorInvalidPropertySet", f"The property '{forbidden}' is read-only."
            )
    props = {k: v for k, v in body.items() if not k.startswith("@") and k != extended.FIELD}
    props.setdefault(
        "displayName", f"{props.get('givenName', '')} {props.get('surname', '')}".strip()
    )
    for key in (
        "emailAddresses",
        "businessPhones",
        "homePhones",
        "imAddresses",
        "children",
        "categories",
    ):
        props.setdefault(key, [])
    item = ops.new_item(tenant, user, "contact", folder.id, props=props)
    extended.store(item, body)
    return json_resp(extended.expand(req, item, contact_json(item)), 201)


@router.add("POST", "/users/{user}/contacts", "exchange")
@router.add("POST", "/users/{user}/contactFolders/{folder}/contacts", "exchange")
def create_folder_contact(engine: Engine, req: Req) -> Resp:
    user, folder, _path = addressed_folder(req, "contact")
    return create_contact(req, user, folder)


@router.add("GET", "/users/{user}/contacts/{item}", "exchange")
def get_contact(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    item = get_item(tenant, user, req.params["item"], "contact")
    return json_resp(extended.expand(req, item, apply_select(contact_json(item), req.select())))


@router.add("PATCH", "/users/{user}/contacts/{item}", "exchange")
def patch_contact(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    item = get_item(tenant, user, req.params["item"], "contact")
    body = req.json()
    for key, value in body.items():
        if key in ("id", "changeKey", "parentFolderId"):
            raise GraphError(400, "ErrorInvalidPropertySet", f"The property '{key}' is read-only.")
        if key != extended.FIELD:
            item.props[key] = value
    extended.store(item, body)
    tenant.touch_item(item)
    return json_resp(contact_json(item))


def photo_of(req: Req) -> tuple[OItem, Attachment | None]:
    tenant, user = tenant_of(req), mailbox_of(req)
    item = get_item(tenant, user, req.params["item"], "contact")
    return item, next((a for a in item.attachments if a.name == "photo.jpg"), None)


@router.add("GET", "/users/{user}/contacts/{item}/photo", "exchange")
def contact_photo(engine: Engine, req: Req) -> Resp:
    _item, photo = photo_of(req)
    if photo is None:
        raise GraphError(404, "ErrorItemNotFound", "The photo wasn't found.")
    return json_resp(
        {
            "@odata.context": f"{req.graph_base}/$metadata#users('{req.params['user']}')"
            f"/contacts('{req.params['item']}')/photo/$entity",
            "@odata.mediaContentType": photo.content_type,
            "@odata.mediaEtag": f'W/"{photo.id[-16:]}"',
            "id": "240X240",
            "height": 240,
            "width": 240,
        }
    )


@router.add("GET", "/users/{user}/contacts/{item}/photo/$value", "exchange")
def contact_photo_value(engine: Engine, req: Req) -> Resp:
    _item, photo = photo_of(req)
    if photo is None or photo.content is None:
        raise GraphError(404, "ErrorItemNotFound", "The photo wasn't found.")
    return Resp(200, photo.content.read(), {"Content-Type": photo.content_type or "image/jpeg"})


@router.add("PUT", "/users/{user}/contacts/{item}/photo/$value", "exchange")
def set_contact_photo(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    item, photo = photo_of(req)
    if not req.body:
        raise GraphError(400, "ErrorInvalidRequest", "The photo is empty.")
    if photo is not None:
        item.attachments.remove(photo)
    item.attachments.append(
        Attachment(
            id=ids.attachment_id(item.id, "photo", tenant.new_name("photo")),
            kind="file",
            name="photo.jpg",
            content_type=req.headers.get("content-type", "image/jpeg"),
            modified=iso_now(),
            content=BytesContent.of(req.body),
        )
    )
    tenant.touch_item(item)
    return Resp(200)


@router.add("DELETE", "/users/{user}/contacts/{item}", "exchange")
def delete_contact(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    tenant.delete_item(get_item(tenant, user, req.params["item"], "contact"))
    return Resp(204)
