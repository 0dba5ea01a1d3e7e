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


async def test_highlights_are_the_same_read_over_a_span_or_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's highlights are read in one walk over its rowids' span when that is narrow,
    one lookup per row otherwise: both give every hit the same marks."""
    backend = SqliteSearchBackend(tmp_path / "s.db")
    await backend.open()
    try:
        await backend.index(
            [
                doc(title=f"Invoice {n}", body=f"the invoice number {n} for the quarterly review")
                if n % 3 == 0
                else doc(title=f"Note {n}", body="nothing to see")
                for n in range(120)
            ]
        )
        spanned = await backend.search(q("invoice quarterly", limit=50))
        monkeypatch.setattr("safekeep.search.embedded._HIGHLIGHT_SPAN", 0)
        by_row = await backend.search(q("invoice quarterly", limit=50))
    finally:
        await backend.close()
    assert len(spanned.hits) == 40
    assert [(h.version_id, h.highlights) for h in spanned.hits] == [
        (h.version_id, h.highlights) for h in by_row.hits
    ]
    assert all("invoice" in " ".join(h.highlights["body"]).lower() for h in spanned.hits)


@pytest.mark.parametrize("sort", ["relevance", "date_desc"])
async def test_a_page_is_read_in_two_statements_of_one_row_each(tmp_path: Path, sort: str) -> None:
    """The sqlite3 module lets go of the GIL around every step of a statement: read a row at
    a time, a page of hits traded the GIL with the event loop for each row. The page (with
    its total) and its highlights are one statement each, and each answers one row. One
    reader thread: with more, the pool may start a second one (and its connection, untraced)
    for the measured search while the first is still handing its thread back."""
    backend = SqliteSearchBackend(tmp_path / "s.db", readers=1)
    await backend.open()
    try:
        await backend.index([doc(title=f"Budget {n}", body="the budget review") for n in range(40)])
        await backend.search(q("budget"))  # the reader's connection opens with its thread
        statements: list[str] = []
        for conn in backend._connections:
            conn.set_trace_callback(statements.append)
        page = await backend.search(q("budget", limit=25, sort=sort))
    finally:
        await backend.close()
    assert len(page.hits) == 25 and page.total == 40 and page.next_cursor is not None
    assert all("budget" in " ".join(h.highlights["title"]).lower() for h in page.hits)
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(reads) == 2
    assert all("json_group_array" in s for s in reads)
