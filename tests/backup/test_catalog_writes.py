"""The catalog write path costs statements per page, not per item (issue 17).

A mailbox backup is watched at the database driver: the versions and items a page records
must reach the database in a handful of statements, whatever the page's size, and the
result must be the same catalog as before (one open version per message).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, func, select

from safekeep.backup.services.mail.search import MESSAGE
from safekeep.tenants.models import Item, ItemVersion
from tests.backup.harness import EngineHarness

_TABLE = re.compile(r"^\s*(INSERT INTO|SELECT .*? FROM|UPDATE|DELETE FROM)\s+(\w+)", re.S | re.I)


@contextmanager
def statements(h: EngineHarness) -> Iterator[Counter[str]]:
    """Statements sent to the database inside the block, by verb and first table."""
    seen: Counter[str] = Counter()
    engine = h.runtime.db.engine.sync_engine

    def count(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        match = _TABLE.match(sql)
        if match:
            verb = match.group(1).split()[0].upper()
            seen[f"{verb} {match.group(2).lower()}"] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_mailbox_backup_writes_versions_in_bulk(engine: EngineHarness) -> None:
    account = next(a for a in await engine.accounts() if a.kind == "user")
    with statements(engine) as seen:
        run, skipped = await engine.backup(account, "mail")
    assert skipped == 0
    async with engine.runtime.db.session() as session:
        messages = (
            await session.execute(
                select(func.count())
                .select_from(ItemVersion)
                .where(
                    ItemVersion.account_id == account.id,
                    ItemVersion.kind == MESSAGE,
                    ItemVersion.last_seq.is_(None),
                )
            )
        ).scalar_one()
        items = (
            await session.execute(
                select(func.count()).select_from(Item).where(Item.account_id == account.id)
            )
        ).scalar_one()
    recorded = run.counters.added
    assert messages >= 5, "the fixture's mailbox should hold a few messages"
    assert items == recorded  # one item per recorded version on a first run
    # Before: an INSERT per item and per version and a SELECT of the item and of its current
    # version, each; now a page's rows go together.
    pages = seen["UPDATE delta_state"] + seen["INSERT delta_state"]
    assert pages > 0
    assert seen["INSERT item_version"] <= pages + 2, (seen, recorded)
    assert seen["INSERT item"] <= pages + 2, (seen, recorded)
    assert seen["INSERT item_version"] < recorded / 2, (seen, recorded)
    # A first backup has stored nothing its folders' passes could fail to see: they keep no
    # seen rows (a pass restarted by a resync, or over stored messages, does).
    assert seen["INSERT enumeration_seen"] == 0 and seen["DELETE enumeration_seen"] == 0, seen


async def test_rerecording_within_a_page_replaces_and_removal_sees_pending_rows(
    engine: EngineHarness,
) -> None:
    """Queued rows behave as flushed ones: a second record of the same item in the same
    snapshot replaces the first, and removing an item recorded on the same page deletes it."""
    from safekeep.backup.catalog import ItemRecord

    account = next(a for a in await engine.accounts() if a.kind == "user")
    run = await engine.snapshot_run(account, "mail")
    async with run.page() as cat:
        await cat.record_many(
            [
                ItemRecord(external_id="a", kind=MESSAGE, name="first", change_key="1"),
                ItemRecord(external_id="b", kind=MESSAGE, name="gone soon", change_key="1"),
                ItemRecord(external_id="a", kind=MESSAGE, name="second", change_key="2"),
            ]
        )
        assert await cat.remove("b")
        await cat.save_delta("x", delta_link="https://graph.invalid/delta")
    async with engine.runtime.db.session() as session:
        rows = (
            await session.execute(
                select(Item.external_id, ItemVersion.name, ItemVersion.change_key)
                .join(ItemVersion, ItemVersion.item_id == Item.id)
                .where(Item.account_id == account.id, Item.external_id.in_(["a", "b"]))
            )
        ).all()
    assert sorted(rows) == [("a", "second", "2")]
    assert run.counters.added == 2 and run.counters.removed == 1


async def test_a_full_pass_keeps_what_it_saw_in_the_database(engine: EngineHarness) -> None:
    """A resync's seen ids are rows of its snapshot, not a set in memory: what it did not see
    is ended at the pass's end, and the rows go with it."""
    from safekeep.backup.catalog import ItemRecord
    from safekeep.tenants.models import EnumerationSeen

    account = next(a for a in await engine.accounts() if a.kind == "user")

    first = await engine.snapshot_run(account, "contacts")
    async with first.page() as cat:
        await cat.record_many(
            ItemRecord(
                external_id=e, kind="contact", name=e, parent_external_id="f", change_key="1"
            )
            for e in ("a", "b", "c")
        )
    await first.complete()

    second = await engine.snapshot_run(account, "contacts")
    assert second.seq == first.seq + 1
    async with second.page() as cat:
        await cat.forget_seen("f")
        await cat.mark_seen("f", ["a", "a"])
    async with second.page() as cat:  # a later page of the same pass
        await cat.mark_seen("f", ["c"])
        assert await cat.remove_unseen_in({"contact"}, "f", parent_external_id="f") == 1
    async with engine.runtime.db.session() as session:
        open_ids = {
            e
            for (e,) in (
                await session.execute(
                    select(Item.external_id)
                    .join(ItemVersion, ItemVersion.item_id == Item.id)
                    .where(ItemVersion.account_id == account.id, ItemVersion.last_seq.is_(None))
                )
            ).all()
        }
        ended = (
            await session.execute(
                select(ItemVersion.last_seq)
                .join(Item, ItemVersion.item_id == Item.id)
                .where(Item.account_id == account.id, Item.external_id == "b")
            )
        ).scalar_one()
        rows = (await session.execute(select(func.count()).select_from(EnumerationSeen))).scalar()
    assert {"a", "c"} <= open_ids and "b" not in open_ids
    assert ended == first.seq
    assert rows == 0
    assert second.counters.removed == 1


