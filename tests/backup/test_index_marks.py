"""A page's versions are marked indexed in the run's next transaction (the next page's, or
the one that completes the run), not in a transaction of their own; marks whose
transaction does not commit wait for the next one."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import Account, ItemVersion
from tests.backup.harness import EngineHarness
from tests.backup.test_quiet_rounds import transactions

MARK = 'UPDATE item_version SET "indexed"'


async def unindexed(h: EngineHarness) -> set[object]:
    async with h.runtime.db.session() as session:
        rows = await session.execute(
            select(ItemVersion.id).where(
                ItemVersion.tenant_id == h.tenant.id, ItemVersion.indexed.is_(False)
            )
        )
        return set(rows.scalars())


async def test_marks_ride_in_the_runs_next_transaction_never_one_of_their_own(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    with transactions(h) as done:
        run, _ = await h.backup(account, "mail")
    assert run.counters.added > 0
    assert await unindexed(h) == set()  # every message is in the index, and marked so
    marking = [t for t in done if any(s.startswith(MARK) for s in t)]
    assert marking, done
    for statements in marking:
        # Never a transaction of its own: a page's writes, or the snapshot's completion.
        assert any(not s.startswith((MARK, "SELECT")) for s in statements), statements


async def test_marks_whose_transaction_rolls_back_wait_for_the_next(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    await h.backup(account, "contacts")
    async with h.runtime.db.session() as session:
        ids = list(
            (
                await session.execute(
                    select(ItemVersion.id).where(ItemVersion.tenant_id == h.tenant.id).limit(3)
                )
            ).scalars()
        )
        await session.execute(
            update(ItemVersion).where(ItemVersion.id.in_(ids)).values(indexed=False)
        )
        await session.commit()
    assert await unindexed(h) == set(ids)

    run = await h.snapshot_run(account, "contacts")
    run.indexed(ids)
    try:
        async with run.page():
            raise RuntimeError("the page failed")
    except RuntimeError:
        pass
    assert await unindexed(h) == set(ids)  # the page wrote nothing

    async def judge(_session: AsyncSession) -> None:
        raise RuntimeError("judging the run failed")

    # The completing transaction takes the marks, then fails: they are not lost.
    with pytest.raises(RuntimeError):
        await run.complete(then=judge)
    assert await unindexed(h) == set(ids)
    await run.complete()
    assert await unindexed(h) == set()
