"""The one search interface, and the factory that picks a backend from a URL.

Two backends implement it and pass the same behaviour suite (``tests/search``):
``SqliteSearchBackend`` (SQLite FTS5, the embedded default, ``sqlite:///abs/path.db``) and
``OpenSearchBackend`` (the scale-out choice, ``http(s)://host:port``). Where they differ
(CJK segmentation, phrase-prefix expansion, relevance figures) is written in their modules.

Every write names its tenant: ``close_versions`` and ``delete_versions`` only touch documents
of the tenant they are given, so a wrong id from a caller cannot reach another tenant's data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from safekeep.search.documents import DEFAULT_MAX_TEXT_CHARS, SearchDocument
from safekeep.search.query import SearchPage, SearchQuery


@runtime_checkable
class SearchBackend(Protocol):
    async def open(self) -> None:
        """Create the index, aliases or tables if missing (idempotent)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``SearchUnavailable`` if searches would fail now (for /readyz)."""

    async def index(self, docs: Sequence[SearchDocument]) -> None:
        """Upsert by ``version_id``, in bounded batches; raises ``IndexingFailed`` naming the
        documents that were refused, ``SearchUnavailable`` when the store is down."""

    async def close_versions(
        self, tenant_id: str, version_ids: Sequence[str], valid_to: datetime
    ) -> None:
        """A newer version or a deletion ended these versions at ``valid_to``."""

    async def delete_versions(self, tenant_id: str, version_ids: Sequence[str]) -> None: ...

    async def purge(self, *, tenant_id: str, account_id: str | None = None) -> None:
        """Remove every document of a tenant, or of one account of it."""

    async def search(self, query: SearchQuery) -> SearchPage: ...


def open_search_backend(
    url: str,
    *,
    index_prefix: str = "safekeep",
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    **options: Any,
) -> SearchBackend:
    """Build (not yet open) the backend for ``url``.

    ``sqlite:///abs/path.db`` gives the FTS5 backend (``index_prefix`` names its tables);
    ``http(s)://[user:pass@]host:port[?number_of_shards=1&number_of_replicas=1]`` gives the
    OpenSearch backend. Extra keyword ``options`` go to the backend's constructor: for
    OpenSearch ``refresh`` (``True`` in tests), ``chunk_size``, ``max_retries``, ``timeout``, and
    any ``AsyncOpenSearch`` option (``http_auth``, ``ca_certs``, ``http_compress``...).
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from safekeep.search.embedded import SqliteSearchBackend

        path = url.removeprefix("sqlite://")
        if not path.startswith("/"):
            raise ValueError("a SQLite search URL needs an absolute path: sqlite:///abs/path.db")
        return SqliteSearchBackend(
            path, index_prefix=index_prefix, max_text_chars=max_text_chars, **options
        )
    if parts.scheme in ("http", "https"):
        from safekeep.search.opensearch import OpenSearchBackend

        from_url: dict[str, Any] = {"number_of_shards": 1, "number_of_replicas": 1}
        for key, value in parse_qsl(parts.query):
            if key == "http_compress":  # gzip requests and answers: for a cluster far away
                if value not in ("true", "false"):
                    raise ValueError("http_compress must be true or false")
                from_url[key] = value == "true"
            elif key in from_url:
                from_url[key] = int(value)
            else:
                raise ValueError(f"unknown OpenSearch URL parameter {key!r}")
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return OpenSearchBackend(
            base,
            index_prefix=index_prefix,
            max_text_chars=max_text_chars,
            **{**from_url, **options},
        )
    raise ValueError(f"unsupported search URL scheme {parts.scheme!r}: use sqlite:// or http(s)://")
