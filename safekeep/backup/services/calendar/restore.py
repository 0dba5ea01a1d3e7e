"""Putting events back into a mailbox (GRAPH.md §4 Restore).

Each event is created with ``POST /calendars/{id}/events`` from its stored JSON without the
server-assigned properties (id, changeKey, transactionId, webLink, iCalUId) and without
attendees: creating an event with attendees would send invitations, so, as Corso does,
they are listed at the top of the body instead (and in the job report's note). Then its
attachments are added (large ones through upload sessions), then its cancelled
occurrences are deleted and its exceptions patched onto the instance of their day.

Conflicts: an event "still exists" when the target calendar holds the event itself (same
Graph id, restoring in place) or a copy Safekeep restored earlier from the same item (the
hidden stamp of ``restore/identity.py``, written once the event is whole: a series whose
attachment, cancellation or exception failed stays unstamped, so a rerun makes it again and
takes the incomplete copy out). An iCalUId is no identity: a series and its
exceptions share one, and a restored copy gets a new one; a look-alike (same subject and
time) is another event and the restored one goes beside it. ``skip`` leaves an existing
event, ``keep_both`` adds the restored copy beside it, ``overwrite`` creates the restored
copy and then deletes the existing one (create first, so a failure in between never loses
the user's event; Graph has no way to delete a meeting without telling its attendees, so
they may be told).

Calendars: "original" writes into the calendar of the same name (the default calendar
into the target's default calendar), created if missing; "new" writes into a new calendar
named ``ctx.new_folder_name`` (events from another calendar than the default go to
``"<new name> (<calendar name>)"``, since calendars cannot nest).

What Graph does not let a restore give back: the organiser (the target mailbox becomes the
organiser), the iCalUId (a new one is assigned), the online meeting's join link
(``isOnlineMeeting`` makes a new meeting), attendees' responses. Attachments an exception
carries itself are backed up with it and added to the restored exception.
"""

from __future__ import annotations

import asyncio
import html
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import structlog

from safekeep.backup.outlook import Created, ItemRestore
from safekeep.backup.restore import identity
from safekeep.backup.restore.failures import retries_the_job
from safekeep.backup.services.base import RestoreContext, Selection
from safekeep.backup.services.calendar.render import original_day
from safekeep.backup.services.calendar.search import (
    address,
    cancelled_dates,
    local_start,
    offset_time,
    start_of,
    zone,
)
from safekeep.graph.client import ATTACHMENT_DIRECT_MAX
from safekeep.graph.errors import Conflict, GraphError
from safekeep.storage.repository import ContentRef
from safekeep.tenants.models import ItemVersion

log = structlog.get_logger(__name__)

# What a restore may write (read-only and server-assigned properties are left out).
WRITABLE = (
    "subject",
    "body",
    "start",
    "end",
    "location",
    "locations",
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
)
EXCEPTION_WRITABLE = tuple(k for k in WRITABLE if k not in ("recurrence", "isOnlineMeeting"))
ATTACHMENT_DROP = ("id", "@odata.context", "@odata.mediaContentType", "content", "contentSize")
ITEM_DROP = (
    "id",
    "@odata.etag",
    "@odata.context",
    "changeKey",
    "parentFolderId",
    "createdDateTime",
    "lastModifiedDateTime",
    "webLink",
    "iCalUId",
    "transactionId",
    "conversationId",
    "internetMessageId",
)


def attendee_lines(event: dict[str, Any]) -> list[str]:
    lines = []
    for attendee in event.get("attendees") or []:
        name, addr = address(attendee)
        kind = str(attendee.get("type") or "required")
        response = str(((attendee.get("status") or {}).get("response")) or "none")
        who = f"{name} <{addr}>" if name and addr else (name or addr)
        if who:
            lines.append(f"{who} ({kind}, {response})")
    return lines


