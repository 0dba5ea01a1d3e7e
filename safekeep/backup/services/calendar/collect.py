"""Backing up a user's calendars incrementally with Graph v1.0.

What an item is: a series master (with its exceptions and cancelled occurrences inside its
document) or a single event. Occurrences are not items: they are computed from the
master's recurrence, as every calendar client does.

How changes are found (v1.0 only; beta's per-calendar ``events/delta`` is not used):

1. ``/calendars/{id}/calendarView/delta`` over a wide window (3 years back, 3 years ahead),
   one delta round per calendar. It reports instances: a changed single event appears
   under its own id, a changed series as its occurrences and exceptions (each naming
   ``seriesMasterId``), a deleted event or cancelled occurrence as ``@removed``. Each page
   tells us which masters and single events to fetch again, by id, through ``$batch``
   (20 per call); an item whose stored change key already matches costs nothing.
   ``@removed`` does not prove a deletion: Graph also names so what left the window (moved
   or edited out of it) and what changed outside it (added, edited, deleted), and we store
   events outside the window (step 2). So a removal of a stored event is checked before its
   version is closed, in the same page before its link is saved: one GET of it (the whole
   event, 20 per ``$batch``) closes it on 404, keeps it when its change key is the stored
   one, and otherwise stores what came back (once the run's rounds are done, since the GET
   does not say which calendar holds it: it may have moved to one whose round comes later).
   A removal whose id we do not store (an occurrence) means a series lost an occurrence or
   died: the stored series masters of that calendar are checked too, by id (``$select`` of
   the change key) in the same ``$batch`` calls. When listing the calendar's events with
   their change keys (500 a page) takes fewer requests than there are ids to check, that
   listing settles them all instead (and a removed event it holds and that changed is
   fetched like any other).
2. What the window misses: events entirely outside it (a series that ended more than three
   years ago, a meeting booked more than three years ahead). A full pass covers them:
   ``/calendars/{id}/events`` (masters and single events, not instances, 500 per page,
   only ``id,changeKey``) lists every event with its change key; what changed is fetched,
   what is no longer there is closed. The full pass runs on the first backup, after a
   410 resync, and whenever the window's end comes within 2.5 years of today (so about
   every six months, when the window slides forward); an incremental run in between costs
   one ``$batch`` carrying every calendar's delta request (20 calendars per call), plus
   what changed.
3. The calendar list: Graph has no delta for it, so it is read (and recorded) on the first
   backup, on any full pass, and when the stored list is older than
   ``calendar_list_refresh_hours`` (the ``calendars`` delta state keeps when it was read);
   in between, the rounds run over the calendars the catalog holds. It is read at once in
   the same run when a calendar's round answers 404 (deleted, or unreadable), when a
   round's link expired, or when a run started by change notifications finds nothing in
   the known calendars (the notified event is in a calendar created since). A new calendar
   whose events are not notified is found at most that interval late.

The window and state of each calendar's round live under the delta collection
``view:<calendar id>:<yyyymmdd start>:<yyyymmdd end>``. A full pass keeps its resume link
until the closing sweep has committed, so a pass cut short anywhere is resumed, never
skipped. ``Prefer: IdType="ImmutableId"`` keeps an event's id when it moves between
calendars, so a move is one item with a new parent.

Attachments (fileAttachment bytes have no MIME to live in) are streamed from ``$value``
into blobs and referenced from the stored document as ``attachments[i].content`` (a
``ContentRef``); item and reference attachments are kept as Graph's JSON. An exception of a
series that carries attachments of its own (not just its series') keeps them the same way
under ``exceptionOccurrences[i].attachments``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import structlog

from safekeep.backup.catalog import ItemRecord
from safekeep.backup.collect import CollectContext
from safekeep.backup.outlook import MailboxReader
from safekeep.backup.services.calendar.search import (
    CALENDAR_KIND,
    EVENT_KIND,
    PRIVATE,
    fields_of,
    meta_of,
    offset_time,
)
from safekeep.graph.client import BatchRequest, BatchResponse, DeltaPage, prefer
from safekeep.graph.errors import BadRequest, Forbidden, GraphError, NotFound, ResyncRequired
from safekeep.graph.transport import json_bytes
from safekeep.runtime import unit_of_work
from safekeep.search.extract import extract_text
from safekeep.storage.repository import ContentRef
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.models import DeltaState, ItemVersion, JobTrigger, SkippedItem, utcnow

log = structlog.get_logger(__name__)

SERVICE = "calendar"
# The delta state that keeps the calendar list and when it was read (JSON in its link):
# Graph has no delta for it, so an incremental re-reads it only when it is older than the
# configured interval, and otherwise needs no query of the catalog to know the calendars.
LISTED = "calendars"

WINDOW_PAST = timedelta(days=3 * 365)
WINDOW_FUTURE = timedelta(days=3 * 365)
# A window whose end is closer than this is replaced by a fresh one (with a full pass).
ROTATE_AHEAD = timedelta(days=int(2.5 * 365))
VIEW_PAGE_SIZE = 500
SWEEP_PAGE_SIZE = 500
BATCH_SIZE = 20
# Attachments up to this size are read whole (for text extraction); larger ones stream.
SMALL_ATTACHMENT = 4 * 1024 * 1024
ATTACHMENT_CONCURRENCY = 4

# Every v1.0 event property (navigation properties aside; the test suite checks this list
# against msgraph-sdk's v1.0 model, since Graph refuses a $select of an unknown property).
# cancelledOccurrences and exceptionOccurrences are only returned when selected (and the
# latter expanded) on a GET of a series master by id.
EVENT_FIELDS = (
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "transactionId",
    "originalStartTimeZone",
    "originalEndTimeZone",
    "iCalUId",
    "reminderMinutesBeforeStart",
    "isReminderOn",
    "hasAttachments",
    "subject",
    "bodyPreview",
    "importance",
    "sensitivity",
    "isAllDay",
    "isCancelled",
    "isOrganizer",
    "responseRequested",
    "seriesMasterId",
    "showAs",
    "type",
    "webLink",
    "onlineMeetingUrl",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "allowNewTimeProposals",
    "isDraft",
    "hideAttendees",
    "responseStatus",
    "body",
    "start",
    "end",
    "originalStart",
    "location",
    "locations",
    "recurrence",
    "attendees",
    "organizer",
    "onlineMeeting",
    "cancelledOccurrences",
    "exceptionOccurrences",
)
ATTACHMENT_FIELDS = "id,name,contentType,size,isInline,lastModifiedDateTime"  # no bytes
# An event comes with its attachments' metadata, as a message does from its delta page: a
# listing of its own per event was a round of requests after every $batch of events.
EVENT_QUERY = (
    f"$select={','.join(EVENT_FIELDS)}"
    f"&$expand=exceptionOccurrences,attachments($select={ATTACHMENT_FIELDS})"
)
ITEM_ATTACHMENT_QUERY = "$expand=microsoft.graph.itemattachment/item"
FILE_ATTACHMENT = "#microsoft.graph.fileAttachment"
IMMUTABLE = prefer(immutable_id=True)


@dataclass(frozen=True)
class Window:
    lo: datetime
    hi: datetime

    @classmethod
    def around(cls, now: datetime) -> Window:
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(day - WINDOW_PAST, day + WINDOW_FUTURE)

    def key(self, calendar_id: str) -> str:
        return f"view:{calendar_id}:{self.lo:%Y%m%d}:{self.hi:%Y%m%d}"

    @staticmethod
    def parse(key: str) -> tuple[str, Window] | None:
        if not key.startswith("view:"):
            return None
        head, _, hi = key.rpartition(":")
        calendar_id, _, lo = head[len("view:") :].rpartition(":")
        try:
            return calendar_id, Window(
                datetime.strptime(lo, "%Y%m%d").replace(tzinfo=UTC),
                datetime.strptime(hi, "%Y%m%d").replace(tzinfo=UTC),
            )
        except ValueError:
            return None


@dataclass
class _Round:
    """One calendar's delta round: where it starts and what kind it is."""

    calendar_id: str
    key: str
    window: Window
    link: str
    full: bool  # a full pass (closing sweep, resume links kept until it ends)
    stale: set[str]  # delta states of this calendar to drop once a full pass ends


