"""Calendar backup, restore, export and search end to end against graphsim.

Expectations come from graphsim's own state (``sim.state``), never from hard-coded counts.
One test runs on the scale-out column; the rest on the embedded one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar
import pytest

from graphsim import ids, ops
from graphsim.calendar import fmt_dt
from graphsim.state import Attachment, OItem
from safekeep.backup.context import open_repository
from safekeep.backup.services import module_for
from safekeep.backup.services.base import read_document
from safekeep.backup.services.calendar import collect as calendar_collect
from safekeep.backup.services.calendar import render as ics
from safekeep.search.extract import html_to_text
from safekeep.storage.repository import ContentRef
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Account, ItemVersion
from tests.backup.harness import EngineHarness, worker_killed_at
from tests.fixtures.sim import file_attachment, link_attachment

MONDAY = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # a Monday within every window
CANCELLED = (MONDAY + timedelta(days=28)).date().isoformat()
ATTACHMENT_TEXT = b"Quarterly zebracorn agenda: budget, hiring, roadmap.\n"
EXCEPTION_TEXT = b"Minutes of the moved meeting only.\n"  # an attachment only the exception has
WEEKLY = {
    "pattern": {
        "type": "weekly",
        "interval": 1,
        "month": 0,
        "dayOfMonth": 0,
        "daysOfWeek": ["monday"],
        "firstDayOfWeek": "sunday",
        "index": "first",
    },
    "range": {
        "type": "numbered",
        "startDate": MONDAY.date().isoformat(),
        "endDate": "0001-01-01",
        "recurrenceTimeZone": "UTC",
        "numberOfOccurrences": 6,
    },
}
COMPARED = (
    "subject",
    "start",
    "end",
    "isAllDay",
    "location",
    "categories",
    "showAs",
    "sensitivity",
    "importance",
    "recurrence",
    "isReminderOn",
    "reminderMinutesBeforeStart",
)


# ---- helpers --------------------------------------------------------------------------------


def attach_file(tenant: Any, item: Any, name: str, content_type: str, data: bytes) -> None:
    """Give a simulated event a file attachment, as a user would (call under the state lock)."""
    item.attachments.append(file_attachment(item, name, content_type, data, len(item.attachments)))
    item.props["hasAttachments"] = True
    tenant.touch_item(item)


def sim_events(h: EngineHarness, user_id: str) -> dict[str, OItem]:
    tenant = h.sim.tenant()
    return {
        i.id: i
        for i in tenant.items.values()
        if i.kind == "event" and i.user_id == user_id and not i.deleted
    }


def sim_calendars(h: EngineHarness, user_id: str) -> dict[str, str]:
    return {f.id: f.display_name for f in h.sim.tenant().user_folders(user_id, "calendar")}


def add_rich_events(h: EngineHarness, user_id: str) -> dict[str, str]:
    """A weekly series with an exception and a cancelled occurrence, an event with a text
    attachment, an all-day event and a long-past event outside the delta window."""
    tid = h.sim_tenant_id
    series = h.sim.add_event(
        tid,
        user_id,
        subject="Team sync series",
        start=MONDAY,
        end=MONDAY + timedelta(hours=1),
        recurrence=WEEKLY,
        attendees=["ann@example.com", "bob@example.com"],
        body="<html><body><p>Weekly flamingo review</p></body></html>",
        location="Room Göteborg",
    )
    with_file = h.sim.add_event(
        tid,
        user_id,
        subject="Budget workshop with file",
        start=MONDAY + timedelta(days=2),
        end=MONDAY + timedelta(days=2, hours=2),
        body="<html><body><p>Bring the numbers</p></body></html>",
    )
    all_day = h.sim.add_event(
        tid,
        user_id,
        subject="Company holiday",
        start=datetime(2026, 12, 24, tzinfo=UTC),
        end=datetime(2026, 12, 25, tzinfo=UTC),
    )
    ancient = h.sim.add_event(
        tid,
        user_id,
        subject="Founding meeting long ago",
        start=datetime(2019, 3, 4, 10, tzinfo=UTC),
        end=datetime(2019, 3, 4, 11, tzinfo=UTC),
        body="<html><body><p>Archaeopteryx minutes</p></body></html>",
    )
    tenant = h.sim.tenant()
    with h.sim.state.lock:
        master = tenant.items[series]
        day = (MONDAY + timedelta(days=7)).date().isoformat()
        master.exceptions[day] = {
            "subject": "Team sync series (moved)",
            "start": fmt_dt(MONDAY + timedelta(days=7, hours=2)),
            "end": fmt_dt(MONDAY + timedelta(days=7, hours=3)),
        }
        master.cancelled.append(CANCELLED)
        master.instance_attachments[day] = [
            file_attachment(master, "minutes.txt", "text/plain", EXCEPTION_TEXT, day, "minutes")
        ]
        tenant.touch_item(master)
        attach_file(tenant, tenant.items[with_file], "agenda.txt", "text/plain", ATTACHMENT_TEXT)
        holiday = tenant.items[all_day]
        holiday.props["isAllDay"] = True
        tenant.touch_item(holiday)
    return {"series": series, "file": with_file, "all_day": all_day, "ancient": ancient}


async def read_doc(h: EngineHarness, version: ItemVersion) -> dict[str, Any]:
    from safekeep.backup.context import open_repository

    repo = await open_repository(h.runtime, h.tenant)
    assert version.document is not None
    data: dict[str, Any] = json.loads(await repo.read_bytes(ContentRef.from_json(version.document)))
    return data


def assert_same_event(original: dict[str, Any], restored: dict[str, Any]) -> None:
    for key in COMPARED:
        assert restored.get(key) == original.get(key), key
    before = html_to_text(str((original.get("body") or {}).get("content") or ""))
    after = html_to_text(str((restored.get("body") or {}).get("content") or ""))
    assert before in after


def parse_ics(raw: bytes) -> Any:
    """Parsed iCalendar, untyped: icalendar's property types are a wide union."""
    return icalendar.Calendar.from_ical(raw)


def events_in(h: EngineHarness, calendar_id: str) -> list[OItem]:
    return h.sim.tenant().folder_items(calendar_id)


def default_calendar(h: EngineHarness, user_id: str) -> str:
    return h.sim.tenant().users[user_id].default_calendar


# ---- backup ---------------------------------------------------------------------------------


