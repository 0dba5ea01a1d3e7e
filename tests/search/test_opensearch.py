"""What is particular to the OpenSearch backend: index layout, aliases, migration, failures."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime

import pytest
from opensearchpy.exceptions import SerializationError

from safekeep.search import IndexingFailed, SearchQuery, SearchUnavailable, open_search_backend
from safekeep.search import opensearch as os_backend
from safekeep.search.opensearch import OpenSearchBackend, search_body
from safekeep.search.query import plan
from tests.search.docs import doc, ids, q


async def test_open_creates_a_versioned_index_behind_two_aliases(
    opensearch: OpenSearchBackend,
) -> None:
    client = opensearch.client
    aliases = await client.indices.get_alias(index=f"{opensearch.prefix}-items-v*")
    assert aliases == {
        opensearch.index_name(1): {
            "aliases": {
                opensearch.read_alias: {},
                opensearch.write_alias: {"is_write_index": True},
            }
        }
    }
    mapping = (await client.indices.get_mapping(index=opensearch.read_alias))[
        opensearch.index_name(1)
    ]["mappings"]
    assert mapping["dynamic"] == "strict"
    assert mapping["_routing"] == {"required": True}
    assert mapping["properties"]["tenant_id"] == {"type": "keyword"}
    assert mapping["properties"]["body"]["analyzer"] == "sk_text"
    await opensearch.open()  # idempotent
    assert await opensearch.current_index() == opensearch.index_name(1)


async def test_the_client_speaks_uncompressed_unless_asked(opensearch: OpenSearchBackend) -> None:
    connections = opensearch.client.transport.connection_pool.connections
    assert connections and not any(c.http_compress for c in connections)
    kept = doc(title="Squeezed")
    await opensearch.index([kept])
    compressed = OpenSearchBackend(
        opensearch.url, index_prefix=opensearch.prefix, http_compress=True
    )
    await compressed.open()  # the index is there: opening only connects
    try:
        connections = compressed.client.transport.connection_pool.connections
        assert connections and all(c.http_compress for c in connections)
        assert ids(await compressed.search(q("squeezed"))) == [kept.version_id]
    finally:
        await compressed.close()


async def test_answers_are_read_by_orjson_and_what_it_refuses_by_the_standard_library(
    opensearch: OpenSearchBackend,
) -> None:
    serializer = opensearch.client.transport.deserializer.serializers["application/json"]
    assert isinstance(serializer, os_backend._Answers)
    assert serializer.loads('{"hits":{"total":{"value":3}}}') == {"hits": {"total": {"value": 3}}}
    odd = serializer.loads('{"score":NaN,"big":123456789012345678901234567890}')
    assert odd["score"] != odd["score"] and odd["big"] == 123456789012345678901234567890
    with pytest.raises(SerializationError):
        serializer.loads("{not json")
    # Requests are still written by opensearch-py's own encoder (dates and the like).
    assert serializer.dumps({"at": datetime(2026, 1, 2, tzinfo=UTC)}) == (
        '{"at":"2026-01-02T00:00:00+00:00"}'
    )


async def test_the_analyzer_splits_like_the_embedded_one(opensearch: OpenSearchBackend) -> None:
    analyzed = await opensearch.client.indices.analyze(
        index=opensearch.read_alias,
        body={
            "analyzer": "sk_text",
            "text": "Anna.Lindqvist@Contoso.com Q3_Report l'Été 3.14 東京",
        },
    )
    tokens = [t["token"] for t in analyzed["tokens"]]
    assert tokens == [
        "anna", "lindqvist", "contoso", "com", "q3", "report", "l", "ete", "3", "14", "東", "京",
    ]  # fmt: skip


async def test_documents_are_routed_by_tenant(opensearch: OpenSearchBackend) -> None:
    target = doc(tenant_id="tenant-x")
    await opensearch.index([target])
    got = await opensearch.client.get(
        index=opensearch.read_alias, id=f"tenant-x/{target.version_id}", routing="tenant-x"
    )
    assert got["_routing"] == "tenant-x"
    assert got["_source"]["doc_key"] == f"tenant-x/{target.version_id}"


_FILTER_CASES = [
    {},
    {"text": "a OR b -c"},
    {"account_ids": frozenset({"x"}), "services": frozenset({"mail"})},
    {"folder": "/x", "sender": "s", "recipient": "r"},
    {"date_from": datetime(2026, 1, 1, tzinfo=UTC), "size_max": 3, "has_attachments": True},
    {"file_types": frozenset({"pdf"}), "at": datetime(2026, 1, 1, tzinfo=UTC)},
    {"all_versions": True, "sort": "date_asc", "text": '"p q"*'},
]


@pytest.mark.parametrize("case", _FILTER_CASES)
def test_every_request_body_carries_the_tenant_filter(case: dict[str, object]) -> None:
    tenants = frozenset({"t1", "t2"})
    body = search_body(plan(SearchQuery(tenant_ids=tenants, **case)))
    query = body["query"]["bool"]
    assert set(query) <= {"filter", "must", "must_not"}  # no "should" that could widen it
    assert query["filter"][0] == {"terms": {"tenant_id": ["t1", "t2"]}}
    assert "highlight" not in body or "query" not in body["highlight"]


async def test_a_refused_write_names_the_documents(opensearch: OpenSearchBackend) -> None:
    first, second = doc(), doc()
    await opensearch.client.indices.put_settings(
        index=opensearch.index_name(1), body={"index.blocks.write": True}
    )
    try:
        with pytest.raises(IndexingFailed) as caught:
            await opensearch.index([first, second])
        assert set(caught.value.version_ids) == {first.version_id, second.version_id}
    finally:
        await opensearch.client.indices.put_settings(
            index=opensearch.index_name(1), body={"index.blocks.write": False}
        )
    await opensearch.index([first])
    assert ids(await opensearch.search(q())) == [first.version_id]


async def test_an_unreachable_cluster_is_unavailable() -> None:
    backend = open_search_backend("http://127.0.0.1:9", index_prefix="nowhere", timeout=2)
    with pytest.raises(SearchUnavailable):
        await backend.open()
    try:
        with pytest.raises(SearchUnavailable):
            await backend.ping()
        with pytest.raises(SearchUnavailable):
            await backend.search(q("x"))
        with pytest.raises(SearchUnavailable):
            await backend.index([doc()])
    finally:
        await backend.close()
    with pytest.raises(SearchUnavailable):  # closed
        await backend.ping()


def test_factory_reads_sizing_from_the_url() -> None:
    backend = open_search_backend("http://h:1?number_of_shards=3&number_of_replicas=0")
    assert isinstance(backend, OpenSearchBackend)
    assert (backend.number_of_shards, backend.number_of_replicas) == (3, 0)
    assert backend.url == "http://h:1"
    assert backend._client_options == {}  # uncompressed unless asked
    compressed = open_search_backend("http://h:1?http_compress=true")
    assert isinstance(compressed, OpenSearchBackend)
    assert compressed._client_options == {"http_compress": True}
    assert compressed.number_of_shards == 1
    with pytest.raises(ValueError, match="unknown"):
        open_search_backend("http://h:1?shards=3")
    with pytest.raises(ValueError, match="true or false"):
        open_search_backend("http://h:1?http_compress=yes")
    with pytest.raises(ValueError, match="prefix"):
        open_search_backend("http://h:1", index_prefix="Bad*Name")


async def test_migrate_keeps_everything_searchable(
    opensearch: OpenSearchBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os_backend, "_INDEX_CACHE_SECONDS", 0.05)
    docs = [doc(title=f"Before {i}") for i in range(40)]
    await opensearch.index(docs)
    await opensearch.close_versions("ta", [docs[0].version_id], datetime(2026, 3, 5, tzinfo=UTC))
    assert await opensearch.migrate() == opensearch.index_name(2)
    assert await opensearch.current_index() == opensearch.index_name(2)
    assert not await opensearch.client.indices.exists(index=opensearch.index_name(1))
    assert (await opensearch.search(q("before", limit=100))).total == 39
    assert (await opensearch.search(q("before", all_versions=True, limit=100))).total == 40
    await opensearch.index([doc(title="After")])
    assert (await opensearch.search(q("after"))).total == 1


async def test_migrate_under_concurrent_writes_and_searches(
    opensearch: OpenSearchBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes (new documents and deletions) land before, between and after every copy pass,
    deterministically, while a free-running writer and a searcher add real concurrency."""
    monkeypatch.setattr(os_backend, "_INDEX_CACHE_SECONDS", 0.05)
    initial = [doc(title="Steady") for _ in range(200)]
    await opensearch.index(initial)
    expected = {d.version_id for d in initial}
    victims = itertools.cycle(sorted(expected))
    done = asyncio.Event()
    failures: list[BaseException] = []
    interleaved_rounds = 0

    async def write_round() -> None:
        new = doc(title="Steady")
        await opensearch.index([new])
        expected.add(new.version_id)
        victim = next(victims)
        await opensearch.delete_versions("ta", [victim])
        expected.discard(victim)

    copy_pass = opensearch._reindex

    async def interleaved(source: str, dest: str, query: dict[str, object] | None) -> None:
        nonlocal interleaved_rounds
        await write_round()
        await copy_pass(source, dest, query)
        await write_round()
        interleaved_rounds += 2

    monkeypatch.setattr(opensearch, "_reindex", interleaved)

    async def writer() -> None:
        while not done.is_set():
            await write_round()
            await asyncio.sleep(0.02)

    async def searcher() -> None:
        while not done.is_set():
            try:
                await opensearch.search(q("steady", limit=10))
            except Exception as exc:  # any failure during the migration is the bug
                failures.append(exc)
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(writer()), asyncio.create_task(searcher())]
    await opensearch.migrate()
    done.set()
    await asyncio.gather(*tasks)
    assert failures == []
    assert interleaved_rounds == 6  # three copy passes, writes before and after each
    await opensearch.client.indices.refresh(index=opensearch.read_alias)
    seen: set[str] = set()
    cursor = None
    while True:
        page = await opensearch.search(q("steady", limit=100, cursor=cursor))
        seen |= set(ids(page))
        if (cursor := page.next_cursor) is None:
            break
    assert seen == expected