@dataclass
class _Loaded:
    states: dict[str, DeltaState]
    retries: list[SkippedItem]
    notified: bool  # the job was started by change notifications


def listed(state: DeltaState | None) -> tuple[datetime, dict[str, str]] | None:
    """The calendar list as last read (id -> name) and when, from the ``calendars`` state."""
    if state is None or not state.delta_link:
        return None
    try:
        kept = json.loads(state.delta_link)
        moment = datetime.fromisoformat(kept["at"])
        calendars = {str(c): str(n) for c, n in kept["calendars"]}
    except (ValueError, KeyError, TypeError):
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), calendars


@dataclass
class _Plan:
    """What one page (or sweep page) asks for: items to fetch and items that are gone."""

    fetch: dict[str, str | None] = field(default_factory=dict)  # id -> seen change key
    removed: list[str] = field(default_factory=list)
    unknown_removals: bool = False
    # stored under this calendar and named @removed: id -> stored change key (to be checked)
    suspects: dict[str, str | None] = field(default_factory=dict)
    # suspects Graph still has, changed (outside the window now): already fetched, stored
    # with the page under this calendar (``CalendarCollector.unplaced`` may move them)
    changed: list[dict[str, Any]] = field(default_factory=list)


class CalendarCollector(MailboxReader):
    def __init__(self, ctx: CollectContext) -> None:
        super().__init__(ctx)
        self.limit = ctx.runtime.settings.search_body_max_chars
        self.handled: set[str] = set()  # fetched (or found current) during this run
        self.calendar_names: dict[str, str] = {}
        self.resynced = False  # a round's link expired: it became a full pass
        # Stored events a round named @removed that Graph still has, changed: id -> (the
        # calendar they are stored under, the event as fetched). Placed once every round ran.
        self.unplaced: dict[str, tuple[str, dict[str, Any]]] = {}
        # Events named @removed by the round of a calendar other than the one storing them.
        self.removed_elsewhere: dict[str, set[str]] = {}

    # ---- the run -------------------------------------------------------------------------

    async def collect(self) -> None:
        await self._rounds()
        await self._place_unplaced()

    async def _rounds(self) -> None:
        loaded = await self._load()
        states = loaded.states
        kept = listed(states.get(LISTED))
        refresh = timedelta(hours=self.ctx.runtime.settings.calendar_list_refresh_hours)
        self.calendar_names = dict(kept[1]) if kept else {}
        rounds = [self._plan_round(cid, states) for cid in self.calendar_names]
        fresh = (
            kept is not None
            and timedelta(0) <= utcnow() - kept[0] < refresh  # (a clock ahead: stale)
            and bool(rounds)
            and not any(one.full for one in rounds)  # a first backup, resync or window rotation
        )
        if not fresh:
            calendars = await self._calendars()
            await self._record_calendars(calendars, states)
            rounds = [self._plan_round(c["id"], states) for c in calendars]
        await self._retry_skipped(loaded.retries)
        missing = await self._run_rounds(rounds, report_missing=not fresh)
        found_nothing = self.run.counters.items == 0 and not self.unplaced
        if not fresh or not (missing or self.resynced or (loaded.notified and found_nothing)):
            return
        # The stored list no longer explains what Graph says: a calendar is gone, a round
        # had to start again, or a change was notified that no known calendar holds (an
        # event in a calendar created since the last listing). List them now.
        log.info("calendar_relist", missing=len(missing), resynced=self.resynced)
        known = set(self.calendar_names)
        calendars = await self._calendars()
        states = await self.run.delta_links()
        await self._record_calendars(calendars, states)
        for calendar_id, exc in missing.items():
            if calendar_id in self.calendar_names:  # still listed: unreadable, not gone
                await self.unreadable(
                    calendar_id, self.calendar_names[calendar_id], exc, "calendar"
                )
        new = [self._plan_round(c["id"], states) for c in calendars if c["id"] not in known]
        await self._run_rounds(new, report_missing=True)

    async def _load(self) -> _Loaded:
        """What the run starts from, in one transaction: delta states (the calendar list
        among them), the items earlier runs skipped, and whether change notifications
        started it."""
        account_id = self.run.account_id
        async with unit_of_work(self.ctx.runtime) as session:
            states = await catalog.delta_states(session, account_id, SERVICE)
            retries = await catalog.skipped_items(session, account_id, SERVICE)
            job = None
            if self.ctx.job_id is not None:
                job = await job_repository.get_system(session, self.ctx.job_id)
        return _Loaded(
            states={s.collection: s for s in states},
            retries=retries,
            notified=job is not None and job.trigger == JobTrigger.change,
        )

    async def _run_rounds(
        self, rounds: list[_Round], *, report_missing: bool
    ) -> dict[str, GraphError]:
        """Each calendar's round, 20 first pages per ``$batch``. Returns the calendars Graph
        no longer finds; with ``report_missing`` they are recorded as unreadable at once
        (the list was just read), else the caller re-lists the calendars first."""
        missing: dict[str, GraphError] = {}
        for start in range(0, len(rounds), BATCH_SIZE):
            group = rounds[start : start + BATCH_SIZE]
            firsts = await self._first_pages(group)
            for one in group:
                try:
                    await self._run_round(one, firsts.get(one.calendar_id))
                except NotFound as exc:
                    if report_missing:
                        await self.unreadable(
                            one.calendar_id,
                            self.calendar_names.get(one.calendar_id),
                            exc,
                            "calendar",
                        )
                    else:
                        missing[one.calendar_id] = exc
                except (BadRequest, Forbidden) as exc:
                    # A calendar we may list but not read (a shared or special calendar) must
                    # not cost the user's other calendars; the next run tries it again.
                    await self.unreadable(
                        one.calendar_id, self.calendar_names.get(one.calendar_id), exc, "calendar"
                    )
                await self.ctx.progress()
        return missing

    async def _calendars(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async for values in self.graph.paginate(
            f"{self.base}/calendars", headers=IMMUTABLE, mailbox=self.user
        ):
            out.extend(v for v in values if v.get("id"))
        self.calendar_names = {c["id"]: str(c.get("name") or "Calendar") for c in out}
        return out

    async def _record_calendars(
        self, calendars: list[dict[str, Any]], states: dict[str, DeltaState]
    ) -> None:
        current = {c["id"] for c in calendars}
        async with self.run.page() as cat:
            for calendar in calendars:
                change_key = calendar.get("changeKey") or json.dumps(
                    [calendar.get("name"), calendar.get("color"), calendar.get("hexColor")]
                )
                await cat.record(
                    ItemRecord(
                        external_id=calendar["id"],
                        kind=CALENDAR_KIND,
                        name=self.calendar_names[calendar["id"]],
                        parent_external_id=None,
                        change_key=str(change_key),
                        meta={
                            "name": calendar.get("name"),
                            "color": calendar.get("color"),
                            "hex_color": calendar.get("hexColor"),
                            "is_default": bool(calendar.get("isDefaultCalendar")),
                            "owner": calendar.get("owner"),
                            "can_edit": calendar.get("canEdit"),
                        },
                    )
                )
            stored = await catalog.open_external_ids(
                cat.session, self.run.account_id, SERVICE, [CALENDAR_KIND]
            )
            for calendar_id in stored:
                if calendar_id not in current:  # the calendar was deleted
                    await cat.remove_subtree(calendar_id)
                    await cat.remove(calendar_id)
            for key in states:
                parsed = Window.parse(key)
                if parsed is not None and parsed[0] not in current:
                    await cat.drop_delta(key)
            kept = {
                "at": utcnow().isoformat(),
                "calendars": [[c["id"], self.calendar_names[c["id"]]] for c in calendars],
            }
            await cat.save_delta(LISTED, delta_link=json.dumps(kept, ensure_ascii=False))

    # ---- one calendar ----------------------------------------------------------------------

    def _plan_round(self, calendar_id: str, states: dict[str, DeltaState]) -> _Round:
        """Which round this calendar needs: resume a full pass, go on incrementally, or
        start a full pass over a fresh window (first run, or the window is ageing)."""
        mine: dict[str, tuple[Window, DeltaState]] = {}
        for key, state in states.items():
            parsed = Window.parse(key)
            if parsed is not None and parsed[0] == calendar_id:
                mine[key] = (parsed[1], state)
        in_progress = [
            (key, window, state)
            for key, (window, state) in mine.items()
            if state.resume_link and not state.delta_link
        ]
        if in_progress:
            key, window, state = max(in_progress, key=lambda t: t[1].hi)
            return _Round(calendar_id, key, window, state.resume_link or "", True, set(mine))
        done = [(key, window, state) for key, (window, state) in mine.items() if state.delta_link]
        now = utcnow()
        if done:
            key, window, state = max(done, key=lambda t: t[1].hi)
            if window.hi - now >= ROTATE_AHEAD:
                link = state.resume_link or state.delta_link or ""
                return _Round(calendar_id, key, window, link, False, set(mine))
        window = Window.around(now)
        return _Round(
            calendar_id,
            window.key(calendar_id),
            window,
            self._view_start(calendar_id, window),
            True,
            set(mine),
        )

    async def _first_pages(self, rounds: list[_Round]) -> dict[str, DeltaPage | GraphError]:
        """The first page of each calendar's round, 20 calendars per ``$batch``: an
        unchanged mailbox then costs one round trip for all its calendars."""
        requests = [
            BatchRequest(id=str(n), method="GET", url=one.link, headers=self._view_headers())
            for n, one in enumerate(rounds)
        ]
        out: dict[str, DeltaPage | GraphError] = {}
        answers = await self.graph.batch(requests, mailbox=self.user) if requests else []
        for n, answer in enumerate(answers):
            if answer.ok and isinstance(answer.body, dict):
                out[rounds[n].calendar_id] = DeltaPage(
                    list(answer.body.get("value") or []),
                    answer.body.get("@odata.nextLink"),
                    answer.body.get("@odata.deltaLink"),
                )
            elif answer.error is not None:
                out[rounds[n].calendar_id] = answer.error
        return out

    async def _run_round(self, one: _Round, first: DeltaPage | GraphError | None) -> None:
        if isinstance(first, GraphError) and not isinstance(first, ResyncRequired):
            first = None  # ask again on its own: the client's retries apply there
        try:
            if isinstance(first, ResyncRequired):
                raise first
            if one.full:
                await self._full(one, first)
            else:
                await self._incremental(one, first)
            return
        except ResyncRequired:  # an expired link (incremental or resumed pass)
            log.info("calendar_resync", calendar_id=one.calendar_id, full=one.full)
            self.resynced = True
            async with self.run.page() as cat:
                await cat.drop_delta(one.key)
        window = Window.around(utcnow())
        fresh = _Round(
            one.calendar_id,
            window.key(one.calendar_id),
            window,
            self._view_start(one.calendar_id, window),
            True,
            one.stale | {one.key},
        )
        await self._full(fresh, None)

    async def _pages(
        self, link: str, first: DeltaPage | None
    ) -> AsyncIterator[tuple[str, DeltaPage]]:
        """Each page of a round with the URL that fetched it (``first`` already in hand)."""
        if first is not None:
            yield link, first
            if not first.next_link:
                return
            link = first.next_link
        url = link
        async with self.delta_pages(link, self._view_headers()) as pages:
            async for page in pages:
                yield url, page
                if page.next_link:
                    url = page.next_link

    def _view_start(self, calendar_id: str, window: Window) -> str:
        lo = window.lo.strftime("%Y-%m-%dT%H:%M:%SZ")
        hi = window.hi.strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            f"{self.base}/calendars/{quote(calendar_id, safe='')}/calendarView/delta"
            f"?startDateTime={lo}&endDateTime={hi}"
        )

    async def _incremental(self, one: _Round, first: DeltaPage | None) -> None:
        calendar_id, key = one.calendar_id, one.key
        async for _url, page in self._pages(one.link, first):
            plan = await self._plan_view_page(calendar_id, page.items, check_series=True)
            records, gone = await self._fetch_records(calendar_id, plan.fetch)
            records += await self._records_of(calendar_id, plan.changed, {})
            removed = [*plan.removed, *gone]
            if not records and not removed and not page.next_link and page.delta_link:
                # Nothing to write: the new link is saved as the run completes.
                self.run.quiet(key, page.delta_link)
                continue
            async with self.run.page() as cat:
                await self._write(cat, calendar_id, records, removed)
                if page.next_link:
                    await cat.save_delta(key, resume_link=page.next_link)
                else:
                    await cat.save_delta(key, delta_link=page.delta_link)
            await self.ctx.progress()

    async def _full(self, one: _Round, first: DeltaPage | None) -> None:
        """A whole round over the window, then a sweep of every event; the delta link is
        saved with the sweep's result, so a crash before then resumes this pass."""
        calendar_id, key = one.calendar_id, one.key
        delta_link: str | None = None
        async for url, page in self._pages(one.link, first):
            plan = await self._plan_view_page(calendar_id, page.items, check_series=False)
            records, gone = await self._fetch_records(calendar_id, plan.fetch)
            async with self.run.page() as cat:
                await self._write(cat, calendar_id, records, gone)
                await cat.save_delta(key, resume_link=page.next_link or url)
            await self.ctx.progress()
            delta_link = page.delta_link
        seen = await self._sweep(calendar_id)
        async with self.run.page() as cat:
            await cat.remove_unseen([EVENT_KIND], seen, parent_external_id=calendar_id)
            if delta_link:
                await cat.save_delta(key, delta_link=delta_link)
            for old in one.stale - {key}:
                await cat.drop_delta(old)

    async def _sweep(self, calendar_id: str) -> set[str]:
        seen: set[str] = set()
        async for values in self.graph.paginate(
            f"{self.base}/calendars/{quote(calendar_id, safe='')}/events",
            params={"$select": "id,changeKey,type"},
            headers=prefer(max_page_size=SWEEP_PAGE_SIZE, immutable_id=True),
            mailbox=self.user,
        ):
            listed = {str(v["id"]): v.get("changeKey") for v in values if v.get("id")}
            seen |= set(listed)
            plan = _Plan()
            await self._plan_fetch(calendar_id, listed, plan)
            records, gone = await self._fetch_records(calendar_id, plan.fetch)
            seen -= set(gone)
            if records or gone:
                async with self.run.page() as cat:
                    await self._write(cat, calendar_id, records, gone)
            await self.ctx.progress()
        return seen

    def _view_headers(self) -> dict[str, str]:
        return prefer(max_page_size=VIEW_PAGE_SIZE, immutable_id=True)

    # ---- deciding what to fetch --------------------------------------------------------------

    async def _plan_view_page(
        self, calendar_id: str, values: list[dict[str, Any]], *, check_series: bool
    ) -> _Plan:
        """Turn a page of instances into masters and single events to fetch and removals.
        An id may appear more than once in a round: the last mention wins."""
        last: dict[str, dict[str, Any] | None] = {}
        for value in values:
            if not value.get("id"):
                continue
            if "@removed" in value:
                last.pop(str(value["id"]), None)
                last[str(value["id"])] = None
                continue
            master = value.get("seriesMasterId")
            if value.get("type") in ("occurrence", "exception") and master:
                target = str(master)
            else:
                target = str(value["id"])
            last.pop(target, None)
            last[target] = value
        wanted = {i: (v.get("changeKey") if v else None) for i, v in last.items() if v is not None}
        removed = [i for i, v in last.items() if v is None]
        plan = _Plan()
        await self._plan_fetch(calendar_id, wanted, plan)
        if removed:
            stored = await self.run.current(removed)
            for event_id in removed:
                version = stored.get(event_id)
                plan.fetch.pop(event_id, None)
                if version is None:
                    plan.unknown_removals = True
                elif not check_series:  # a full pass: its sweep decides what is gone
                    plan.removed.append(event_id)
                elif version.parent_external_id == calendar_id:
                    plan.suspects[event_id] = version.change_key
                else:  # stored under another calendar: perhaps it moved here
                    self.removed_elsewhere.setdefault(event_id, set()).add(calendar_id)
        if check_series and (plan.unknown_removals or plan.suspects):
            await self._check_removals(calendar_id, plan)
        return plan

    async def _plan_fetch(
        self, calendar_id: str, wanted: dict[str, str | None], plan: _Plan
    ) -> None:
        if not wanted:
            return
        stored = await self.run.current(list(wanted))
        for event_id, change_key in wanted.items():
            if event_id in self.handled:
                continue
            version = stored.get(event_id)
            if (
                version is not None
                and change_key is not None
                and version.change_key == change_key
                and version.parent_external_id == calendar_id
            ):
                self.handled.add(event_id)
                continue
            plan.fetch[event_id] = change_key

    async def _check_removals(self, calendar_id: str, plan: _Plan) -> None:
        """What the page's removals mean. A stored event named removed (``plan.suspects``) is
        gone only if Graph no longer has it; an occurrence id we do not store means one of
        the calendar's stored series lost an occurrence or died, so those are checked too.
        Each id costs one GET in ``$batch`` (a series its change key, a removed event the
        whole event, which is what gets stored if it changed), unless listing the calendar's
        events is cheaper, which settles them all."""
        suspects = plan.suspects
        masters: dict[str, ItemVersion] = {}
        if plan.unknown_removals or len(suspects) > 1:  # (one id: a GET is never dearer)
            async with unit_of_work(self.ctx.runtime) as session:
                under = await catalog.open_versions_under(
                    session, self.run.account_id, SERVICE, calendar_id
                )
            if plan.unknown_removals:
                masters = {
                    external_id: version
                    for external_id, version in under
                    if version.kind == EVENT_KIND
                    and (version.meta or {}).get("type") == "seriesMaster"
                    and external_id not in suspects
                }
            if -(-len(under) // SWEEP_PAGE_SIZE) < len(masters) + len(suspects):
                await self._check_by_listing(calendar_id, masters, plan)
                return
        answers = await self._get_all(
            [(event_id, "?$select=id,changeKey") for event_id in masters]
            + [(event_id, f"?{EVENT_QUERY}") for event_id in suspects]
        )
        for event_id, answer in answers[: len(masters)]:
            if answer.ok and isinstance(answer.body, dict):
                change_key = answer.body.get("changeKey")
                if change_key != masters[event_id].change_key:
                    plan.fetch.setdefault(event_id, change_key)
            elif isinstance(answer.error, NotFound):
                plan.removed.append(event_id)  # deleted, or moved (removal checks the parent)
            else:  # not sure: fetch it and let the fetch decide (and skip if it fails)
                plan.fetch.setdefault(event_id, None)
        events, missing, failed = await self._read_events(answers[len(masters) :])
        plan.removed.extend(missing)
        for event in events:
            # Unchanged: it is still there as stored (outside the window), nothing to do.
            # Changed: stored with this page, under this calendar, so that a crash loses
            # nothing; whether another calendar holds it now is known once every round ran.
            if event.get("changeKey") != suspects.get(str(event["id"])):
                plan.changed.append(event)
                # (a copy: storing it takes its attachments' listing out of the event)
                self.unplaced[str(event["id"])] = (calendar_id, dict(event))
        for event_id, exc in failed.items():
            await self._skip(calendar_id, event_id, exc)  # kept open; tried again next run

    async def _check_by_listing(
        self, calendar_id: str, masters: dict[str, ItemVersion], plan: _Plan
    ) -> None:
        """The removal check from one listing of the calendar's events and change keys."""
        listed = await self._listed_change_keys(calendar_id)
        stored = {event_id: version.change_key for event_id, version in masters.items()}
        for event_id, change_key in {**stored, **plan.suspects}.items():
            if event_id not in listed:
                plan.removed.append(event_id)  # deleted, or moved (removal checks the parent)
            elif listed[event_id] != change_key:  # here, changed: fetched with the page
                plan.fetch.setdefault(event_id, listed[event_id])

    async def _place_unplaced(self) -> None:
        """Move to their calendar the changed events a round named removed, Graph still has
        and the round stored under its own calendar, when another calendar's round named
        them removed too (moved there, outside its window): the calendar that lists them
        holds them. Unless another calendar's round stored them meanwhile (moved there,
        inside its window)."""
        pending = {
            i: p for i, p in self.unplaced.items() if self.removed_elsewhere.get(i, set()) - {p[0]}
        }
        self.unplaced.clear()
        if not pending:
            return  # each stored where it is, with the page that named it
        current = await self.run.current(list(pending))
        listings: dict[str, dict[str, str | None]] = {}
        placed: dict[str, list[dict[str, Any]]] = {}
        for event_id, (calendar_id, event) in pending.items():
            version = current.get(event_id)
            if version is None or version.parent_external_id != calendar_id:
                continue  # another calendar's round stored it meanwhile (it moved there)
            elsewhere = self.removed_elsewhere[event_id] - {calendar_id}
            holder = None
            for candidate in [calendar_id, *sorted(elsewhere)]:
                if candidate not in listings:
                    listings[candidate] = await self._listed_change_keys(candidate)
                if event_id in listings[candidate]:
                    holder = candidate
                    break
            if holder is None or holder == calendar_id:
                continue  # where it was stored (or in none of them now: the next run finds it)
            placed.setdefault(holder, []).append(event)
        for calendar_id, events in placed.items():
            for start in range(0, len(events), BATCH_SIZE):
                chunk = events[start : start + BATCH_SIZE]
                records = await self._records_of(calendar_id, chunk, {})
                async with self.run.page() as cat:
                    await self._write(cat, calendar_id, records, [])
                await self.ctx.progress()

    async def _listed_change_keys(self, calendar_id: str) -> dict[str, str | None]:
        """Every event of the calendar (masters and single events) with its change key."""
        listed: dict[str, str | None] = {}
        async for values in self.graph.paginate(
            f"{self.base}/calendars/{quote(calendar_id, safe='')}/events",
            params={"$select": "id,changeKey,type"},
            headers=prefer(max_page_size=SWEEP_PAGE_SIZE, immutable_id=True),
            mailbox=self.user,
        ):
            listed.update({str(v["id"]): v.get("changeKey") for v in values if v.get("id")})
        return listed

    # ---- fetching ------------------------------------------------------------------------------

    async def _fetch_records(
        self, calendar_id: str, wanted: dict[str, str | None]
    ) -> tuple[list[ItemRecord], list[str]]:
        """Fetch these events (20 per ``$batch``, each with its attachments' metadata) and
        their attachments' bytes, and store their blobs; return their records and the ids
        Graph no longer has."""
        records: list[ItemRecord] = []
        gone: list[str] = []
        ids = [i for i in wanted if i not in self.handled]
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start : start + BATCH_SIZE]
            events, missing, failed = await self._get_events(chunk)
            gone.extend(missing)
            records.extend(await self._records_of(calendar_id, events, failed))
            self.handled.update(chunk)
        return records, gone

    async def _records_of(
        self, calendar_id: str, events: list[dict[str, Any]], failed: dict[str, Exception]
    ) -> list[ItemRecord]:
        """Records of fetched events (their attachments' bytes stored); the ones that fail,
        and ``failed``, are skipped (to be tried again next run)."""
        records: list[ItemRecord] = []
        listings = {str(e["id"]): e.pop("attachments", None) for e in events}
        slots = asyncio.Semaphore(ATTACHMENT_CONCURRENCY)
        built = await asyncio.gather(
            *(self._bounded(slots, calendar_id, e, listings.get(e["id"])) for e in events),
            return_exceptions=True,
        )
        for event, result in zip(events, built, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                failed[event["id"]] = result
            elif result is not None:
                records.append(result)
        subjects = {str(e["id"]): e.get("subject") for e in events}
        for event_id, exc in failed.items():
            await self._skip(calendar_id, event_id, exc, subjects.get(event_id))
        self.handled.update(str(e["id"]) for e in events)
        return records

    async def _bounded(
        self,
        slots: asyncio.Semaphore,
        calendar_id: str,
        event: dict[str, Any],
        listing: list[dict[str, Any]] | None,
    ) -> ItemRecord:
        async with slots:
            return await self._record(calendar_id, event, listing)

    async def _get_events(
        self, ids: list[str]
    ) -> tuple[list[dict[str, Any]], list[str], dict[str, Exception]]:
        return await self._read_events(await self._get_all([(i, f"?{EVENT_QUERY}") for i in ids]))

    async def _read_events(
        self, answers: list[tuple[str, BatchResponse]]
    ) -> tuple[list[dict[str, Any]], list[str], dict[str, Exception]]:
        """Events from their GET answers, the ids Graph does not have (404), and the ones
        that failed again when asked on their own."""
        events: list[dict[str, Any]] = []
        missing: list[str] = []
        failed: dict[str, Exception] = {}
        for event_id, answer in answers:
            if answer.ok and isinstance(answer.body, dict):
                events.append(answer.body)
                continue
            error = answer.error
            if isinstance(error, NotFound):
                missing.append(event_id)
                continue
            # One more go on its own (the client already retried throttling and 5xx).
            try:
                events.append(await self._get_event(event_id))
            except NotFound:
                missing.append(event_id)
            except GraphError as exc:
                failed[event_id] = exc
        return events, missing, failed

    async def _get_all(self, wanted: list[tuple[str, str]]) -> list[tuple[str, BatchResponse]]:
        """GET ``events/{id}`` + its query for every (id, query) through ``$batch`` (20 per
        call), each id with its answer (in order; no call at all for no ids)."""
        requests = [
            BatchRequest(
                id=str(n),
                method="GET",
                url=f"{self.base}/events/{quote(event_id, safe='')}{then}",
                headers=IMMUTABLE,
            )
            for n, (event_id, then) in enumerate(wanted)
        ]
        answers = await self.graph.batch(requests, mailbox=self.user) if requests else []
        return [(event_id, answer) for (event_id, _), answer in zip(wanted, answers, strict=True)]

    async def _get_event(self, event_id: str) -> dict[str, Any]:
        return await self.get_item(
            f"{self.base}/events/{quote(event_id, safe='')}?{EVENT_QUERY}", IMMUTABLE
        )

    async def _record(
        self,
        calendar_id: str,
        event: dict[str, Any],
        listing: list[dict[str, Any]] | None,
    ) -> ItemRecord:
        event_id = str(event["id"])
        event.pop("@odata.context", None)
        if event.get("hasAttachments") and listing is None:
            listing = await self._attachments_of(event_id)
        attachments: list[dict[str, Any]] = []
        texts: list[str] = []
        stored_bytes = 0
        for meta in listing or []:
            entry, text = await self._attachment(event_id, meta)
            attachments.append(entry)
            stored_bytes += int(entry.get("contentSize") or 0)
            if text:
                texts.append(text)
        event["attachments"] = attachments
        for exception in event.get("exceptionOccurrences") or []:
            own, own_texts = await self._exception_attachments(exception, listing or [])
            if own is not None:
                exception["attachments"] = own
                attachments = [*attachments, *own]
                texts.extend(own_texts)
                stored_bytes += sum(int(a.get("contentSize") or 0) for a in own)
        event[PRIVATE] = {"attachment_text": "\n".join(texts)[: self.limit]}
        name = self.calendar_names.get(calendar_id, "Calendar")
        data = json_bytes(event, sort_keys=True)
        document = await self.ctx.repo.put_bytes(data)
        subject = str(event.get("subject") or "") or "(no subject)"
        return ItemRecord(
            external_id=event_id,
            kind=EVENT_KIND,
            name=subject,
            parent_external_id=calendar_id,
            size=len(data) + stored_bytes,
            modified_at=offset_time(event.get("lastModifiedDateTime")),
            change_key=event.get("changeKey"),
            document=document,
            refs=[ContentRef.from_json(a["content"]) for a in attachments if a.get("content")],
            meta=meta_of(event, name),
            search=fields_of(event, name),
        )

    async def _attachments_of(self, event_id: str) -> list[dict[str, Any]]:
        """Attachment metadata (no bytes) of one event or exception, every page of it."""
        listing: list[dict[str, Any]] = []
        async for values in self.graph.paginate(
            f"{self.base}/events/{quote(event_id, safe='')}/attachments",
            params={"$select": ATTACHMENT_FIELDS},
            headers=IMMUTABLE,
            mailbox=self.user,
        ):
            listing.extend(values)
        return listing

    async def _exception_attachments(
        self, exception: dict[str, Any], series: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]] | None, list[str]]:
        """The attachments an exception carries itself (an exception is an item of its own
        in Exchange: it can gain or lose attachments apart from its series). None when it
        has none or exactly its series' own, which the restored series gives it anyway."""
        if not exception.get("hasAttachments") or not exception.get("id"):
            return None, []
        exception_id = str(exception["id"])
        listing = await self._attachments_of(exception_id)

        def shape(values: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
            return sorted(
                (str(a.get("name")), str(a.get("contentType")), int(a.get("size") or 0))
                for a in values
            )

        if shape(listing) == shape(series):
            return None, []
        own: list[dict[str, Any]] = []
        texts: list[str] = []
        for meta in listing:
            entry, text = await self._attachment(exception_id, meta)
            own.append(entry)
            if text:
                texts.append(text)
        return own, texts

    async def _attachment(self, event_id: str, meta: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """One attachment as it goes into the document, and its text for the index."""
        attachment_id = quote(str(meta["id"]), safe="")
        path = f"{self.base}/events/{quote(event_id, safe='')}/attachments/{attachment_id}"
        if meta.get("@odata.type") != FILE_ATTACHMENT:
            # An attached item with its item; a link as beta answers it (v1.0 has no address).
            full = await self.graph.get_json(
                f"{path}?{ITEM_ATTACHMENT_QUERY}"
                if meta.get("@odata.type") == "#microsoft.graph.itemAttachment"
                else f"/beta{path}",
                headers=IMMUTABLE,
                mailbox=self.user,
            )
            full.pop("@odata.context", None)
            full.pop("contentBytes", None)
            return full, ""
        entry = {k: v for k, v in meta.items() if k != "@odata.context"}
        size = int(meta.get("size") or 0)
        text = ""
        if size <= SMALL_ATTACHMENT:
            data = b"".join(
                [c async for c in self.graph.stream(f"{path}/$value", mailbox=self.user)]
            )
            ref: ContentRef = await self.ctx.repo.put_bytes(data)
            if data:
                text = await asyncio.to_thread(
                    extract_text,
                    str(meta.get("name") or ""),
                    meta.get("contentType"),
                    data,
                    limit=self.limit,
                )
        else:
            ref = await self.ctx.repo.put_stream(
                self.graph.stream(f"{path}/$value", mailbox=self.user)
            )
        entry["content"] = ref.to_json()
        entry["contentSize"] = ref.size
        return entry, text

    # ---- writing -------------------------------------------------------------------------------

    async def _write(
        self,
        cat: Any,
        calendar_id: str,
        records: Iterable[ItemRecord],
        removed: Iterable[str],
    ) -> None:
        records = list(records)
        await cat.preload([r.external_id for r in records] + list(removed))
        for record in records:
            await cat.record(record)
        for event_id in removed:
            await cat.remove(event_id, only_if_parent=calendar_id)

    async def _skip(
        self, calendar_id: str, event_id: str, exc: Exception, subject: str | None = None
    ) -> None:
        code = getattr(exc, "reason", None) or type(exc).__name__
        log.warning("event_skipped", event_id=event_id, error=str(exc)[:300])
        await self.ctx.skip(
            item_ref=event_id,
            name=subject,
            code=str(code),
            detail=str(exc)[:2000],
            collection=calendar_id,
        )

    async def _retry_skipped(self, rows: list[SkippedItem]) -> None:
        """Events an earlier run could not read: fetch them again by id."""
        if not rows:
            return
        resolved: list[str] = []
        for row in rows:
            calendar_id = row.collection or ""
            if calendar_id not in self.calendar_names:
                resolved.append(row.external_id)  # its calendar is gone
                continue
            skipped_before = self.ctx.skipped
            records, gone = await self._fetch_records(calendar_id, {row.external_id: None})
            async with self.run.page() as cat:
                await self._write(cat, calendar_id, records, gone)
            if records or gone or self.ctx.skipped == skipped_before:
                resolved.append(row.external_id)
        if resolved:
            await self.ctx.resolved(resolved)


async def collect(ctx: CollectContext) -> None:
    await CalendarCollector(ctx).collect()
