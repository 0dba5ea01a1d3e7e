"""Errors the search layer raises.

They carry no HTTP knowledge (``search/`` knows nothing of HTTP); the API maps them:
``InvalidQuery`` and ``InvalidCursor`` to 400, ``SearchUnavailable`` to 503.
"""

from __future__ import annotations

from collections.abc import Sequence


class SearchError(Exception):
    """Base of every error raised by ``safekeep.search``."""


class InvalidQuery(SearchError, ValueError):
    """The caller's query cannot be interpreted; the message says why, for the caller."""


class InvalidCursor(InvalidQuery):
    """A cursor that this query did not produce (corrupt, forged, or from another query)."""


class SearchUnavailable(SearchError):
    """The search store cannot be reached or answered with a server-side failure."""


class IndexingFailed(SearchError):
    """Some documents were refused; the caller's retry job re-sends exactly these."""

    def __init__(self, message: str, version_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.version_ids: tuple[str, ...] = tuple(version_ids)