def with_attendees(body: Any, lines: list[str]) -> dict[str, Any]:
    """The body with the attendee list at its top (the restore does not invite them)."""
    body = dict(body or {"contentType": "text", "content": ""})
    if not lines:
        return body
    content = str(body.get("content") or "")
    title = "Attendees (restored by Safekeep, not invited):"
    if str(body.get("contentType") or "").lower() == "html":
        block = (
            f"<div><p>{html.escape(title)}</p><ul>"
            + "".join(f"<li>{html.escape(line)}</li>" for line in lines)
            + "</ul><hr></div>"
        )
        lower = content.lower()
        at = lower.find("<body")
        end = lower.find(">", at) if at >= 0 else -1
        content = content[: end + 1] + block + content[end + 1 :] if end >= 0 else block + content
    else:
        content = title + "\n" + "\n".join(f"- {line}" for line in lines) + "\n\n" + content
    body["content"] = content
    return body


def _time_field(value: Any, original_zone: str | None, all_day: bool) -> Any:
    """Graph reports times in UTC; send them in the organiser's zone so a series keeps its
    wall-clock time across daylight saving (all-day events: ``_all_day_field``)."""
    if all_day:
        return _all_day_field(value, original_zone)
    if not original_zone or not isinstance(value, dict):
        return value
    parsed = start_of({"start": value})
    if parsed is None or zone(original_zone) is UTC:
        return value
    local = parsed.astimezone(zone(original_zone)).replace(tzinfo=None)
    return {"dateTime": local.isoformat(timespec="seconds"), "timeZone": original_zone}


def _all_day_field(value: Any, original_zone: str | None) -> Any:
    """An all-day start or end as midnight of its date in the event's own zone. Graph shows
    an all-day event as midnight to midnight of its dates labelled UTC, whatever its zone
    (microsoftgraph/microsoft-graph-docs#1802), and asks a write for midnight, start and end
    in one zone (event resource, ``isAllDay``); sent as UTC, the copy would become an
    all-day event in UTC, and its occurrences' ``originalStart`` would no longer be the
    source's. A time other than midnight (not Graph's shape) is read on the event's clock."""
    parsed = start_of({"start": value})
    if parsed is None:
        return value
    day = parsed.date()
    if parsed.timetz().replace(tzinfo=None) != datetime.min.time():
        day = parsed.astimezone(zone(original_zone)).date()
    name = original_zone if original_zone and zone(original_zone) is not UTC else "UTC"
    return {"dateTime": f"{day.isoformat()}T00:00:00", "timeZone": name}


def payload(event: dict[str, Any], keys: tuple[str, ...] = WRITABLE) -> dict[str, Any]:
    out = {k: event[k] for k in keys if k in event and event[k] is not None}
    all_day = bool(event.get("isAllDay"))
    if "start" in out:
        out["start"] = _time_field(out["start"], event.get("originalStartTimeZone"), all_day)
    if "end" in out:
        out["end"] = _time_field(
            out["end"],
            event.get("originalEndTimeZone") or event.get("originalStartTimeZone"),
            all_day,
        )
    recurrence = out.get("recurrence")
    if isinstance(recurrence, dict):
        rrange = dict(recurrence.get("range") or {})
        if not rrange.get("recurrenceTimeZone"):
            rrange.pop("recurrenceTimeZone", None)
        out["recurrence"] = {**recurrence, "range": rrange}
    if out.get("location") == {}:
        out.pop("location")
    return out


