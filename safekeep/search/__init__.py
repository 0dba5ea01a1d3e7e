"""Search over backed-up items: one interface (``SearchBackend``), two backends.

Other parts import from here: ``open_search_backend(url)`` to get a backend,
``SearchDocument`` to index, ``SearchQuery`` / ``SearchPage`` to search, ``extract_text`` and
``html_to_text`` to turn content into indexable text, and the errors.
"""

from safekeep.search.backend import SearchBackend, open_search_backend
from safekeep.search.documents import SearchDocument, bounded
from safekeep.search.errors import (
    IndexingFailed,
    InvalidCursor,
    InvalidQuery,
    SearchError,
    SearchUnavailable,
)
from safekeep.search.extract import extract_text, file_type_of, html_to_text
from safekeep.search.query import SearchHit, SearchPage, SearchQuery

__all__ = [
    "IndexingFailed",
    "InvalidCursor",
    "InvalidQuery",
    "SearchBackend",
    "SearchDocument",
    "SearchError",
    "SearchHit",
    "SearchPage",
    "SearchQuery",
    "SearchUnavailable",
    "bounded",
    "extract_text",
    "file_type_of",
    "html_to_text",
    "open_search_backend",
]
