"""A page's blobs go to the blob store side by side, not one round trip after another.

On S3 a PUT takes tens of milliseconds; a mailbox's group of 20 messages (their MIME, then
their documents) or a contacts page of 100 (a photo and a document each) stored one after
the other waited for each round trip in turn, holding the mailbox's pipeline meanwhile. The
repository's upload budget still bounds how many go at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from safekeep.storage.repository import TenantRepository
from tests.backup.harness import EngineHarness
from tests.backup.services.test_mail import assert_matches_simulator, plain_mime

ROUND_TRIP_S = 0.005  # a blob store's round trip, so that stores in flight overlap visibly
NEW_ITEMS = 12


@contextmanager
def stores_at_once(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Count ``put_bytes`` calls in flight at once (``peak``) and in all (``calls``)."""
    seen = {"now": 0, "peak": 0, "calls": 0}
    original = TenantRepository.put_bytes

    async def slow_put(self: TenantRepository, data: bytes, **kwargs: Any) -> Any:
        seen["now"] += 1
        seen["calls"] += 1
        seen["peak"] = max(seen["peak"], seen["now"])
        try:
            await asyncio.sleep(ROUND_TRIP_S)
            return await original(self, data, **kwargs)
        finally:
            seen["now"] -= 1

    monkeypatch.setattr(TenantRepository, "put_bytes", slow_put)
    yield seen


async def test_a_mailbox_group_stores_its_messages_side_by_side(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incremental whose only change is a dozen new messages in the inbox (one page, one
    group): their MIME and documents are stored at once, and all of them are kept."""
    h = engine
    account = await h.user(0)
    await h.backup(account, "mail")
    for n in range(NEW_ITEMS):
        h.sim.add_message(h.sim_tenant_id, account.graph_id, plain_mime(f"Side {n}"), "inbox")
    with stores_at_once(monkeypatch) as seen:
        run, skipped = await h.backup(account, "mail")
    assert skipped == 0
    assert run.counters.added == NEW_ITEMS
    assert seen["calls"] >= 2 * NEW_ITEMS  # MIME and document of each
    assert seen["peak"] >= 4, seen  # one after the other, it was 1
    await assert_matches_simulator(h, account)


async def test_a_contacts_page_stores_its_contacts_side_by_side(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    account = await h.user(0)
    await h.backup(account, "contacts")
    added = {
        h.sim.add_contact(h.sim_tenant_id, account.graph_id, given_name=f"Side{n}", surname="Page")
        for n in range(NEW_ITEMS)
    }
    with stores_at_once(monkeypatch) as seen:
        run, skipped = await h.backup(account, "contacts")
    assert skipped == 0
    assert run.counters.added == NEW_ITEMS
    assert seen["calls"] >= NEW_ITEMS
    assert seen["peak"] >= 4, seen  # one after the other, it was 1
    stored = await h.open_ids(account, "contacts", ["contact"])
    assert added <= set(stored)
