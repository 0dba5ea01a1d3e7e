"""Incremental economy of calendars: an unchanged mailbox costs one delta round per calendar
and nothing else (Graph has no delta for the calendar list, so it is read again only when
the stored list is old, on a full pass, or when Graph says a calendar changed), and a new
calendar is still found: after the interval, on a full run, or when a change notification
points at it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from graphsim import ops
from safekeep.backup.jobs.backup import backup_account_service
from safekeep.backup.services.calendar import collect as calendar_collect
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Account, DeltaState, Job, JobKind, JobTrigger
from tests.backup.harness import EngineHarness

MONDAY = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
CALENDAR_DELTA = "/calendarView/delta"  # one such request per calendar in an incremental


def new_calendar(h: EngineHarness, account: Account, name: str) -> tuple[str, str]:
    """A calendar made in Outlook, with one event in it: (calendar id, event id)."""
    uid = account.graph_id
    tenant = h.sim.tenant()
    with h.sim.state.lock:
        calendar = ops.new_folder(tenant, tenant.users[uid], "calendar", name, None)
    event = h.sim.add_event(
        h.sim_tenant_id,
        uid,
        subject=f"{name} kickoff",
        start=MONDAY + timedelta(days=2),
        end=MONDAY + timedelta(days=2, hours=1),
        calendar=calendar.id,
    )
    return calendar.id, event


async def age_the_list(h: EngineHarness, account: Account, hours: float) -> None:
    """As if the calendar list had been read ``hours`` ago."""
    async with h.runtime.db.session() as session:
        state = await catalog.delta_state(session, account.id, "calendar", calendar_collect.LISTED)
        kept = calendar_collect.listed(state)
        assert state is not None and kept is not None
        assert datetime.now(UTC) - kept[0] < timedelta(minutes=5)  # read by the last run
        stored = json.loads(state.delta_link or "")
        stored["at"] = (kept[0] - timedelta(hours=hours)).isoformat()
        await session.execute(
            update(DeltaState)
            .where(DeltaState.id == state.id)
            .values(delta_link=json.dumps(stored))
        )


async def test_unchanged_mailbox_costs_one_delta_round_per_calendar(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    new_calendar(h, account, "Projects")
    await h.backup(account, "calendar")
    calendars = await h.open_ids(account, "calendar", ["calendar"])
    assert len(calendars) >= 2
    await h.assert_unchanged_runs_cost_delta_rounds(
        account, "calendar", len(calendars), CALENDAR_DELTA
    )


async def test_new_calendar_is_found_after_the_interval_and_on_a_full_run(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    await h.backup(account, "calendar")
    before = set(await h.open_ids(account, "calendar", ["calendar"]))

    # A calendar made just after a listing waits for the next one (the documented delay):
    # the incremental costs its delta rounds only.
    later, later_event = new_calendar(h, account, "Later")
    h.sim.reset_counters()
    await h.backup(account, "calendar")
    h.only_delta_rounds(len(before), CALENDAR_DELTA)
    assert later not in await h.open_ids(account, "calendar", ["calendar"])

    # Once the stored list is older than the interval (6 hours by default), it is read.
    await age_the_list(h, account, h.runtime.settings.calendar_list_refresh_hours + 0.1)
    h.sim.reset_counters()
    run, _ = await h.backup(account, "calendar")
    assert h.sim.counters()["by_endpoint"].get("GET /users/{user}/calendars") == 1
    assert later in await h.open_ids(account, "calendar", ["calendar"])
    events = await h.open_ids(account, "calendar", ["event"])
    assert events[later_event].parent_external_id == later
    assert run.counters.added == 2  # the calendar and its event

    # A full run (every delta link expired: a resync) reads the list whatever its age.
    resynced, resynced_event = new_calendar(h, account, "After resync")
    h.sim.expire_delta_tokens(h.sim_tenant_id)
    await h.backup(account, "calendar")
    assert resynced in await h.open_ids(account, "calendar", ["calendar"])
    assert resynced_event in await h.open_ids(account, "calendar", ["event"])

    # And the next run is back to one delta round per calendar.
    h.sim.reset_counters()
    await h.backup(account, "calendar")
    h.only_delta_rounds(len(before) + 2, CALENDAR_DELTA)


async def test_a_notified_change_no_known_calendar_holds_reads_the_list(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    await h.backup(account, "calendar")
    fresh, fresh_event = new_calendar(h, account, "Notified")

    # Continuous protection: Graph notified an event change; the backup it starts finds
    # nothing in the known calendars, so the change is in one made since the listing.
    job = await h.start_job(JobKind.backup)
    async with h.runtime.db.session() as session:
        await session.execute(update(Job).where(Job.id == job.id).values(trigger=JobTrigger.change))
    _run, skipped = await backup_account_service(
        h.runtime, h.tenant, await h.policy(), account, "calendar", job_id=job.id
    )
    assert skipped == 0
    assert fresh in await h.open_ids(account, "calendar", ["calendar"])
    assert fresh_event in await h.open_ids(account, "calendar", ["event"])

    # A scheduled or manual run with nothing to do does not read the list.
    h.sim.reset_counters()
    await h.backup(account, "calendar")
    assert "GET /users/{user}/calendars" not in h.sim.counters()["by_endpoint"]


async def test_deleted_calendar_is_closed_at_once_not_reported_unreadable(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    doomed, doomed_event = new_calendar(h, account, "Doomed")
    await h.backup(account, "calendar")
    assert doomed_event in await h.open_ids(account, "calendar", ["event"])

    tenant = h.sim.tenant()
    with h.sim.state.lock:
        tenant.delete_folder(tenant.folders[doomed])
    run, skipped = await h.backup(account, "calendar")  # the stored list is fresh
    assert skipped == 0  # its round's 404 made us read the list: gone, not unreadable
    assert doomed not in await h.open_ids(account, "calendar", ["calendar"])
    assert doomed_event not in await h.open_ids(account, "calendar", ["event"])
    assert run.counters.removed == 2
