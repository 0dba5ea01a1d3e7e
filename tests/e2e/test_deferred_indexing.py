"""Indexing never fails a backup: with search down, the backup succeeds and leaves a retry
job; the retry, run later, makes every item searchable."""

from __future__ import annotations

from safekeep.backup.indexing import index_pending
from safekeep.search.backend import open_search_backend
from safekeep.search.query import SearchQuery
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