async def test_reconcile_removes_what_was_deleted_during_the_copy(
    opensearch: OpenSearchBackend,
) -> None:
    keep, gone = doc(), doc()
    await opensearch.index([keep, gone])
    old, new = opensearch.index_name(1), f"{opensearch.prefix}-items-v7"
    await opensearch.client.indices.create(index=new, body=os_backend.index_body(1, 0))
    await opensearch._reindex(old, new, None)
    written_later = doc()  # as if written after the flip: in the new index only
    await opensearch.client.index(
        index=new,
        id=f"ta/{written_later.version_id}",
        routing="ta",
        body=opensearch._source(written_later, 0),
        refresh=True,
    )
    await opensearch.client.delete(index=old, id=f"ta/{gone.version_id}", routing="ta")
    assert await opensearch.reconcile_deletes(old, new) == 1
    left = await opensearch.client.search(index=new, body={"query": {"match_all": {}}})
    assert {h["_source"]["version_id"] for h in left["hits"]["hits"]} == {
        keep.version_id,
        written_later.version_id,
    }


async def test_open_warns_when_the_index_predates_the_mapping(
    opensearch: OpenSearchBackend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="safekeep.search.opensearch"):
        await opensearch.open()
    assert "migrate()" not in caplog.text
    monkeypatch.setattr(os_backend, "MAPPING_VERSION", 2)
    with caplog.at_level(logging.WARNING, logger="safekeep.search.opensearch"):
        await opensearch.open()
    assert f"{opensearch.index_name(1)} predates mapping v2" in caplog.text
