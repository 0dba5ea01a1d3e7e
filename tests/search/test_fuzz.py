"""Any text and any field filter give a page or ``InvalidQuery``, never another error, on both
backends: the rendering to FTS5 and to OpenSearch must escape everything a user can type."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from safekeep.search import InvalidQuery, SearchBackend, SearchQuery, open_search_backend
from safekeep.search.opensearch import OpenSearchBackend
from tests.search.conftest import opensearch_test_url
from tests.search.docs import doc

TRICKY = [
    '"', "*", "-", "(", ")", ":", "^", "~", "+", "{", "}", "[", "]", "\\", "/", "'", ",", ";",
    "AND", "OR", "NOT", "NEAR", "NEAR(a b, 2)", "title:", "body:x", "{title body}:", "*:*",
    "\ue000", "\ue001", "\u200b", "\u0301", "\x00", "日本語", "é", "ß", "İ", "🙂", "<b>", "&amp;",
    "_id:x", "tenant_id:tb", "a" * 300, "0x", "-0", "1e9", "..", "''", '""', "**",
]  # fmt: skip
# Capped at SearchQuery's own bound on the text (the API refuses longer text before any backend).
texts = (
    st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=6)), max_size=8)
    .map(" ".join)
    .map(lambda text: text[: SearchQuery.model_fields["text"].metadata[0].max_length])
)
maybe_field = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(TRICKY))


async def _search_all(backend: SearchBackend, text: str, sender: str | None) -> None:
    for sort in ("relevance", "date_asc"):
        query = SearchQuery(tenant_ids=frozenset({"ta"}), text=text, sender=sender, sort=sort)
        try:
            page = await backend.search(query)
        except InvalidQuery as exc:
            refusal = str(exc)
        else:
            assert {h.tenant_id for h in page.hits} <= {"ta"}
            continue
        # Only the parser may refuse; a refusal by FTS5 or OpenSearch is a rendering bug.
        assert "letters or digits" in refusal or "more than" in refusal, refusal


def _seed() -> list:
    return [
        doc(title="Invoice 日本語 café", body="a <b>bold</b> claim & more"),
        doc(tenant_id="tb", title="Invoice other tenant"),
    ]


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite://{tmp_path_factory.mktemp('fuzz') / 's.db'}"

    async def seed() -> None:
        backend = open_search_backend(url)
        await backend.open()
        await backend.index(_seed())
        await backend.close()

    asyncio.run(seed())
    return url


@pytest.fixture(scope="module")
def opensearch_prefix(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    url = opensearch_test_url(request)
    prefix = f"sk-fuzz-{uuid.uuid4().hex[:10]}"

    async def seed(drop: bool) -> None:
        backend = open_search_backend(url, index_prefix=prefix, refresh=True, number_of_replicas=0)
        await backend.open()
        assert isinstance(backend, OpenSearchBackend)
        if drop:
            await backend.client.indices.delete(index=f"{prefix}-items-v*")
        else:
            await backend.index(_seed())
        await backend.close()

    asyncio.run(seed(drop=False))
    yield url, prefix
    asyncio.run(seed(drop=True))


def _run(url: str, prefix: str, text: str, sender: str | None) -> None:
    async def check() -> None:
        backend = open_search_backend(url, index_prefix=prefix)
        await backend.open()
        try:
            await _search_all(backend, text, sender)
        finally:
            await backend.close()

    asyncio.run(check())


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=texts, sender=maybe_field)
@example(text="in\x00voice", sender="\x00")  # NUL once ended the FTS5 query string early
def test_fts5_accepts_any_text(sqlite_url: str, text: str, sender: str | None) -> None:
    _run(sqlite_url, "safekeep", text, sender)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=texts, sender=maybe_field)
@example(text="in\x00voice", sender="\x00")
def test_opensearch_accepts_any_text(
    opensearch_prefix: tuple[str, str], text: str, sender: str | None
) -> None:
    _run(*opensearch_prefix, text, sender)