async def test_backup_then_incremental_tracks_versions_and_costs_little(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    uid = account.graph_id
    added = add_rich_events(h, uid)
    tenant = h.sim.tenant()
    with h.sim.state.lock:
        other = ops.new_folder(tenant, tenant.users[uid], "calendar", "Projects", None)

    run, skipped = await h.backup(account, "calendar")
    assert skipped == 0
    stored = await h.open_ids(account, "calendar", ["event"])
    expected = sim_events(h, uid)
    assert set(stored) == set(expected)  # the 2019 event too: the sweep covers it
    for event_id, version in stored.items():
        assert version.change_key == expected[event_id].change_key
        assert version.parent_external_id == expected[event_id].folder_id
    calendars = await h.open_ids(account, "calendar", ["calendar"])
    assert {k: v.name for k, v in calendars.items()} == sim_calendars(h, uid)
    assert run.counters.added == len(expected) + len(calendars)

    # Nothing changed: no versions, and a request count that does not grow with the events.
    h.sim.reset_counters()
    run, _ = await h.backup(account, "calendar")
    quiet = h.sim.counters()["total"]
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
    # One $batch carrying each calendar's delta request; the calendar list was read moments
    # ago (calendar_list_refresh_hours).
    assert quiet == 1, h.sim.counters()["by_endpoint"]
    assert sum(h.sim.counters()["batch_by_endpoint"].values()) == len(calendars)
    assert h.sim.counters()["by_endpoint"]["POST /$batch"] == 1
    assert quiet < len(expected)

    # Edit one, delete one, add one, move one to another calendar.
    edited, deleted = added["file"], added["all_day"]
    h.sim.edit_item(h.sim_tenant_id, edited, {"subject": "Budget workshop (edited)"})
    h.sim.delete_item(h.sim_tenant_id, deleted)
    new = h.sim.add_event(
        h.sim_tenant_id,
        uid,
        subject="Fresh event",
        start=MONDAY + timedelta(days=3),
        end=MONDAY + timedelta(days=3, hours=1),
    )
    moved = next(
        i
        for i, e in sim_events(h, uid).items()
        if i not in added.values() and i != new and not e.props.get("recurrence")
    )
    h.sim.move_item(h.sim_tenant_id, moved, other.id)
    before = {v.item_id: v for v in (await h.open_ids(account, "calendar", ["event"])).values()}
    h.sim.reset_counters()
    run, _ = await h.backup(account, "calendar")
    counters = h.sim.counters()
    changed_requests = counters["total"]
    assert changed_requests <= quiet + 4 * 3 + 2, counters["by_endpoint"]
    # The edited event's attachment metadata came with it ($expand), not from a listing.
    sent = {**counters["by_endpoint"], **counters["batch_by_endpoint"]}
    assert "GET /users/{user}/events/{item}/attachments/{att}/$value" in sent
    assert "GET /users/{user}/events/{item}/attachments" not in sent
    stored = await h.open_ids(account, "calendar", ["event"])
    expected = sim_events(h, uid)
    assert set(stored) == set(expected)
    assert stored[edited].name == "Budget workshop (edited)"
    assert stored[edited].first_seq == run.seq
    assert deleted not in stored
    assert stored[new].first_seq == run.seq
    assert stored[moved].parent_external_id == other.id
    assert stored[moved].item_id in before  # one item, with a new parent
    versions = await h.all_versions(account, "calendar")
    closed = [v for v in versions if v.last_seq == run.seq - 1]
    assert {v.name for v in closed} >= {"Budget workshop with file", "Company holiday"}
    counts = await h.versions_per_item(account, "calendar")
    assert counts[stored[edited].item_id] == 2


async def test_document_keeps_series_attendees_and_attachments(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    added = add_rich_events(h, account.graph_id)
    await h.backup(account, "calendar")
    stored = await h.open_ids(account, "calendar", ["event"])

    series = await read_doc(h, stored[added["series"]])
    assert series["type"] == "seriesMaster"
    assert series["recurrence"] == WEEKLY
    assert [e["subject"] for e in series["exceptionOccurrences"]] == ["Team sync series (moved)"]
    # The exception's own attachment is kept with the exception, bytes in the store.
    (own,) = series["exceptionOccurrences"][0]["attachments"]
    assert own["name"] == "minutes.txt" and "contentBytes" not in own
    assert series["attachments"] == []
    assert {a["emailAddress"]["address"] for a in series["attendees"]} == {
        "ann@example.com",
        "bob@example.com",
    }
    meta = stored[added["series"]].meta
    assert meta["type"] == "seriesMaster" and meta["exceptions"] == 1
    assert meta["recurrence"].startswith("every week on monday")
    assert meta["attendee_count"] == 2 and meta["location"] == "Room Göteborg"

    with_file = await read_doc(h, stored[added["file"]])
    (attachment,) = with_file["attachments"]
    from safekeep.backup.context import open_repository

    repo = await open_repository(h.runtime, h.tenant)
    data = await repo.read_bytes(ContentRef.from_json(attachment["content"]))
    assert data == ATTACHMENT_TEXT
    assert stored[added["file"]].meta["has_attachments"] is True

    # The index retry job rebuilds the same fields from the stored document alone.
    async def no_content() -> bytes | None:
        return None

    fields = await module_for("calendar").search_fields(
        stored[added["file"]], with_file, no_content
    )
    assert fields is not None and fields.attachment_names == ["agenda.txt"]
    assert "zebracorn" in fields.attachment_text and fields.folder_path == "/Calendar"

    # Search: subject, body words, attachment names and text.
    assert "Budget workshop with file" in await h.search_titles("calendar", "zebracorn")
    assert "Budget workshop with file" in await h.search_titles("calendar", "agenda.txt")
    assert "Team sync series" in await h.search_titles("calendar", "flamingo")
    assert "Founding meeting long ago" in await h.search_titles("calendar", "archaeopteryx")


async def test_interrupted_backup_resumes_without_loss_or_duplicates(
    engine: EngineHarness, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    add_rich_events(h, account.graph_id)
    monkeypatch.setattr(calendar_collect, "VIEW_PAGE_SIZE", 2)
    monkeypatch.setattr(calendar_collect, "SWEEP_PAGE_SIZE", 2)
    with (
        worker_killed_at(3, before_report=True),
        pytest.raises(RuntimeError, match="worker killed"),
    ):
        await h.backup(account, "calendar")
    partial = await h.open_ids(account, "calendar", ["event"])
    assert partial  # something was made durable before the crash

    expected = set(sim_events(h, account.graph_id))
    await h.assert_resumed_once_each(account, "calendar", ["event"], expected)


async def test_resync_after_expired_token_adds_no_versions(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    added = add_rich_events(h, account.graph_id)
    await h.backup(account, "calendar")
    before = len(await h.all_versions(account, "calendar"))

    h.sim.delete_item(h.sim_tenant_id, added["ancient"])  # outside the window: only a sweep sees
    h.sim.expire_delta_tokens(h.sim_tenant_id)
    h.sim.reset_counters()
    run, skipped = await h.backup(account, "calendar")
    assert skipped == 0
    assert (run.counters.added, run.counters.changed) == (0, 0)
    assert run.counters.removed == 1
    assert len(await h.all_versions(account, "calendar")) == before
    stored = await h.open_ids(account, "calendar", ["event"])
    assert set(stored) == set(sim_events(h, account.graph_id))
    # Unchanged events were not fetched again: only the listings were read.
    counters = h.sim.counters()
    sent = [*counters["by_endpoint"], *counters["batch_by_endpoint"]]
    assert not any("attachments" in key for key in sent), sent


async def test_window_rotation_runs_a_full_pass_and_drops_the_old_state(
    engine: EngineHarness, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    await h.backup(account, "calendar")
    async with h.runtime.db.session() as session:
        first_keys = {
            s.collection for s in await catalog.delta_states(session, account.id, "calendar")
        }
    # Pretend the window has aged: every window is now "too close" to its end.
    monkeypatch.setattr(
        calendar_collect, "ROTATE_AHEAD", calendar_collect.WINDOW_FUTURE + timedelta(days=30)
    )
    monkeypatch.setattr(calendar_collect, "WINDOW_PAST", timedelta(days=3 * 365 + 1))
    run, _ = await h.backup(account, "calendar")
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
    async with h.runtime.db.session() as session:
        states = await catalog.delta_states(session, account.id, "calendar")
    keys = {s.collection for s in states} - {calendar_collect.LISTED}
    assert keys.isdisjoint(first_keys)
    assert len(keys) == len(sim_calendars(h, account.graph_id))
    assert all(s.delta_link and not s.resume_link for s in states)


async def test_cancelled_occurrence_is_a_new_version_of_its_series(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    added = add_rich_events(h, account.graph_id)
    await h.backup(account, "calendar")
    tenant = h.sim.tenant()
    with h.sim.state.lock:
        master = tenant.items[added["series"]]
        master.cancelled.append((MONDAY + timedelta(days=14)).date().isoformat())
        tenant.touch_item(master)
    run, _ = await h.backup(account, "calendar")
    assert run.counters.changed == 1
    stored = await h.open_ids(account, "calendar", ["event"])
    document = await read_doc(h, stored[added["series"]])
    assert sorted(c.rsplit(".", 1)[-1] for c in document["cancelledOccurrences"]) == sorted(
        [CANCELLED, (MONDAY + timedelta(days=14)).date().isoformat()]
    )


async def test_series_check_lists_the_calendar_when_cheaper_than_a_get_per_series(
    engine: EngineHarness, account: Account
) -> None:
    """An occurrence removal whose id is not stored (one series lost an occurrence) makes the
    stored series of the calendar be checked: with several series and one page of events,
    one listing with change keys does it instead of a GET per series (issue 17)."""
    h = engine
    added = add_rich_events(h, account.graph_id)
    for n in range(3):
        h.sim.add_event(
            h.sim_tenant_id,
            account.graph_id,
            subject=f"Other series {n}",
            start=MONDAY + timedelta(days=1, hours=n),
            end=MONDAY + timedelta(days=1, hours=n + 1),
            recurrence=WEEKLY,
        )
    await h.backup(account, "calendar")
    stored = await h.open_ids(account, "calendar", ["event"])
    series = [v for v in stored.values() if (v.meta or {}).get("type") == "seriesMaster"]
    assert len(series) >= 4
    tenant = h.sim.tenant()
    with h.sim.state.lock:
        master = tenant.items[added["series"]]
        master.cancelled.append((MONDAY + timedelta(days=21)).date().isoformat())
        tenant.touch_item(master)
    h.sim.reset_counters()
    run, _ = await h.backup(account, "calendar")
    counters = h.sim.counters()
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 1, 0)

    def count(template: str) -> int:
        return int(counters["by_endpoint"].get(template, 0)) + int(
            counters["batch_by_endpoint"].get(template, 0)
        )

    assert count("GET /users/{user}/calendars/{calendar}/events") == 1
    assert count("GET /users/{user}/events/{item}") == 1  # the changed series, once
    document = await read_doc(
        h, (await h.open_ids(account, "calendar", ["event"]))[added["series"]]
    )
    assert (MONDAY + timedelta(days=21)).date().isoformat() in {
        c.rsplit(".", 1)[-1] for c in document["cancelledOccurrences"]
    }


def graph_gets(h: EngineHarness, template: str) -> int:
    """Requests to ``template`` since the counters were reset, on the wire and in ``$batch``."""
    counters = h.sim.counters()
    return int(counters["by_endpoint"].get(template, 0)) + int(
        counters["batch_by_endpoint"].get(template, 0)
    )


EVENT_GET = "GET /users/{user}/events/{item}"
LISTING = "GET /users/{user}/calendars/{calendar}/events"


def beyond_the_window(years: int = 4) -> datetime:
    """A time no delta window of today reaches (they span three years either side)."""
    return datetime(datetime.now(UTC).year + years, 3, 1, 10, tzinfo=UTC)


async def test_an_event_moved_out_of_the_window_is_kept_with_its_new_version(
    engine: EngineHarness, account: Account
) -> None:
    """calendarView delta names an event moved out of its window ``@removed``, as it names a
    deleted one: the removal is checked with one GET of the event, which is still there, so
    it stays open and what came back is its new version."""
    h = engine
    added = add_rich_events(h, account.graph_id)
    await h.backup(account, "calendar")
    moved = added["file"]
    far = beyond_the_window()
    h.sim.edit_item(
        h.sim_tenant_id,
        moved,
        {"subject": "Budget workshop (far ahead)", "start": fmt_dt(far), "end": fmt_dt(far)},
    )
    h.sim.reset_counters()
    run, skipped = await h.backup(account, "calendar")
    assert skipped == 0
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 1, 0)
    stored = await h.open_ids(account, "calendar", ["event"])
    assert set(stored) == set(sim_events(h, account.graph_id))
    assert stored[moved].name == "Budget workshop (far ahead)"
    assert stored[moved].change_key == h.sim.tenant().items[moved].change_key
    assert (await read_doc(h, stored[moved]))["start"] == fmt_dt(far)
    # One GET of the removed event was both the check and the fetch; no listing.
    assert graph_gets(h, EVENT_GET) == 1
    assert graph_gets(h, LISTING) == 0
    assert (await h.versions_per_item(account, "calendar"))[stored[moved].item_id] == 2


async def test_an_edit_of_an_event_outside_the_window_is_a_new_version_not_a_deletion(
    engine: EngineHarness, account: Account
) -> None:
    """The full pass stores events outside the delta window; Graph names one edited there
    ``@removed`` in the next round. It stays open, with the edit as its new version."""
    h = engine
    added = add_rich_events(h, account.graph_id)
    await h.backup(account, "calendar")
    ancient = added["ancient"]
    assert ancient in await h.open_ids(account, "calendar", ["event"])  # from the sweep
    h.sim.edit_item(h.sim_tenant_id, ancient, {"subject": "Founding meeting (minutes fixed)"})
    h.sim.reset_counters()
    run, skipped = await h.backup(account, "calendar")
    assert skipped == 0
    assert (run.counters.changed, run.counters.removed) == (1, 0)
    stored = await h.open_ids(account, "calendar", ["event"])
    assert stored[ancient].name == "Founding meeting (minutes fixed)"
    assert graph_gets(h, EVENT_GET) == 1
    assert "Founding meeting (minutes fixed)" in await h.search_titles("calendar", "archaeopteryx")


async def test_a_deleted_event_is_still_closed_after_its_removal_is_checked(
    engine: EngineHarness, account: Account
) -> None:
    """A removal Graph answers 404 for is a deletion: one GET, and the version is closed.
    Several removed events at once are settled by one listing of the calendar when that is
    cheaper than a GET each, a deleted series too."""
    h = engine
    uid = account.graph_id
    added = add_rich_events(h, uid)
    await h.backup(account, "calendar")
    h.sim.delete_item(h.sim_tenant_id, added["all_day"])
    h.sim.reset_counters()
    run, _ = await h.backup(account, "calendar")
    assert (run.counters.changed, run.counters.removed) == (0, 1)
    assert graph_gets(h, EVENT_GET) == 1 and graph_gets(h, LISTING) == 0
    stored = await h.open_ids(account, "calendar", ["event"])
    assert added["all_day"] not in stored
    assert set(stored) == set(sim_events(h, uid))

    for gone in (added["ancient"], added["series"], added["file"]):
        h.sim.delete_item(h.sim_tenant_id, gone)
    h.sim.reset_counters()
    run, _ = await h.backup(account, "calendar")
    assert (run.counters.changed, run.counters.removed) == (0, 3)
    assert graph_gets(h, LISTING) == 1 and graph_gets(h, EVENT_GET) == 0
    assert set(await h.open_ids(account, "calendar", ["event"])) == set(sim_events(h, uid))


async def test_an_event_moved_to_another_calendar_outside_its_window_lands_there(
    engine: EngineHarness, account: Account
) -> None:
    """Moved to another calendar and out of the window: the old calendar's round names it
    removed (its GET finds it, changed, but not where), the new one's names it removed too
    (added outside its window). It is stored under the calendar whose listing holds it."""
    h = engine
    uid = account.graph_id
    added = add_rich_events(h, uid)
    tenant = h.sim.tenant()
    with h.sim.state.lock:
        other = ops.new_folder(tenant, tenant.users[uid], "calendar", "Later", None)
    await h.backup(account, "calendar")
    moved = added["file"]
    far = beyond_the_window()
    h.sim.edit_item(h.sim_tenant_id, moved, {"start": fmt_dt(far), "end": fmt_dt(far)})
    h.sim.move_item(h.sim_tenant_id, moved, other.id)
    run, skipped = await h.backup(account, "calendar")
    assert skipped == 0 and run.counters.removed == 0
    stored = await h.open_ids(account, "calendar", ["event"])
    assert set(stored) == set(sim_events(h, uid))
    assert stored[moved].parent_external_id == other.id
    assert stored[moved].change_key == tenant.items[moved].change_key


# ---- restore --------------------------------------------------------------------------------


async def test_restore_to_the_original_calendar_after_deletion(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    uid = account.graph_id
    added = add_rich_events(h, uid)
    await h.backup(account, "calendar")
    originals = {i: dict(e.props) for i, e in sim_events(h, uid).items()}
    exceptions = dict(h.sim.tenant().items[added["series"]].exceptions)
    lost = [added["series"], added["file"], added["all_day"]]
    for event_id in lost:
        h.sim.delete_item(h.sim_tenant_id, event_id)

    report = await h.restore(account, "calendar")
    assert report.failed_count == 0
    assert report.restored_count == len(lost)
    assert report.existing_count == len(originals) - len(lost)  # still there: skipped

    calendar = default_calendar(h, uid)
    restored = {e.props["subject"]: e for e in events_in(h, calendar)}
    for event_id in lost:
        original = originals[event_id]
        back = restored[original["subject"]]
        assert_same_event(original, back.props)
        assert back.props["attendees"] == []  # not invited...
        if original.get("attendees"):  # ...but listed in the body
            assert "ann@example.com" in back.props["body"]["content"]
    series = restored["Team sync series"]
    assert {d: e["subject"] for d, e in series.exceptions.items()} == {
        d: e["subject"] for d, e in exceptions.items()
    }
    # The attachment only the exception carried is back on the exception, not the series.
    ((moved, own),) = series.instance_attachments.items()
    assert moved in exceptions
    assert [(a.name, a.content.read() if a.content else b"") for a in own] == [
        ("minutes.txt", EXCEPTION_TEXT)
    ]
    assert [a.name for a in series.attachments] == []
    (day,) = exceptions
    assert series.exceptions[day]["start"] == exceptions[day]["start"]
    assert series.cancelled == [CANCELLED]
    (attachment,) = restored["Budget workshop with file"].attachments
    assert attachment.name == "agenda.txt" and attachment.content is not None
    assert (
        hashlib.sha256(attachment.content.read()).hexdigest()
        == hashlib.sha256(ATTACHMENT_TEXT).hexdigest()
    )


async def test_conflict_rules(engine: EngineHarness, account: Account) -> None:
    h = engine
    uid = account.graph_id
    added = add_rich_events(h, uid)
    await h.backup(account, "calendar")
    stored = await h.open_ids(account, "calendar", ["event"])
    item = stored[added["file"]].item_id
    calendar = default_calendar(h, uid)

    def copies() -> list[OItem]:
        return [
            e for e in events_in(h, calendar) if e.props["subject"] == "Budget workshop with file"
        ]

    report = await h.restore(account, "calendar", scope_type="items", item_ids=[item])
    assert (report.restored_count, report.existing_count) == (0, 1)
    assert [e.id for e in copies()] == [added["file"]]

    report = await h.restore(
        account, "calendar", scope_type="items", item_ids=[item], conflict="keep_both"
    )
    assert report.restored_count == 1
    assert len(copies()) == 2

    before = {e.id for e in copies()}
    report = await h.restore(
        account, "calendar", scope_type="items", item_ids=[item], conflict="overwrite"
    )
    assert report.restored_count == 1
    after = {e.id for e in copies()}
    # The event itself and Safekeep's earlier copy of it are both this item: one remains.
    assert len(after) == 1 and not after & before


async def test_restore_to_another_account_and_into_a_new_calendar(
    engine: EngineHarness,
) -> None:
    h = engine
    users = sorted((a for a in await h.accounts() if a.kind == "user"), key=lambda a: a.graph_id)
    source, target = users[0], users[1]
    add_rich_events(h, source.graph_id)
    await h.backup(source, "calendar")
    originals = [dict(e.props) for e in sim_events(h, source.graph_id).values()]

    def key(props: dict[str, Any]) -> tuple[str, str]:
        return props["subject"], props["start"]["dateTime"]

    report = await h.restore(source, "calendar", target=target)
    assert report.failed_count == 0 and report.restored_count == len(originals)
    landed = {key(e.props): e for e in events_in(h, default_calendar(h, target.graph_id))}
    for original in originals:
        assert_same_event(original, landed[key(original)].props)

    report = await h.restore(source, "calendar", folder_mode="new")
    assert report.failed_count == 0 and report.restored_count == len(originals)
    calendars = {v: k for k, v in sim_calendars(h, source.graph_id).items()}
    (new_name,) = [n for n in calendars if n.startswith("Restored ")]
    in_new = sorted(key(e.props) for e in events_in(h, calendars[new_name]))
    assert in_new == sorted(key(o) for o in originals)


async def test_point_in_time_restore_gives_the_earlier_version(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    added = add_rich_events(h, account.graph_id)
    first, _ = await h.backup(account, "calendar")
    async with h.runtime.db.session() as session:
        snapshot = await catalog.get_snapshot(session, h.scope, first.snapshot_id)
    assert snapshot is not None and snapshot.completed_at is not None
    h.sim.edit_item(h.sim_tenant_id, added["file"], {"subject": "Renamed later"})
    await h.backup(account, "calendar")
    stored = await h.open_ids(account, "calendar", ["event"])
    report = await h.restore(
        account,
        "calendar",
        scope_type="items",
        item_ids=[stored[added["file"]].item_id],
        at=snapshot.completed_at,
        folder_mode="new",
    )
    assert report.restored_count == 1
    calendars = {v: k for k, v in sim_calendars(h, account.graph_id).items()}
    (new_name,) = [n for n in calendars if n.startswith("Restored ")]
    assert [e.props["subject"] for e in events_in(h, calendars[new_name])] == [
        "Budget workshop with file"
    ]


# ---- export and download --------------------------------------------------------------------


async def test_export_writes_one_ics_per_event_matching_the_manifest(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    added = add_rich_events(h, account.graph_id)
    h.sim.add_event(  # a "/" in a subject must not open a folder in the ZIP
        h.sim_tenant_id,
        account.graph_id,
        subject="Q1/Q2 review",
        start=MONDAY + timedelta(days=4),
        end=MONDAY + timedelta(days=4, hours=1),
    )
    await h.backup(account, "calendar")
    events = sim_events(h, account.graph_id)
    data = await h.export(account, "calendar")
    archive = zipfile.ZipFile(io.BytesIO(data))
    manifest = json.loads(archive.read("manifest.json"))
    files = {f["path"]: f for f in manifest["files"]}
    ics_files = [n for n in archive.namelist() if n.endswith(".ics")]
    assert len(ics_files) == len(events) == len(files)
    subjects: dict[str, Any] = {}
    for name in ics_files:
        raw = archive.read(name)
        assert hashlib.sha256(raw).hexdigest() == files[name]["sha256"]
        assert name.split("/")[-2] == "Calendar"
        parsed = parse_ics(raw)
        first = parsed.walk("VEVENT")[0]
        subjects[str(first["SUMMARY"])] = parsed
    assert set(subjects) == {e.props["subject"] for e in events.values()}
    assert any(n.endswith("Q1-Q2 review.ics") for n in ics_files)

    series = subjects["Team sync series"].walk("VEVENT")
    assert series[0]["RRULE"]["FREQ"] == ["WEEKLY"] and series[0]["RRULE"]["COUNT"] == [6]
    assert [str(v["SUMMARY"]) for v in series[1:]] == ["Team sync series (moved)"]
    assert [d.dt.date().isoformat() for d in series[0]["EXDATE"].dts] == [CANCELLED]
    assert series[1]["RECURRENCE-ID"].dt == MONDAY + timedelta(days=7)
    attendees = {str(a) for a in series[0].get("ATTENDEE")}
    assert attendees == {"mailto:ann@example.com", "mailto:bob@example.com"}

    workshop = subjects["Budget workshop with file"].walk("VEVENT")[0]
    attach = workshop["ATTACH"]
    assert attach.params["X-FILENAME"] == "agenda.txt"
    assert base64.b64decode(attach.to_ical()) == ATTACHMENT_TEXT

    holiday = subjects["Company holiday"].walk("VEVENT")[0]
    assert holiday["DTSTART"].dt == datetime(2026, 12, 24).date()
    del added


async def test_download_renders_ics(engine: EngineHarness, account: Account) -> None:
    from safekeep.backup.context import open_repository

    h = engine
    added = add_rich_events(h, account.graph_id)
    await h.backup(account, "calendar")
    version = (await h.open_ids(account, "calendar", ["event"]))[added["file"]]
    repo = await open_repository(h.runtime, h.tenant)
    content = await module_for("calendar").content(repo, version)
    assert content.media_type.startswith("text/calendar")
    assert content.size is None and not content.rangeable
    assert content.filename.endswith("Budget workshop with file.ics")
    raw = b"".join([chunk async for chunk in content.open(0, None)])
    parsed = parse_ics(raw)
    (vevent,) = parsed.walk("VEVENT")
    assert str(vevent["SUMMARY"]) == "Budget workshop with file"
    assert all(len(line) <= 75 for line in raw.split(b"\r\n"))


# ---- scale-out ------------------------------------------------------------------------------


async def test_scaleout_backup_search_and_restore(scaleout_engine: EngineHarness) -> None:
    h = scaleout_engine
    account = await h.user(0)
    added = add_rich_events(h, account.graph_id)
    first, _ = await h.backup(account, "calendar")
    async with h.runtime.db.session() as session:
        snapshot = await catalog.get_snapshot(session, h.scope, first.snapshot_id)
    assert snapshot is not None
    stored = await h.open_ids(account, "calendar", ["event"])
    assert set(stored) == set(sim_events(h, account.graph_id))
    assert "Budget workshop with file" in await h.search_titles("calendar", "zebracorn")
    h.sim.delete_item(h.sim_tenant_id, added["series"])
    run, _ = await h.backup(account, "calendar")
    assert run.counters.removed == 1
    report = await h.restore(
        account,
        "calendar",
        scope_type="items",
        item_ids=[stored[added["series"]].item_id],
        at=snapshot.completed_at,
    )
    assert report.restored_count == 1
    subjects = [e.props["subject"] for e in events_in(h, default_calendar(h, account.graph_id))]
    assert "Team sync series" in subjects


# ---- ICS rendering, on its own --------------------------------------------------------------


def test_ics_keeps_the_organisers_zone_all_day_dates_and_exdates() -> None:
    event = {
        "id": "AAMk1",
        "iCalUId": "uid-1",
        "subject": "Standup; daily, short",
        "body": {"contentType": "text", "content": "Line one\nLine two"},
        "start": {"dateTime": "2026-03-02T08:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-03-02T08:15:00.0000000", "timeZone": "UTC"},
        "originalStartTimeZone": "W. Europe Standard Time",
        "originalEndTimeZone": "W. Europe Standard Time",
        "recurrence": {
            "pattern": {
                "type": "relativeMonthly",
                "interval": 2,
                "daysOfWeek": ["monday"],
                "index": "first",
            },
            "range": {"type": "endDate", "startDate": "2026-03-02", "endDate": "2026-12-31"},
        },
        "cancelledOccurrences": ["OID.AAMk1.2026-05-04"],
        "organizer": {"emailAddress": {"name": "Zoë, Admin", "address": "zoe@example.com"}},
        "attendees": [
            {
                "type": "optional",
                "status": {"response": "accepted"},
                "emailAddress": {"name": "Ann", "address": "ann@example.com"},
            },
            {
                "type": "resource",
                "status": {"response": "none"},
                "emailAddress": {"name": "Room", "address": "room@example.com"},
            },
        ],
        "isReminderOn": True,
        "reminderMinutesBeforeStart": 10,
        "sensitivity": "private",
        "showAs": "free",
    }
    parsed = parse_ics(ics.render(event))
    (vevent,) = parsed.walk("VEVENT")
    start = vevent["DTSTART"].dt
    assert str(start.tzinfo) == "Europe/Berlin" and start.hour == 9  # 08:00 UTC in winter
    assert parsed.walk("VTIMEZONE")
    rule = vevent["RRULE"]
    assert rule["FREQ"] == ["MONTHLY"] and rule["BYDAY"] == ["MO"] and rule["BYSETPOS"] == [1]
    assert rule["INTERVAL"] == [2] and rule["UNTIL"][0].tzinfo is not None
    exdate = vevent["EXDATE"].dts[0].dt
    assert exdate.date().isoformat() == "2026-05-04" and exdate.hour == 9
    assert str(vevent["SUMMARY"]) == "Standup; daily, short"
    assert vevent["ORGANIZER"].params["CN"] == "Zoë, Admin"
    roles = {str(a): (a.params["ROLE"], a.params["PARTSTAT"]) for a in vevent["ATTENDEE"]}
    assert roles["mailto:ann@example.com"] == ("OPT-PARTICIPANT", "ACCEPTED")
    assert roles["mailto:room@example.com"] == ("NON-PARTICIPANT", "NEEDS-ACTION")
    assert vevent["CLASS"] == "PRIVATE" and vevent["TRANSP"] == "TRANSPARENT"
    assert parsed.walk("VALARM")[0]["TRIGGER"].dt == timedelta(minutes=-10)

    all_day = {
        "id": "AAMk2",
        "subject": "Holiday",
        "isAllDay": True,
        "start": {"dateTime": "2026-12-24T00:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-26T00:00:00.0000000", "timeZone": "UTC"},
    }
    (holiday,) = parse_ics(ics.render(all_day)).walk("VEVENT")
    assert holiday["DTSTART"].dt.isoformat() == "2026-12-24"
    assert holiday["DTEND"].dt.isoformat() == "2026-12-26"


async def test_an_event_whose_subject_holds_a_lone_surrogate_is_backed_up_and_downloads(
    any_engine: EngineHarness,
) -> None:
    """A subject cut inside an emoji's surrogate pair (see the contacts' test): the event's
    document is written as Graph wrote it instead of failing the calendar's backup, and its
    iCalendar file shows U+FFFD where the half character was."""
    h = any_engine
    account = await h.user(0)
    event = h.sim.add_event(
        h.sim_tenant_id,
        account.graph_id,
        subject="Retro",
        start=MONDAY,
        end=MONDAY + timedelta(hours=1),
    )
    h.sim.edit_item(h.sim_tenant_id, event, {"subject": "Retro \ud83c cake"})
    run, skipped = await h.backup(account, "calendar")
    assert skipped == 0 and run.counters.added > 0
    [version] = [v for v in await h.all_versions(account, "calendar") if v.name.startswith("Retro")]
    assert version.name == "Retro \ufffd cake"
    repo = await open_repository(h.runtime, h.tenant)
    document = await read_document(repo, version)
    assert document is not None and document["subject"] == "Retro \ud83c cake"
    content = await module_for("calendar").content(repo, version)
    data = b"".join([chunk async for chunk in content.open(0, None)]).decode()
    assert "SUMMARY:Retro \ufffd cake" in data.replace("\r\n ", "")


def test_selected_event_fields_exist_in_graph_v1() -> None:
    """Graph answers 400 to a $select of a property v1.0 does not have."""
    from msgraph.generated.models.event import Event as GraphEvent

    known = (set(GraphEvent().get_field_deserializers()) | {"id"}) - {"@odata.type"}
    navigation = {"attachments", "calendar", "extensions", "instances"}
    extended = {"multiValueExtendedProperties", "singleValueExtendedProperties"}
    assert set(calendar_collect.EVENT_FIELDS) <= known
    assert known - set(calendar_collect.EVENT_FIELDS) == navigation | extended


async def test_unreadable_event_is_skipped_then_retried_next_run(
    engine: EngineHarness, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safekeep.graph.errors import TransientError

    h = engine
    added = add_rich_events(h, account.graph_id)
    real = calendar_collect.CalendarCollector._attachment

    async def broken(self: Any, event_id: str, meta: dict[str, Any]) -> Any:
        raise TransientError(503, "ServiceUnavailable", "attachment store is down")

    monkeypatch.setattr(calendar_collect.CalendarCollector, "_attachment", broken)
    run, skipped = await h.backup(account, "calendar")
    # The event with a file, and the series whose exception carries one of its own.
    assert skipped == 2
    stored = await h.open_ids(account, "calendar", ["event"])
    unreadable = {added["file"], added["series"]}
    assert set(stored) == set(sim_events(h, account.graph_id)) - unreadable

    monkeypatch.setattr(calendar_collect.CalendarCollector, "_attachment", real)
    run, skipped = await h.backup(account, "calendar")
    assert skipped == 0 and run.counters.added == 2
    assert set(await h.open_ids(account, "calendar", ["event"])) == set(
        sim_events(h, account.graph_id)
    )
    async with h.runtime.db.session() as session:
        assert await catalog.skipped_items(session, account.id, "calendar") == []


async def test_deleted_calendar_is_closed_and_restored_with_its_events(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    uid = account.graph_id
    tenant = h.sim.tenant()
    with h.sim.state.lock:
        projects = ops.new_folder(tenant, tenant.users[uid], "calendar", "Projects", None)
        projects.props["color"] = "lightTeal"  # made again with its colour
    big = bytes(range(256)) * (5 * 4096 + 7)  # ~5 MB: streamed in, uploaded in a session
    kickoff = h.sim.add_event(
        h.sim_tenant_id,
        uid,
        subject="Project kickoff",
        start=MONDAY,
        end=MONDAY + timedelta(hours=1),
        calendar=projects.id,
    )
    with h.sim.state.lock:
        attach_file(tenant, tenant.items[kickoff], "plans.bin", "application/octet-stream", big)
    first, _ = await h.backup(account, "calendar")
    async with h.runtime.db.session() as session:
        snapshot = await catalog.get_snapshot(session, h.scope, first.snapshot_id)
    assert snapshot is not None
    stored = await h.open_ids(account, "calendar", ["event"])
    assert stored[kickoff].parent_external_id == projects.id
    assert stored[kickoff].size > len(big)

    with h.sim.state.lock:
        tenant.delete_folder(tenant.folders[projects.id])
    run, _ = await h.backup(account, "calendar")
    assert run.counters.removed == 2  # the calendar and its event
    assert projects.id not in await h.open_ids(account, "calendar", ["calendar"])
    assert kickoff not in await h.open_ids(account, "calendar", ["event"])

    report = await h.restore(account, "calendar", at=snapshot.completed_at)
    assert report.failed_count == 0 and report.restored_count == 1
    recreated = {v: k for k, v in sim_calendars(h, uid).items()}["Projects"]
    assert recreated != projects.id
    assert tenant.folders[recreated].props["color"] == "lightTeal"
    (event_back,) = events_in(h, recreated)
    assert event_back.props["subject"] == "Project kickoff"
    (attachment,) = event_back.attachments
    assert attachment.content is not None
    assert hashlib.sha256(attachment.content.read()).digest() == hashlib.sha256(big).digest()

    # Calendars cannot nest: in "new" mode each non-default calendar gets its own.
    report = await h.restore(account, "calendar", at=snapshot.completed_at, folder_mode="new")
    assert report.failed_count == 0
    names = {v: k for k, v in sim_calendars(h, uid).items()}
    (own,) = [n for n in names if n.startswith("Restored ") and n.endswith(" (Projects)")]
    assert [e.props["subject"] for e in events_in(h, names[own])] == ["Project kickoff"]
    (main,) = [n for n in names if n.startswith("Restored ") and not n.endswith(")")]
    assert len(events_in(h, names[main])) == report.restored_count - 1


async def test_interrupted_pass_whose_link_expired_starts_afresh(
    engine: EngineHarness, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    add_rich_events(h, account.graph_id)
    monkeypatch.setattr(calendar_collect, "VIEW_PAGE_SIZE", 2)
    with (
        worker_killed_at(2, before_report=True),
        pytest.raises(RuntimeError, match="worker killed"),
    ):
        await h.backup(account, "calendar")
    h.sim.expire_delta_tokens(h.sim_tenant_id)
    run, skipped = await h.backup(account, "calendar")
    assert run.resumed and skipped == 0
    assert set(await h.open_ids(account, "calendar", ["event"])) == set(
        sim_events(h, account.graph_id)
    )
    assert set((await h.versions_per_item(account, "calendar")).values()) == {1}


async def test_unreadable_calendar_is_skipped_and_the_others_backed_up(
    engine: EngineHarness, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safekeep.graph.errors import Forbidden

    h = engine
    uid = account.graph_id
    tenant = h.sim.tenant()
    with h.sim.state.lock:
        shared = ops.new_folder(tenant, tenant.users[uid], "calendar", "Shared with me", None)
    h.sim.add_event(
        h.sim_tenant_id,
        uid,
        subject="Not ours to read",
        start=MONDAY,
        end=MONDAY + timedelta(hours=1),
        calendar=shared.id,
    )
    real = calendar_collect.CalendarCollector._run_round

    async def guarded(self: Any, one: Any, first: Any) -> None:
        if one.calendar_id == shared.id:
            raise Forbidden(403, "ErrorAccessDenied", "Access is denied.")
        await real(self, one, first)

    monkeypatch.setattr(calendar_collect.CalendarCollector, "_run_round", guarded)
    _run, skipped = await h.backup(account, "calendar")
    assert skipped == 1
    stored = await h.open_ids(account, "calendar", ["event"])
    expected = {i for i, e in sim_events(h, uid).items() if e.folder_id != shared.id}
    assert set(stored) == expected

    monkeypatch.setattr(calendar_collect.CalendarCollector, "_run_round", real)
    _run, skipped = await h.backup(account, "calendar")
    assert skipped == 0
    assert set(await h.open_ids(account, "calendar", ["event"])) == set(sim_events(h, uid))


async def test_a_failing_event_does_not_stop_the_restore(
    engine: EngineHarness, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safekeep.backup.services.calendar import restore as calendar_restore
    from safekeep.graph.errors import BadRequest

    h = engine
    add_rich_events(h, account.graph_id)
    await h.backup(account, "calendar")
    expected = len(sim_events(h, account.graph_id))

    # A refusal that trying again would not change (Graph unavailable instead stops the
    # attempt, and the job is retried: tests/backup/test_restore_retries.py).
    async def broken(self: Any, event_id: str, attachment: dict[str, Any]) -> None:
        raise BadRequest(400, "ErrorInvalidRequest", "upload refused")

    monkeypatch.setattr(calendar_restore.CalendarRestore, "_add_attachment", broken)
    report = await h.restore(account, "calendar", folder_mode="new")
    # The event with a file and the series whose exception has one: created, incomplete.
    assert report.failed_count == 2
    assert report.restored_count == expected - 2


def test_restore_payload_keeps_wall_clock_time_and_lists_attendees_in_the_body() -> None:
    from safekeep.backup.services.calendar.restore import (
        attendee_lines,
        payload,
        with_attendees,
    )

    event = {
        "id": "AAMk1",
        "changeKey": "ck",
        "iCalUId": "uid",
        "webLink": "https://outlook.office365.com/owa/?itemid=AAMk1",
        "transactionId": "tx",
        "subject": "Planning",
        "start": {"dateTime": "2026-07-06T07:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-07-06T08:00:00.0000000", "timeZone": "UTC"},
        "originalStartTimeZone": "W. Europe Standard Time",
        "originalEndTimeZone": "W. Europe Standard Time",
        "recurrence": {
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "noEnd", "startDate": "2026-07-06", "recurrenceTimeZone": ""},
        },
        "attendees": [
            {
                "type": "required",
                "status": {"response": "accepted"},
                "emailAddress": {"name": "Ann <A&B>", "address": "ann@example.com"},
            }
        ],
        "body": {"contentType": "html", "content": "<html><body class='x'><p>Hi</p></body></html>"},
    }
    body = payload(event)
    assert not {"id", "changeKey", "iCalUId", "webLink", "transactionId", "attendees"} & set(body)
    assert body["start"] == {
        "dateTime": "2026-07-06T09:00:00",
        "timeZone": "W. Europe Standard Time",
    }
    assert body["end"]["dateTime"] == "2026-07-06T10:00:00"
    assert "recurrenceTimeZone" not in body["recurrence"]["range"]
    lines = attendee_lines(event)
    assert lines == ["Ann <A&B> <ann@example.com> (required, accepted)"]
    html = with_attendees(event["body"], lines)["content"]
    assert html.startswith("<html><body class='x'><div><p>Attendees")
    assert "Ann &lt;A&amp;B&gt; &lt;ann@example.com&gt;" in html and html.endswith(
        "<p>Hi</p></body></html>"
    )
    text = with_attendees({"contentType": "text", "content": "Hi"}, lines)["content"]
    assert text.endswith("\n\nHi") and "- Ann <A&B> <ann@example.com>" in text


async def test_item_and_reference_attachments_round_trip(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    uid = account.graph_id
    event_id = h.sim.add_event(
        h.sim_tenant_id,
        uid,
        subject="Vendor review",
        start=MONDAY + timedelta(days=1),
        end=MONDAY + timedelta(days=1, hours=1),
    )
    tenant = h.sim.tenant()
    card = {"displayName": "Vendor Contact", "givenName": "Vera", "surname": "Vendor"}
    with h.sim.state.lock:
        item = tenant.items[event_id]
        item.attachments.append(
            Attachment(
                id=ids.attachment_id(item.id, "card"),
                kind="item",
                name="Vendor Contact",
                content_type=None,
                modified=item.modified,
                item=dict(card),
                item_type="contact",
            )
        )
        item.attachments.append(
            link_attachment(
                item, "Contract.docx", "https://contoso.sharepoint.com/sites/legal/Contract.docx"
            )
        )
        item.props["hasAttachments"] = True
        tenant.touch_item(item)
    await h.backup(account, "calendar")
    stored = await h.open_ids(account, "calendar", ["event"])
    document = await read_doc(h, stored[event_id])
    kinds = {a["@odata.type"]: a for a in document["attachments"]}
    assert kinds["#microsoft.graph.itemAttachment"]["item"]["displayName"] == "Vendor Contact"
    assert kinds["#microsoft.graph.referenceAttachment"]["sourceUrl"].endswith("Contract.docx")

    h.sim.delete_item(h.sim_tenant_id, event_id)
    report = await h.restore(
        account, "calendar", scope_type="items", item_ids=[stored[event_id].item_id]
    )
    assert report.restored_count == 1 and report.failed_count == 0
    (back,) = [
        e for e in events_in(h, default_calendar(h, uid)) if e.props["subject"] == "Vendor review"
    ]
    by_kind = {a.kind: a for a in back.attachments}
    assert isinstance(by_kind["item"].item, dict)
    assert {k: by_kind["item"].item.get(k) for k in card} == card
    assert (
        by_kind["reference"].source_url
        == "https://contoso.sharepoint.com/sites/legal/Contract.docx"
    )
    assert (by_kind["reference"].provider, by_kind["reference"].permission) == (
        "oneDriveBusiness",
        "view",
    )


async def test_a_series_in_the_organisers_zone_comes_back_at_its_wall_clock_across_daylight_saving(
    engine: EngineHarness, account: Account
) -> None:
    """A weekly 09:00 in Berlin is 08:00 UTC before the clocks go forward and 07:00 after,
    in Exchange and in graphsim (which expands a series on its own clock). Backed up, deleted
    and restored, the series has the same occurrences at the same instants, its exception
    and its cancellation on the same Berlin dates, and Exchange's record of its zone."""
    from zoneinfo import ZoneInfo

    from graphsim.calendar import series_instances
    from graphsim.routes_calendar import event_json

    h = engine
    berlin, zone = ZoneInfo("Europe/Berlin"), "W. Europe Standard Time"
    first = datetime(2027, 3, 15, 9, 0, tzinfo=berlin)  # a Monday; the clocks go on 28 March
    weekly = {
        "pattern": {**WEEKLY["pattern"], "firstDayOfWeek": "monday"},
        "range": {
            "type": "numbered",
            "startDate": "2027-03-15",
            "endDate": "0001-01-01",
            "recurrenceTimeZone": zone,
            "numberOfOccurrences": 6,
        },
    }
    series = h.sim.add_event(
        h.sim_tenant_id,
        account.graph_id,
        subject="Berlin stand-up",
        start=first,
        end=first + timedelta(minutes=30),
        recurrence=weekly,
    )
    tenant = h.sim.tenant()
    with h.sim.state.lock:
        master = tenant.items[series]
        master.props.update({"originalStartTimeZone": zone, "originalEndTimeZone": zone})
        moved = datetime(2027, 3, 29, 11, 0, tzinfo=berlin)  # the first after the change
        master.exceptions["2027-03-29"] = {
            "subject": "Berlin stand-up (late)",
            "start": fmt_dt(moved),
            "end": fmt_dt(moved + timedelta(minutes=30)),
        }
        master.cancelled.append("2027-04-05")
        tenant.touch_item(master)
    lo, hi = datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 5, 1, tzinfo=UTC)

    def occurrences(event_id: str) -> list[tuple[str, str, str]]:
        event = h.sim.tenant().items[event_id]
        base = event_json(h.sim.tenant(), event)
        return [
            (i["type"], i["start"]["dateTime"][:19], str(i.get("subject")))
            for i in series_instances(h.sim.tenant(), event, lo, hi, base)
        ]

    before = occurrences(series)
    assert [(kind, start) for kind, start, _ in before] == [
        ("occurrence", "2027-03-15T08:00:00"),
        ("occurrence", "2027-03-22T08:00:00"),
        ("exception", "2027-03-29T09:00:00"),
        ("occurrence", "2027-04-12T07:00:00"),
        ("occurrence", "2027-04-19T07:00:00"),
    ]
    await h.backup(account, "calendar")
    h.sim.delete_item(h.sim_tenant_id, series)

    report = await h.restore(account, "calendar")
    assert (report.failed_count, report.restored_count) == (0, 1)
    (back,) = [
        e
        for e in events_in(h, default_calendar(h, account.graph_id))
        if e.props["subject"] == "Berlin stand-up"
    ]
    assert occurrences(back.id) == before
    assert (back.props["originalStartTimeZone"], back.props["originalEndTimeZone"]) == (zone, zone)
    assert back.cancelled == ["2027-04-05"]
