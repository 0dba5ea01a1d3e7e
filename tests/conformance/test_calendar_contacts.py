"""Calendars and contacts through the SDK: events, calendarView delta (v1.0, windowed),
beta's per-calendar event delta (no window), time zones, contacts and their delta."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.models.event_type import EventType
from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import (
    DeltaRequestBuilder as ViewDelta,
)

from graphsim import Simulator
from tests.conformance.conftest import GRAPH

PageT = TypeVar("PageT", bound="Page")


class Page(Protocol):
    """What a kiota collection answer has: this page's items and the link to the next."""

    @property
    def value(self) -> list[Any] | None: ...

    @property
    def odata_next_link(self) -> str | None: ...


async def every_page(
    first: PageT | None,
    fetch: Callable[[str], Awaitable[PageT | None]],
    next_link_ok: Callable[[str], bool],
) -> tuple[list[Any], PageT]:
    """Follow ``@odata.nextLink`` to the end, checking each link's form on the way: the
    items of every page and the last page (the one with the delta link)."""
    page = first
    assert page is not None and page.value is not None
    items = list(page.value)
    while page.odata_next_link:
        assert next_link_ok(page.odata_next_link), page.odata_next_link
        page = await fetch(page.odata_next_link)
        assert page is not None and page.value is not None
        items.extend(page.value)
    return items, page


def _calendar_events(sim: Simulator, user: Any) -> set[str]:
    tenant = sim.tenant()
    return {e.id for e in tenant.folder_items(user.default_calendar) if not e.deleted}


async def test_calendar_view_delta_over_a_window_in_the_function_form(
    sim: Simulator, graph: GraphServiceClient, user: Any
) -> None:
    now = datetime.now(UTC)
    start, end = now - timedelta(days=400), now + timedelta(days=400)
    query = ViewDelta.DeltaRequestBuilderGetQueryParameters(
        start_date_time=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        end_date_time=end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
    config.headers.add("Prefer", "odata.maxpagesize=5")
    view = graph.users.by_user_id(user.id).calendar_view
    instances, page = await every_page(
        await view.delta.get(config),
        lambda link: view.delta.with_url(link).get(),
        lambda link: "/calendarView/delta()?" in link,
    )
    assert page.odata_delta_link
    assert instances, "the world has events in the window"
    for event in instances:
        assert event.type in (EventType.SingleInstance, EventType.Occurrence, EventType.Exception)
        assert event.start is not None and event.start.time_zone == "UTC"
        begins = datetime.fromisoformat(str(event.start.date_time)[:19]).replace(tzinfo=UTC)
        assert begins < end
    # The same instances as the (non-delta) calendarView over that window.
    listed = await view.get(
        RequestConfiguration(
            query_parameters=view.CalendarViewRequestBuilderGetQueryParameters(
                start_date_time=query.start_date_time, end_date_time=query.end_date_time, top=1000
            )
        )
    )
    assert listed is not None and listed.value is not None
    assert {e.id for e in listed.value} == {e.id for e in instances}


async def test_beta_event_delta_masters_and_singles_without_window(
    sim: Simulator, graph: GraphServiceClient, user: Any
) -> None:
    tenant = sim.tenant()
    far = datetime(2035, 6, 1, 9, tzinfo=UTC)  # outside any window a v1.0 client would use
    weekly = sim.add_event(
        tenant.id,
        user.id,
        subject="Standup",
        start=far,
        end=far + timedelta(minutes=15),
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
            "range": {"type": "noEnd", "startDate": "2035-06-04"},
        },
    )
    url = f"{GRAPH}/beta/users/{user.id}/calendars/{user.default_calendar}/events/delta"
    # No v1.0 builder has this path: a delta builder (whose answer type carries the delta
    # link) pointed at the beta URL, as SDK clients do for beta-only paths.
    delta = graph.users.by_user_id(user.id).calendar_view.delta
    config: RequestConfiguration[Any] = RequestConfiguration()
    config.headers.add("Prefer", "odata.maxpagesize=3")
    events, page = await every_page(
        await delta.with_url(url).get(config),
        lambda link: delta.with_url(link).get(),
        lambda link: link.startswith(f"{GRAPH}/beta/"),
    )
    assert page.odata_delta_link and page.odata_delta_link.startswith(url)
    assert {e.id for e in events} == _calendar_events(sim, user)
    by_id = {e.id: e for e in events}
    assert by_id[weekly].type == EventType.SeriesMaster
    for event in events:
        assert event.type in (EventType.SeriesMaster, EventType.SingleInstance)
        assert event.start is not None and event.end is not None
        assert event.subject is None and event.body is None  # id, type, start, end only

    single = next(e.id for e in events if e.type == EventType.SingleInstance and e.id)
    sim.edit_item(tenant.id, weekly, {"subject": "Standup (moved)"})
    sim.delete_item(tenant.id, single)
    changes = await delta.with_url(page.odata_delta_link).get()
    assert changes is not None and changes.value is not None
    changed = {e.id: e for e in changes.value}
    assert set(changed) == {weekly, single}
    assert changed[single].additional_data["@removed"] == {"reason": "deleted"}
    assert changed[weekly].type == EventType.SeriesMaster


