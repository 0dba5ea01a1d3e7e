"""Fixtures for the search suite: the same tests run on both backends.

OpenSearch comes from the shared service fixtures (``tests/fixtures/services.py``:
``opensearch_url``, ``opensearch_index_prefix``) when they are loaded, else from
``SAFEKEEP_TEST_OPENSEARCH_URL``. A missing server fails the tests: it never skips them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from safekeep.search import SearchBackend, open_search_backend
from safekeep.search.opensearch import OpenSearchBackend

BACKENDS = ["sqlite", "opensearch"]


def _shared(request: pytest.FixtureRequest, name: str) -> str | None:
    try:
        value = request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        return None
    return str(value)


def opensearch_test_url(request: pytest.FixtureRequest) -> str:
    url = _shared(request, "opensearch_url") or os.environ.get("SAFEKEEP_TEST_OPENSEARCH_URL")
    if not url:
        pytest.fail(
            "no OpenSearch for the search tests: run `scripts/services start opensearch` and "
            '`eval "$(scripts/services env)"` (or set SAFEKEEP_TEST_OPENSEARCH_URL)'
        )
    return url


async def make_backend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, **options: object
) -> SearchBackend:
    if kind == "sqlite":
        backend = open_search_backend(f"sqlite://{tmp_path / 'search.db'}", **options)  # type: ignore[arg-type]
    else:
        prefix = _shared(request, "opensearch_index_prefix") or f"sk-{uuid.uuid4().hex[:12]}"
        backend = open_search_backend(
            opensearch_test_url(request),
            index_prefix=prefix,
            refresh=True,
            number_of_replicas=0,
            **options,  # type: ignore[arg-type]
        )
    await backend.open()
    return backend


async def dispose(backend: SearchBackend) -> None:
    if isinstance(backend, OpenSearchBackend) and backend._client is not None:
        await backend.client.indices.delete(
            index=f"{backend.prefix}-items-v*", params={"ignore_unavailable": "true"}
        )
    await backend.close()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SearchBackend]:
    """A fresh, empty backend of each kind for one test."""
    instance = await make_backend(request.param, request, tmp_path)
    try:
        yield instance
    finally:
        await dispose(instance)


@pytest.fixture
async def opensearch(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenSearchBackend]:
    """A fresh OpenSearch backend, for the tests of its index layout."""
    instance = await make_backend("opensearch", request, tmp_path)
    assert isinstance(instance, OpenSearchBackend)
    try:
        yield instance
    finally:
        await dispose(instance)
