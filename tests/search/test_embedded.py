"""What is particular to the SQLite FTS5 backend: threads, persistence, layout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from safekeep.search import SearchUnavailable, open_search_backend
from safekeep.search.embedded import SqliteSearchBackend, segment
from tests.search.docs import doc, ids, q


async def test_the_event_loop_keeps_running_while_sqlite_works(tmp_path: Path) -> None:
    backend = SqliteSearchBackend(tmp_path / "s.db")
    await backend.open()
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await backend.index([doc(body="lorem ipsum dolor " * 200) for _ in range(3_000)])
    stop.set()
    await task
    await backend.close()
    assert ticks > 20  # a blocking index() would have left the ticker at 1


async def test_data_survives_reopening_and_prefixes_are_separate(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'nested' / 'dir' / 'search.db'}"
    first = open_search_backend(url, index_prefix="one")
    await first.open()
    kept = doc(title="Persistent")
    await first.index([kept])
    await first.close()
    reopened = open_search_backend(url, index_prefix="one")
    other = open_search_backend(url, index_prefix="two")
    await reopened.open()
    await other.open()
    try:
        assert ids(await reopened.search(q("persistent"))) == [kept.version_id]
        assert ids(await other.search(q("persistent"))) == []
    finally:
        await reopened.close()
        await other.close()


async def test_closed_backend_is_unavailable(tmp_path: Path) -> None:
    backend = SqliteSearchBackend(tmp_path / "s.db")
    with pytest.raises(SearchUnavailable):
        await backend.ping()
    await backend.open()
    await backend.ping()
    await backend.close()
    with pytest.raises(SearchUnavailable):
        await backend.search(q("x"))


def test_urls_and_prefixes_are_checked() -> None:
    with pytest.raises(ValueError, match="absolute"):
        open_search_backend("sqlite://relative.db")
    with pytest.raises(ValueError, match="scheme"):
        open_search_backend("ftp://x")
    with pytest.raises(ValueError, match="prefix"):
        open_search_backend("sqlite:///tmp/x.db", index_prefix='x"; DROP')


def test_cjk_segmentation() -> None:
    assert segment("これは日本語 ok テキスト") == (
        "\u200bこ\u200b\u200bれ\u200b\u200bは\u200b\u200b日\u200b\u200b本\u200b\u200b語\u200b"
        " ok テキスト"
    )