async def test_a_pass_forgets_seen_rows_only_where_this_snapshot_may_hold_some(
    engine: EngineHarness,
) -> None:
    """A new snapshot's first pass over a folder has nothing to forget (no statement: a first
    mailbox backup began ~30 folders with a DELETE each); a pass restarted in the same run
    forgets what it marked, and a resumed snapshot what its earlier attempt marked."""
    from safekeep.tenants.models import EnumerationSeen

    account = next(a for a in await engine.accounts() if a.kind == "user")

    async def seen_rows() -> set[tuple[str, str]]:
        async with engine.runtime.db.session() as session:
            rows = await session.execute(
                select(EnumerationSeen.collection, EnumerationSeen.external_id)
            )
            return {(c, e) for c, e in rows.all()}

    run = await engine.snapshot_run(account, "contacts")
    assert not run.resumed and not run.may_hold_seen("f")
    with statements(engine) as seen:
        async with run.page() as cat:
            await cat.forget_seen("f")
            await cat.mark_seen("f", ["a", "b"])
    assert seen["DELETE enumeration_seen"] == 0
    assert run.may_hold_seen("f") and not run.may_hold_seen("g")
    async with run.page() as cat:  # the folder's pass starts again (a resync in the run)
        await cat.forget_seen("f")
        await cat.mark_seen("f", ["c"])
        await cat.mark_seen("g", ["x"])
    assert await seen_rows() == {("f", "c"), ("g", "x")}

    # The task's next attempt resumes the running snapshot.
    retry = await engine.snapshot_run(account, "contacts")
    assert retry.resumed and retry.snapshot_id == run.snapshot_id
    assert retry.may_hold_seen("g")
    async with retry.page() as cat:
        await cat.forget_seen("g")
    assert await seen_rows() == {("f", "c")}