class CalendarRestore(ItemRestore):
    noun = "event"
    items = "events"
    index_select = "id,type"

    def __init__(self, ctx: RestoreContext, selection: Selection) -> None:
        super().__init__(ctx, selection)
        self._calendars: list[dict[str, Any]] | None = None
        self._targets: dict[str, str] = {}  # wanted name (and default or not) -> calendar id
        self._lock = asyncio.Lock()

    # ---- calendars -----------------------------------------------------------------------

    async def _list_calendars(self) -> list[dict[str, Any]]:
        calendars: list[dict[str, Any]] = []
        async for values in self.graph.paginate(
            f"{self.base}/calendars", headers=self.headers, mailbox=self.user
        ):
            calendars.extend(values)
        return calendars

    def _wanted_name(self, source_id: str | None) -> tuple[str, bool]:
        """(calendar name, whether it is the default calendar) to write ``source_id``'s
        events into."""
        folder = self.selection.folders.get(source_id or "")
        meta = (folder.meta if folder is not None else None) or {}
        is_default = bool(meta.get("is_default")) or folder is None
        name = folder.name if folder is not None else "Calendar"
        if self.ctx.folder_mode == "new":
            new = self.ctx.new_folder_name
            return (new if is_default else f"{new} ({name})"), False
        return name, is_default

    async def container(self, source_parent: str | None) -> str:
        name, is_default = self._wanted_name(source_parent)
        key = name.casefold() + ("\0default" if is_default else "")
        async with self._lock:
            cached = self._targets.get(key)
            if cached is not None:
                return cached
            if self._calendars is None:
                self._calendars = await self._list_calendars()
            found = None
            if is_default:
                found = next((c for c in self._calendars if c.get("isDefaultCalendar")), None)
            if found is None:
                found = next(
                    (
                        c
                        for c in self._calendars
                        if str(c.get("name") or "").casefold() == name.casefold()
                    ),
                    None,
                )
            if found is None:
                found = await self._create_calendar(name, self._color(source_parent))
                self._calendars.append(found)
            self._targets[key] = str(found["id"])
            return self._targets[key]

    def _color(self, source_id: str | None) -> str | None:
        """The source calendar's colour, when it had one of its own."""
        folder = self.selection.folders.get(source_id or "")
        color = ((folder.meta if folder is not None else None) or {}).get("color")
        return str(color) if color and color != "auto" else None

    async def _create_calendar(self, name: str, color: str | None) -> dict[str, Any]:
        made = {"name": name, **({"color": color} if color else {})}
        try:
            return await self.post(f"{self.base}/calendars", made)
        except Conflict:
            for calendar in await self._list_calendars():
                if str(calendar.get("name") or "").casefold() == name.casefold():
                    return calendar
            raise

    def listing(self, container: str) -> str:
        return f"{self.base}/calendars/{quote(container, safe='')}/events"

    # ---- one event -----------------------------------------------------------------------

    async def create(self, container: str, version: ItemVersion, event: dict[str, Any]) -> Created:
        lines = attendee_lines(event)
        body = payload(event)
        body["body"] = with_attendees(event.get("body"), lines)
        # Stamped once whole; at once when nothing follows the create request.
        whole = not event.get("attachments") and not event.get("recurrence")
        body["singleValueExtendedProperties"] = (
            identity.stamp(version, self.ctx.job_id)
            if whole
            else identity.started(version, self.ctx.job_id)
        )
        new_id = str((await self.post(self.listing(container), body))["id"])
        problems: list[str] = []
        try:
            for attachment in event.get("attachments") or []:
                try:
                    await self._add_attachment(new_id, attachment)
                except (GraphError, ValueError) as exc:
                    if retries_the_job(exc):
                        raise
                    problems.append(f"attachment {attachment.get('name')!r}: {exc}")
            if event.get("recurrence"):
                problems.extend(await self._fix_instances(new_id, event))
        except BaseException as exc:
            if isinstance(exc, Exception) and not retries_the_job(exc):
                raise  # (a bug: the event stays, the item is reported failed)
            await self.discard(new_id)  # the job's retry makes it whole
            raise
        if problems:
            return Created(new_id, problem=f"created as {new_id} but: " + "; ".join(problems))
        note = "attendees not invited: " + "; ".join(lines) if lines else None
        return Created(new_id, stamped=whole, note=note)

    async def _add_attachment(self, event_id: str, attachment: dict[str, Any]) -> None:
        kind = attachment.get("@odata.type")
        if kind == "#microsoft.graph.fileAttachment" and attachment.get("content"):
            ref = ContentRef.from_json(attachment["content"])
            data: bytes | Any = (
                await self.ctx.repo.read_bytes(ref)
                if ref.size < ATTACHMENT_DIRECT_MAX  # one POST: read whole; else streamed
                else self.ctx.repo.read(ref)
            )
            await self.graph.upload_mail_attachment(
                self.user,
                "",
                str(attachment.get("name") or "attachment"),
                str(attachment.get("contentType") or "application/octet-stream"),
                data,
                ref.size,
                is_inline=bool(attachment.get("isInline")),
                content_id=attachment.get("contentId"),
                event_id=event_id,
            )
            return
        body = {k: v for k, v in attachment.items() if k not in ATTACHMENT_DROP}
        body.pop("size", None)
        body.pop("lastModifiedDateTime", None)
        if isinstance(body.get("item"), dict):
            body["item"] = {k: v for k, v in body["item"].items() if k not in ITEM_DROP}
        url = f"{self.base}/events/{quote(event_id, safe='')}/attachments"
        if kind == "#microsoft.graph.referenceAttachment":
            # A link is beta's type: v1.0 has no address for it, and refuses one without.
            if not body.get("sourceUrl"):
                raise ValueError("a link whose address was not kept (backed up from v1.0)")
            url = "/beta" + url
        await self.post(url, body)

    async def _instances(self, event_id: str, lo: datetime, hi: datetime) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        async for values in self.graph.paginate(
            f"{self.base}/events/{quote(event_id, safe='')}/instances",
            params={
                "startDateTime": lo.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "endDateTime": hi.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "$select": "id,originalStart,start,end,type",
            },
            headers=self.headers,
            mailbox=self.user,
        ):
            found.extend(values)
        return found

    async def _fix_instances(self, event_id: str, event: dict[str, Any]) -> list[str]:
        """Delete the cancelled occurrences and patch the exceptions onto the new series."""
        problems: list[str] = []
        first = local_start(event)
        event_zone = zone(event.get("originalStartTimeZone"))
        for day in cancelled_dates(event):
            try:
                instance = await self._instance_on(event_id, day, first, event_zone)
                if instance is None:
                    problems.append(f"no occurrence on {day} to cancel")
                    continue
                await self.send(
                    "DELETE", f"{self.base}/events/{quote(instance, safe='')}", expected=(204, 200)
                )
            except GraphError as exc:
                if retries_the_job(exc):
                    raise
                problems.append(f"cancelling {day}: {exc}")
        for exception in event.get("exceptionOccurrences") or []:
            original = offset_time(exception.get("originalStart"))
            if original is None:
                continue
            try:
                # An all-day series' occurrence is its date (its originalStart is the instant
                # of that date's midnight in the series' zone); a timed one is its instant.
                instance = (
                    await self._instance_on(
                        event_id, original_day(original, event), first, event_zone
                    )
                    if event.get("isAllDay")
                    else await self._instance_at(event_id, original)
                )
                if instance is None:
                    problems.append(f"no occurrence at {original.isoformat()} for an exception")
                    continue
                changes = payload(exception, EXCEPTION_WRITABLE)
                changes.pop("isAllDay", None)
                if "body" in changes:
                    changes["body"] = with_attendees(
                        exception.get("body"), attendee_lines(exception)
                    )
                await self.send(
                    "PATCH",
                    f"{self.base}/events/{quote(instance, safe='')}",
                    changes,
                    expected=(200, 204),
                )
            except GraphError as exc:
                if retries_the_job(exc):
                    raise
                problems.append(f"exception of {original.isoformat()}: {exc}")
                continue
            # Attachments the exception carries itself (backed up with it).
            for attachment in exception.get("attachments") or []:
                try:
                    await self._add_attachment(instance, attachment)
                except (GraphError, ValueError) as exc:
                    if retries_the_job(exc):
                        raise
                    problems.append(
                        f"attachment {attachment.get('name')!r} of the exception of "
                        f"{original.isoformat()}: {exc}"
                    )
        return problems

    async def _instance_on(
        self, event_id: str, day: date, first: datetime | None, event_zone: Any
    ) -> str | None:
        """The occurrence whose original date (in the series' zone) is ``day``."""
        clock = first.timetz().replace(tzinfo=None) if first else datetime.min.time()
        expected = datetime.combine(day, clock).replace(tzinfo=event_zone)
        for instance in await self._instances(
            event_id, expected - timedelta(days=1), expected + timedelta(days=2)
        ):
            original = offset_time(instance.get("originalStart")) or start_of(instance)
            if original is not None and original.astimezone(event_zone).date() == day:
                return str(instance["id"])
        return None

    async def _instance_at(self, event_id: str, original: datetime) -> str | None:
        instances = await self._instances(
            event_id, original - timedelta(minutes=1), original + timedelta(days=1)
        )
        for instance in instances:
            if offset_time(instance.get("originalStart")) == original:
                return str(instance["id"])
        return None


async def restore(ctx: RestoreContext, selection: Selection) -> None:
    await CalendarRestore(ctx, selection).restore()
