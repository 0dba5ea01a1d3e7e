"""Indexing never fails a backup: with search down, the backup succeeds and leaves a retry
job; the retry, run later, makes every item searchable."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update

from safekeep.backup.indexing import index_pending
from safekeep.search.backend import open_search_backend
from safekeep.search.query import SearchQuery
from safekeep.tenants.models import ItemVersion
from safekeep.workers.scheduler import reindex_stale
from tests.backup.harness import EngineHarness
from tests.fixtures.app import SentMessages


async def test_backup_with_search_down_then_retry(engine: EngineHarness) -> None:
    h = engine
    runtime = h.runtime
    working = runtime.search
    runtime.search = open_search_backend(
        "http://127.0.0.1:9", index_prefix="down"
    )  # nothing listens
    runtime._opened.pop("search", None)
    account = next(
        a for a in await h.accounts() if a.kind == "user" and a.services_found.get("onedrive")
    )
    run, skipped = await h.backup(account, "onedrive")
    assert run.counters.added > 0 and skipped == 0  # the backup itself is whole
    sent = runtime.send
    assert isinstance(sent, SentMessages)
    retries = [m for m in sent.messages if m.actor == "index_versions"]
    assert retries, "a failed index write leaves a retry job"
    await runtime.search.close()
    runtime.search = working
    runtime._opened.pop("search", None)
    backend = await runtime.search_backend()
    query = SearchQuery(
        tenant_ids=frozenset({str(h.tenant.id)}), account_ids=frozenset({str(account.id)})
    )
    assert (await backend.search(query)).hits == []
    for message in retries:
        await index_pending(runtime, *message.args)
    found = await backend.search(query.model_copy(update={"limit": 100}))
    assert len(found.hits) == run.counters.added


async def unindexed(h: EngineHarness) -> list[uuid.UUID]:
    async with h.runtime.db.session() as session:
        rows = await session.execute(
            select(ItemVersion.id).where(
                ItemVersion.tenant_id == h.tenant.id, ItemVersion.indexed.is_(False)
            )
        )
        return [version_id for (version_id,) in rows.all()]


async def test_a_backup_leaves_no_version_unindexed(engine: EngineHarness) -> None:
    """Folders and calendars have no search document: they count as indexed, or the search
    backlog (``safekeep_search_unindexed_versions``, and the lag alert on its age) would
    never drain."""
    h = engine
    account = await h.user(0)
    for service in ("mail", "contacts", "calendar", "onedrive"):
        await h.backup(account, service)
    assert await unindexed(h) == []


async def test_versions_a_stopped_worker_left_unindexed_are_indexed_again(
    engine: EngineHarness,
) -> None:
    """A worker stopped between a page's commit and its indexing leaves versions stored but
    not searchable, and no retry job: the scheduler sends those older than its grace period
    to be indexed again."""
    h = engine
    runtime = h.runtime
    account = await h.user(0)
    await h.backup(account, "mail")
    backend = await runtime.search_backend()
    query = SearchQuery(
        tenant_ids=frozenset({str(h.tenant.id)}),
        account_ids=frozenset({str(account.id)}),
        limit=100,
    )
    before = {hit.version_id for hit in (await backend.search(query)).hits}
    lost = sorted(before)[:5]
    # What the stopped worker left: committed, flagged unindexed, absent from the index. And
    # a folder as versions stored before folders counted as indexed were left: it has no
    # document, and must not be sent again on every tick.
    folder = next(iter((await h.open_ids(account, "mail", ["mail_folder"])).values()))
    async with runtime.db.session() as session:
        await session.execute(
            update(ItemVersion)
            .where(ItemVersion.id.in_([uuid.UUID(v) for v in lost] + [folder.id]))
            .values(indexed=False)
        )
    await backend.delete_versions(str(h.tenant.id), lost)
    assert {hit.version_id for hit in (await backend.search(query)).hits} == before - set(lost)

    sent = runtime.send
    assert isinstance(sent, SentMessages)
    sent.messages.clear()
    assert await reindex_stale() == 0  # within the grace period: the backup's own to index
    assert await reindex_stale(older_than=timedelta(0)) == len(lost) + 1
    retries = [m for m in sent.messages if m.actor == "index_versions"]
    assert [sorted(m.args[1]) for m in retries] == [sorted([*lost, str(folder.id)])]
    for message in retries:
        await index_pending(runtime, *message.args)
    assert {hit.version_id for hit in (await backend.search(query)).hits} == before
    assert await unindexed(h) == []
    assert await reindex_stale(older_than=timedelta(0)) == 0
