"""What a caller asks (``SearchQuery``), what it gets (``SearchPage``), and the plan both
backends render.

``plan()`` is the single place where a query is checked and normalised: the tenant scope
(required, non-empty), the parsed text, the effective sort, the point in time and the
cursor. Backends render a ``Plan``, never a raw ``SearchQuery``, and each has exactly one
function that turns ``Plan.tenant_ids`` into the filter every search carries, so isolation
does not depend on which other filters happen to be set.

Point in time: a version is visible at instant T when ``valid_from <= T < valid_to`` (an open
``valid_to`` means "still current"). Without ``at`` only current versions are searched;
``all_versions`` drops the upper bound (every version that existed at or before ``at``).

Cursor: keyset pagination on (sort key, version_id), like OpenSearch's ``search_after``. The
cursor also carries a fingerprint of the query, so a cursor replayed against a different query
(or edited) is refused with ``InvalidCursor`` instead of silently returning a wrong page.
Relevance pages are stable as long as the index does not change between the requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from safekeep.search.documents import (
    VERSION_ID_MAX_CHARS,
    Service,
    UtcDatetime,
    folder_key,
    normalize_file_type,
    to_micros,
)
from safekeep.search.errors import InvalidCursor, InvalidQuery
from safekeep.search.syntax import Atom, ParsedText, parse, parse_field
from safekeep.text import storable_text

Sort = Literal["relevance", "date_desc", "date_asc"]
MAX_TENANTS = 10_000
# The longest folder filter, in characters of its folded key (``folder_key``): OpenSearch
# builds a prefix query's automaton state by state and refuses one above 1,000 states, and
# folding can lengthen a path (one character may fold to several). Paths in Microsoft 365 stay
# far below: OneDrive and SharePoint allow 400 characters in a whole path.
MAX_FOLDER_KEY_CHARS = 900
# Sizes and instants (microseconds) are 64-bit integers in both backends: a bound beyond it
# is refused, not overflowed.
MAX_INT64 = 2**63 - 1
TOTAL_LIMIT = 10_000  # totals are exact up to here; beyond, ``SearchPage.total`` is None
HIGHLIGHT_FIELDS = (
    "title",
    "sender",
    "recipients",
    "people",
    "location",
    "body",
    "attachment_names",
    "attachment_text",
    "folder_path",
)
MARK_OPEN = "<mark>"
MARK_CLOSE = "</mark>"

NonEmptyId = Annotated[str, Field(min_length=1, max_length=200)]


class SearchQuery(BaseModel):
    """A search within ``tenant_ids`` (the caller's allowed tenants, computed by the API)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_ids: frozenset[NonEmptyId]
    text: str = Field(default="", max_length=1_000)
    account_ids: frozenset[NonEmptyId] | None = None
    services: frozenset[Service] | None = None
    folder: str | None = Field(default=None, max_length=2_000)
    sender: str | None = Field(default=None, max_length=500)
    recipient: str | None = Field(default=None, max_length=500)
    date_from: UtcDatetime | None = None
    date_to: UtcDatetime | None = None
    size_min: int | None = Field(default=None, ge=0, le=MAX_INT64)
    size_max: int | None = Field(default=None, ge=0, le=MAX_INT64)
    has_attachments: bool | None = None
    file_types: frozenset[str] | None = None
    at: UtcDatetime | None = None
    all_versions: bool = False
    sort: Sort = "relevance"
    limit: int = Field(default=25, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=2_000)

    @field_validator("tenant_ids")
    @classmethod
    def _scope_is_not_empty(cls, value: frozenset[str]) -> frozenset[str]:
        if not value:
            raise ValueError("a search needs at least one tenant in scope")
        if len(value) > MAX_TENANTS:
            raise ValueError(f"a search covers at most {MAX_TENANTS} tenants")
        return value

    @field_validator("folder")
    @classmethod
    def _folder_is_within_bounds(cls, value: str | None) -> str | None:
        if value is not None and len(folder_key(value)) > MAX_FOLDER_KEY_CHARS:
            raise ValueError(
                f"a folder filter is at most {MAX_FOLDER_KEY_CHARS} characters"
                " (counted with case and accents folded)"
            )
        return value

    @field_validator("file_types")
    @classmethod
    def _file_types_are_extensions(cls, value: frozenset[str] | None) -> frozenset[str] | None:
        if value is None:
            return None
        return frozenset(t for t in (normalize_file_type(v) for v in value) if t) or None

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> SearchQuery:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        sizes = (self.size_min, self.size_max)
        if sizes[0] is not None and sizes[1] is not None and sizes[0] > sizes[1]:
            raise ValueError("size_min is larger than size_max")
        return self


class SearchHit(BaseModel):
    """One matching item version. Highlights are HTML-escaped text with ``<mark>`` tags."""

    version_id: str
    tenant_id: str
    account_id: str
    service: Service
    item_id: str
    kind: str
    title: str
    folder_path: str
    date: datetime | None
    size: int
    score: float | None = None
    highlights: dict[str, list[str]] = Field(default_factory=dict)


# The stored fields of a hit, in order (its score and highlights are worked out per search).
HIT_FIELDS = tuple(name for name in SearchHit.model_fields if name not in ("score", "highlights"))


class SearchPage(BaseModel):
    hits: list[SearchHit]
    next_cursor: str | None = None
    total: int | None = None  # exact up to TOTAL_LIMIT, else None


@dataclass(frozen=True)
class TimeScope:
    """Which versions are visible: ``current_only`` or ``valid_from <= at`` plus, unless
    ``all_versions``, ``valid_to > at`` (open ``valid_to`` always passes)."""

    at: int | None  # microseconds
    all_versions: bool

    @property
    def current_only(self) -> bool:
        return self.at is None and not self.all_versions


@dataclass(frozen=True)
class Plan:
    tenant_ids: tuple[str, ...]
    text: ParsedText
    account_ids: tuple[str, ...] | None
    services: tuple[str, ...] | None
    folder_key: str | None
    sender: Atom | None
    recipient: Atom | None
    date_from: int | None
    date_to: int | None
    size_min: int | None
    size_max: int | None
    has_attachments: bool | None
    file_types: tuple[str, ...] | None
    time: TimeScope
    order: Sort  # effective: "relevance" becomes "date_desc" when nothing is ranked
    limit: int
    after: tuple[float, str] | None  # (sort key, version_id) of the previous page's last hit
    fingerprint: str

    @property
    def ranked(self) -> bool:
        return self.order == "relevance"

    def cursor_for(self, key: float, version_id: str) -> str:
        payload = json.dumps({"f": self.fingerprint, "k": key, "v": version_id}).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _sorted(values: frozenset[str] | None) -> tuple[str, ...] | None:
    return tuple(sorted(values)) if values else None


def _fingerprint(query: SearchQuery) -> str:
    stable = query.model_dump(mode="json", exclude={"cursor", "limit"})
    for key, value in stable.items():
        if isinstance(value, list):
            stable[key] = sorted(value)
    digest = hashlib.blake2b(json.dumps(stable, sort_keys=True).encode(), digest_size=12)
    return digest.hexdigest()


def _decode_cursor(cursor: str, fingerprint: str, order: Sort) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data: Any = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("the cursor is not one this API produced") from exc
    if not isinstance(data, dict) or set(data) != {"f", "k", "v"}:
        raise InvalidCursor("the cursor is not one this API produced")
    if data["f"] != fingerprint:
        raise InvalidCursor("the cursor belongs to a different query; start again without it")
    key, version_id = data["k"], data["v"]
    if isinstance(key, bool) or not isinstance(key, int | float) or not isinstance(version_id, str):
        raise InvalidCursor("the cursor is not one this API produced")
    if order != "relevance" and not isinstance(key, int):
        raise InvalidCursor("the cursor is not one this API produced")
    # A position the backends can compare: a finite score (JSON lets NaN and 1e999 through)
    # or a 64-bit count of microseconds, and a version id as documents hold one.
    # The range first: an int past a float's range (10**400) makes ``isfinite`` raise.
    if not (-MAX_INT64 - 1 <= key <= MAX_INT64 and math.isfinite(key)):
        raise InvalidCursor("the cursor is not one this API produced")
    if len(version_id) > VERSION_ID_MAX_CHARS or storable_text(version_id) != version_id:
        raise InvalidCursor("the cursor is not one this API produced")
    return key, version_id


def plan(query: SearchQuery) -> Plan:
    """Check and normalise a query for the backends (raises ``InvalidQuery``)."""
    text = parse(query.text)
    order: Sort = query.sort
    if order == "relevance" and not text.positive:
        order = "date_desc"
    fingerprint = _fingerprint(query)
    after = _decode_cursor(query.cursor, fingerprint, order) if query.cursor else None
    folder = folder_key(query.folder) if query.folder and query.folder.strip() else None
    if folder == "/":
        folder = None
    return Plan(
        tenant_ids=tuple(sorted(query.tenant_ids)),
        text=text,
        account_ids=_sorted(query.account_ids),
        services=_sorted(query.services),
        folder_key=folder,
        sender=parse_field(query.sender, "sender") if query.sender else None,
        recipient=parse_field(query.recipient, "recipient") if query.recipient else None,
        date_from=to_micros(query.date_from) if query.date_from else None,
        date_to=to_micros(query.date_to) if query.date_to else None,
        size_min=query.size_min,
        size_max=query.size_max,
        has_attachments=query.has_attachments,
        file_types=_sorted(query.file_types),
        time=TimeScope(
            at=to_micros(query.at) if query.at else None, all_versions=query.all_versions
        ),
        order=order,
        limit=query.limit,
        after=after,
        fingerprint=fingerprint,
    )


@cache
def _between_marks(open_mark: str, close_mark: str) -> re.Pattern[str]:
    """A closing marker, spaces, an opening one (compiled once: a page has ~100 fragments)."""
    return re.compile(f"{re.escape(close_mark)}(\\s*){re.escape(open_mark)}")


def render_highlight(fragment: str, open_mark: str, close_mark: str) -> str:
    """Escape a backend's highlight fragment for HTML and turn its private markers into
    ``<mark>`` tags: both backends mark with characters no document contains, so that the
    document's own ``<`` and ``&`` are escaped and only our tags are live."""
    fragment = fragment.replace("\u200b", "")
    # OpenSearch marks each token of a phrase on its own; join marks separated by spaces only.
    fragment = _between_marks(open_mark, close_mark).sub(r"\1", fragment)
    escaped = html.escape(fragment, quote=False)
    return escaped.replace(open_mark, MARK_OPEN).replace(close_mark, MARK_CLOSE)


# Between fragments rendered together: NUL is removed from every document on write (see
# ``documents.clean``), is not whitespace to ``_between_marks`` and is left alone by escaping.
_FRAGMENT_JOIN = "\x00"


def render_highlights(fragments: list[str], open_mark: str, close_mark: str) -> list[str]:
    """``render_highlight`` of each fragment, done once over all of them (a page of hits has
    about a hundred fragments, and a call per fragment was a third of reading the page)."""
    if not fragments:
        return []
    rendered = render_highlight(_FRAGMENT_JOIN.join(fragments), open_mark, close_mark).split(
        _FRAGMENT_JOIN
    )
    if len(rendered) != len(fragments):  # a NUL from before documents were cleaned
        return [render_highlight(f, open_mark, close_mark) for f in fragments]
    return rendered


__all__ = [
    "HIGHLIGHT_FIELDS",
    "HIT_FIELDS",
    "TOTAL_LIMIT",
    "InvalidQuery",
    "Plan",
    "SearchHit",
    "SearchPage",
    "SearchQuery",
    "TimeScope",
    "plan",
    "render_highlight",
    "render_highlights",
]
