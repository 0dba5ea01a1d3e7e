"""A delta round that changes nothing writes nothing of its own: its new delta link is
written in the transaction that completes the run (one transaction fewer per unchanged
container, which is most of an incremental), and a page of the same collection saved later
in the run keeps its own link."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event, select

from safekeep.tenants.models import Account, DeltaState
from tests.backup.harness import EngineHarness


@contextmanager
def transactions(h: EngineHarness) -> Iterator[list[list[str]]]:
    """The statements of every transaction committed meanwhile, in order."""
    engine = h.runtime.db.engine.sync_engine
    done: list[list[str]] = []
    open_: dict[int, list[str]] = {}

    def statement(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        open_.setdefault(id(conn), []).append(" ".join(sql.split())[:80])

    def commit(conn: Any) -> None:
        done.append(open_.pop(id(conn), []))

    def rollback(conn: Any) -> None:
        open_.pop(id(conn), None)

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    event.listen(engine, "rollback", rollback)
    try:
        yield done
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)
        event.remove(engine, "rollback", rollback)


async def delta_updated(h: EngineHarness, account: Account, service: str) -> dict[str, datetime]:
    async with h.runtime.db.session() as session:
        rows = await session.execute(
            select(DeltaState.collection, DeltaState.updated_at).where(
                DeltaState.account_id == account.id,
                DeltaState.service == service,
                DeltaState.delta_link.is_not(None),
            )
        )
        return {collection: updated for collection, updated in rows.all()}


@pytest.mark.parametrize("service", ["mail", "contacts", "calendar", "onedrive"])
async def test_an_unchanged_run_moves_its_links_in_the_completing_transaction(
    engine: EngineHarness, account: Account, service: str
) -> None:
    h = engine
    await h.backup(account, service)
    before = await delta_updated(h, account, service)
    assert before
    with transactions(h) as done:
        run, _ = await h.backup(account, service)
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
    writes = [t for t in done if any(s.startswith("INSERT INTO delta_state") for s in t)]
    assert len(writes) == 1, done
    assert any(s.startswith("UPDATE snapshot SET status") for s in writes[0]), writes[0]
    # The run wrote twice: its snapshot when it began, and everything else as it completed.
    writers = [t for t in done if any(not s.startswith("SELECT") for s in t)]
    assert len(writers) == 2, writers
    assert any(s.startswith("INSERT INTO snapshot") for s in writers[0]), writers[0]
    assert writers[1] is writes[0]
    # The rounds' new links were written (some rows are not rounds: contacts' remembered
    # root, the calendar list).
    after = await delta_updated(h, account, service)
    assert set(after) == set(before)
    moved = {c for c in before if after[c] > before[c]}
    assert len(moved) >= max(1, len(before) - 1), (before, after)


async def test_a_page_saved_after_a_quiet_round_keeps_its_own_link(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    run = await h.snapshot_run(account, "contacts")
    run.quiet("folder-a", "https://graph.example/quiet-a")
    run.quiet("folder-b", "https://graph.example/quiet-b")
    async with run.page() as cat:
        await cat.save_delta("folder-a", delta_link="https://graph.example/page-a")
    async with run.page() as cat:
        await cat.drop_delta("folder-b")
    await run.complete()
    async with h.runtime.db.session() as session:
        rows = await session.execute(
            select(DeltaState.collection, DeltaState.delta_link).where(
                DeltaState.account_id == account.id, DeltaState.service == "contacts"
            )
        )
        links = {collection: link for collection, link in rows.all()}
    assert links == {"folder-a": "https://graph.example/page-a"}