async def test_outlook_timezone_preference(
    sim: Simulator, graph: GraphServiceClient, user: Any, raw: Any
) -> None:
    tenant = sim.tenant()
    start = datetime(2031, 1, 15, 17, 30, tzinfo=UTC)
    event_id = sim.add_event(
        tenant.id, user.id, subject="Zoned", start=start, end=start + timedelta(hours=1)
    )
    item = graph.users.by_user_id(user.id).events.by_event_id(event_id)
    in_utc = await item.get()
    assert in_utc is not None and in_utc.start is not None
    assert in_utc.start.time_zone == "UTC"
    assert in_utc.start.date_time == "2031-01-15T17:30:00.0000000"
    config: RequestConfiguration[Any] = RequestConfiguration()
    config.headers.add("Prefer", 'outlook.timezone="Pacific Standard Time"')
    zoned = await item.get(config)
    assert zoned is not None and zoned.start is not None and zoned.end is not None
    assert zoned.start.time_zone == "Pacific Standard Time"
    assert zoned.start.date_time == "2031-01-15T09:30:00.0000000"  # PST is UTC-8 in January
    assert zoned.end.date_time == "2031-01-15T10:30:00.0000000"
    answer = await raw.get(
        f"/users/{user.id}/events/{event_id}", headers={"Prefer": 'outlook.timezone="Europe/Paris"'}
    )
    assert answer.headers["Preference-Applied"] == 'outlook.timezone="Europe/Paris"'
    local = start.astimezone(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%dT%H:%M:%S.0000000")
    assert answer.json()["start"] == {"dateTime": local, "timeZone": "Europe/Paris"}


async def test_a_series_created_in_a_zone_recurs_on_its_wall_clock_across_daylight_saving(
    graph: GraphServiceClient, user: Any
) -> None:
    """An SDK client creates a weekly 09:00 in Berlin: Exchange records the zone it was given
    in and keeps each occurrence at 09:00 there, 08:00 UTC before the clocks go forward on
    28 March 2027 and 07:00 UTC after."""
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
    from msgraph.generated.models.day_of_week import DayOfWeek
    from msgraph.generated.models.event import Event
    from msgraph.generated.models.patterned_recurrence import PatternedRecurrence
    from msgraph.generated.models.recurrence_pattern import RecurrencePattern
    from msgraph.generated.models.recurrence_pattern_type import RecurrencePatternType
    from msgraph.generated.models.recurrence_range import RecurrenceRange
    from msgraph.generated.models.recurrence_range_type import RecurrenceRangeType
    from msgraph.generated.users.item.events.item.instances.instances_request_builder import (
        InstancesRequestBuilder,
    )

    zone = "W. Europe Standard Time"
    created = await graph.users.by_user_id(user.id).events.post(
        Event(
            subject="Berlin stand-up",
            start=DateTimeTimeZone(date_time="2027-03-15T09:00:00", time_zone=zone),
            end=DateTimeTimeZone(date_time="2027-03-15T09:30:00", time_zone=zone),
            recurrence=PatternedRecurrence(
                pattern=RecurrencePattern(
                    type=RecurrencePatternType.Weekly,
                    interval=1,
                    days_of_week=[DayOfWeek.Monday],
                ),
                range=RecurrenceRange(
                    type=RecurrenceRangeType.Numbered,
                    start_date=datetime(2027, 3, 15).date(),
                    number_of_occurrences=4,
                ),
            ),
        )
    )
    assert created is not None and created.id is not None
    assert (created.original_start_time_zone, created.original_end_time_zone) == (zone, zone)
    assert created.start is not None and created.start.date_time is not None
    assert created.start.date_time.startswith("2027-03-15T08:00:00")  # reported in UTC
    query = InstancesRequestBuilder.InstancesRequestBuilderGetQueryParameters(
        start_date_time="2027-03-01T00:00:00Z", end_date_time="2027-05-01T00:00:00Z"
    )
    answer = (
        await graph.users.by_user_id(user.id)
        .events.by_event_id(created.id)
        .instances.get(RequestConfiguration(query_parameters=query))
    )
    assert answer is not None and answer.value is not None
    starts = [i.start.date_time[:16] for i in answer.value if i.start and i.start.date_time]
    assert starts == [
        "2027-03-15T08:00",
        "2027-03-22T08:00",
        "2027-03-29T07:00",
        "2027-04-05T07:00",
    ]


async def test_contacts_folders_and_delta(
    sim: Simulator, graph: GraphServiceClient, user: Any
) -> None:
    tenant = sim.tenant()
    contacts = graph.users.by_user_id(user.id).contacts
    found, page = await every_page(
        await contacts.delta.get(),
        lambda link: contacts.delta.with_url(link).get(),
        lambda link: "/contacts/delta()?" in link,
    )
    expected = {c.id for c in tenant.folder_items(user.contacts_root)}
    assert {c.id for c in found} == expected
    for contact in found:
        assert contact.display_name or contact.given_name or contact.surname
    folders = await graph.users.by_user_id(user.id).contact_folders.get()
    assert folders is not None and folders.value is not None
    listed = await contacts.get()
    assert listed is not None and {c.id for c in listed.value or []} <= expected

    added = sim.add_contact(tenant.id, user.id, given_name="Grace", surname="Hopper")
    assert page.odata_delta_link
    changes = await contacts.delta.with_url(page.odata_delta_link).get()
    assert changes is not None and [c.id for c in changes.value or []] == [added]
    assert (changes.value or [])[0].given_name == "Grace"
