"""A mailbox's backup keeps Microsoft's 4 Outlook requests in flight (issue 17), as graphsim
measures it (``/_sim/counters``' ``in_flight``, per mailbox), without giving up the adaptive
limiter or Retry-After, and without losing or doubling anything when a step fails while
later ones run ahead."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from safekeep.backup.services.mail import collect as mail_collect
from safekeep.graph.errors import TransientError
from safekeep.tenants.models import Account
from tests.backup.harness import EngineHarness
from tests.backup.services.test_mail import (
    GET_MIME,
    SERVICE,
    all_versions,
    assert_matches_simulator,
    endpoint_count,
    open_versions,
    plain_mime,
)

LATENCY_MS = 25.0  # long enough that requests overlap, short enough for a quick test


def fill_inbox(h: EngineHarness, account: Account, count: int) -> None:
    for n in range(count):
        h.sim.add_message(h.sim_tenant_id, account.graph_id, plain_mime(f"Memo {n}"), "inbox")


def mailbox_in_flight(h: EngineHarness, account: Account) -> dict[str, Any]:
    per_mailbox: dict[str, Any] = h.sim.counters()["in_flight"]
    found = [m for key, m in per_mailbox.items() if key.endswith(f"|{account.principal_name}")]
    assert len(found) == 1, sorted(per_mailbox)
    return found[0]


async def test_a_mailbox_backup_reaches_four_requests_in_flight_and_pipelines_its_pages(
    engine: EngineHarness, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next pages' fetches start before the current page is committed, and graphsim sees
    the mailbox at Microsoft's 4 concurrent requests, never more (no 429)."""
    h = engine
    fill_inbox(h, account, 60)
    monkeypatch.setattr(mail_collect, "DELTA_PAGE_SIZE", 10)
    fetches = 0
    ahead_at_commit: list[int] = []  # per page commit: fetches begun beyond committed groups
    committed_groups = 0
    original_fetch = mail_collect.MailCollector.fetch
    original_page = mail_collect.MailCollector._message_page

    async def counted_fetch(self: Any, ids: Any, known: Any = ()) -> Any:
        nonlocal fetches
        fetches += 1
        return await original_fetch(self, ids, known)

    async def watched_page(self: Any, folder_id: str, page: Any, *args: Any) -> None:
        nonlocal committed_groups
        wanted = [e for e in page.items if "@removed" not in e]
        committed_groups += -(-len(wanted) // mail_collect.FETCH_GROUP)
        ahead_at_commit.append(fetches - committed_groups)
        await original_page(self, folder_id, page, *args)

    monkeypatch.setattr(mail_collect.MailCollector, "fetch", counted_fetch)
    monkeypatch.setattr(mail_collect.MailCollector, "_message_page", watched_page)
    h.sim.set_latency(LATENCY_MS)
    h.sim.reset_counters()
    await h.backup(account, SERVICE)
    counters = h.sim.counters()
    box = mailbox_in_flight(h, account)
    assert box["peak"] == 4
    assert counters["throttled"] == 0
    assert counters["retry_after_violations"] == 0
    assert max(ahead_at_commit) >= 1, ahead_at_commit  # a later page was already fetching
    await assert_matches_simulator(h, account)


async def test_a_429_cuts_the_mailbox_window_and_retry_after_is_honoured(
    engine: EngineHarness, account: Account
) -> None:
    """A mailbox whose real limit is 1 concurrent request: what runs ahead waits at the
    limiter, whose window the 429s cut, so few requests are refused, none is sent inside a
    Retry-After, and the mailbox is backed up whole."""
    h = engine
    fill_inbox(h, account, 40)
    h.sim.set_latency(LATENCY_MS)
    h.sim.set_throttling(mode="custom", mailbox_concurrency=1, concurrency_retry_after_s=0.2)
    h.sim.reset_counters()
    _, skipped = await h.backup(account, SERVICE)
    counters = h.sim.counters()
    box = mailbox_in_flight(h, account)
    inner = int(counters["batch_requests"])
    operations = int(counters["total"]) - int(counters["by_kind"].get("batch", 0)) + inner
    assert skipped == 0
    assert counters["throttled"] >= 1  # slow start found the limit
    assert counters["retry_after_violations"] == 0
    assert counters["throttled"] <= 0.25 * operations, (counters["throttled"], operations)
    assert box["peak"] >= 1
    await assert_matches_simulator(h, account)


async def test_a_fetch_failing_mid_pipeline_loses_and_doubles_nothing(
    engine: EngineHarness, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group's fetch fails while later pages' fetches already run: the pages before it are
    durable, the run fails, and the next run resumes from the last durable page with nothing
    lost, nothing stored twice and nothing committed fetched again."""
    h = engine
    fill_inbox(h, account, 30)
    monkeypatch.setattr(mail_collect, "DELTA_PAGE_SIZE", 4)
    original = mail_collect.MailCollector.fetch
    calls = 0

    async def failing(self: Any, ids: Any, known: Any = ()) -> Any:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise TransientError(503, "ServiceUnavailable", "the $batch envelope failed")
        return await original(self, ids, known)

    monkeypatch.setattr(mail_collect.MailCollector, "fetch", failing)
    with pytest.raises(TransientError):
        await h.backup(account, SERVICE)
    assert calls > 4  # later groups were fetching when the failure came out
    partial = await open_versions(h, account, "message")
    assert partial  # the pages before the failure are durable
    monkeypatch.setattr(mail_collect.MailCollector, "fetch", original)
    # A $batch cancelled with the run goes on inside graphsim for a few rounds: let it end
    # before counting what the next run sends.
    await asyncio.sleep(10 * LATENCY_MS / 1000)
    h.sim.reset_counters()
    run, skipped = await h.backup(account, SERVICE)
    assert run.resumed
    assert skipped == 0
    stored = await assert_matches_simulator(h, account)
    counters = h.sim.counters()
    assert endpoint_count(counters, GET_MIME) == len(stored) - len(partial)
    versions = await all_versions(h, account)
    assert all(len(vs) == 1 for vs in versions.values())


def test_a_page_is_fetched_in_groups_that_leave_room_for_the_next_one() -> None:
    """Twenty small messages are one group ($batch); messages large enough that twenty would
    fill the mailbox's held budget are split so that two groups fit it: the next group's
    fetch runs while the current one's blobs are stored."""

    def entry(n: int, attachment: int) -> dict[str, Any]:
        attachments = [{"size": attachment}] if attachment else []
        return {"id": f"m{n}", "body": {"content": "x" * 2000}, "attachments": attachments}

    small = [entry(n, 0) for n in range(45)]
    groups = mail_collect._budgeted(small, mail_collect._held, mail_collect.GROUP_HELD_BYTES)
    assert [len(g) for g in groups] == [20, 20, 5]

    mean_sized = [entry(n, 320_000) for n in range(40)]
    groups = mail_collect._budgeted(mean_sized, mail_collect._held, mail_collect.GROUP_HELD_BYTES)
    assert len(groups) > 2 and [m for g in groups for m in g] == mean_sized
    for group in groups:
        held = sum(mail_collect._held(m) for m in group)
        assert held <= mail_collect.GROUP_HELD_BYTES
        assert 2 * held <= mail_collect.MAILBOX_HELD_BYTES
