"""The search document: one per item version, the only shape either backend indexes.

A document is a flat, denormalised copy of what a technician searches by. It is built by the
backup engine from the item's metadata and extracted text, and never read back as a source
of truth: the catalog is. So it can be bounded (long bodies cut, huge recipient lists
shortened) without losing anything that restore or export needs.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
)
from pydantic_core import CoreSchema

from safekeep import registry
from safekeep.instants import as_utc
from safekeep.text import storable_text


def _declared(value: str) -> str:
    """Checked against the registry when a document is built, not when this module was
    imported, so a service declared later (a test's) is indexed too."""
    if value not in registry.names():
        raise ValueError(f"{value!r} is not a declared service")
    return value


class _DeclaredEnum:
    """The JSON schema of a service: the enum of those declared when the schema is made."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"enum": list(registry.names()), "type": "string"}


if TYPE_CHECKING:
    Service = str
else:
    # One of the declared services (safekeep/registry.py).
    Service = Annotated[str, AfterValidator(_declared), _DeclaredEnum()]

# Bounds for the short fields: a subject or a file name is never legitimately longer, and a
# distribution list of thousands of recipients adds nothing to search but index size.
MAX_SHORT_CHARS = 2_000
MAX_LIST_ITEMS = 500
DEFAULT_MAX_TEXT_CHARS = 200_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
VERSION_ID_MAX_CHARS = 200


def to_micros(value: datetime) -> int:
    """Both backends store instants as integer microseconds: exact, sortable, no tz drift."""
    delta = as_utc(value) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def folder_key(path: str) -> str:
    """Normalise a folder path for prefix filtering: case- and accent-insensitive, one slash
    between segments, no trailing slash ("/" for the root). Both backends filter on this."""
    folded = fold(path)
    segments = [segment.strip() for segment in folded.split("/")]
    return "/" + "/".join(segment for segment in segments if segment)


def fold(text: str) -> str:
    """Lower-case and strip accents the way both analyzers do (é→e, ü→u), so that values we
    compare outside the full-text engine (folder keys, file types) agree with it."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize_file_type(value: str) -> str:
    return value.strip().lstrip(".").lower()


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class SearchDocument(BaseModel):
    """One item version as the search backends index it (upserted by ``version_id``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version_id: str = Field(min_length=1, max_length=VERSION_ID_MAX_CHARS)
    msp_id: str = Field(min_length=1, max_length=200)
    tenant_id: str = Field(min_length=1, max_length=200)
    account_id: str = Field(min_length=1, max_length=200)
    service: Service
    item_id: str = Field(min_length=1, max_length=1_000)
    folder_path: str = "/"
    kind: str = Field(min_length=1, max_length=40)
    title: str = ""
    valid_from: UtcDatetime
    valid_to: UtcDatetime | None = None
    date: UtcDatetime | None = None
    size: int = Field(default=0, ge=0)
    sender: str | None = None
    recipients: list[str] = Field(default_factory=list)
    people: list[str] = Field(default_factory=list)
    location: str | None = None
    body: str = ""
    attachment_names: list[str] = Field(default_factory=list)
    attachment_text: str = ""
    has_attachments: bool = False
    file_type: str | None = None

    @field_validator("file_type")
    @classmethod
    def _file_type_is_bare_extension(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return normalize_file_type(value) or None

    @property
    def sort_time(self) -> datetime:
        """What "sort by date" orders by: the item's own date, else when this version began
        (contacts and folders have no date of their own)."""
        return self.date or self.valid_from


# Highlight markers (private-use characters) and the CJK segmentation mark must never come from
# a document, or a highlight could be forged; NUL breaks some clients. All are removed on write.
_RESERVED = (("\ue000", ""), ("\ue001", ""), ("\u200b", " "), ("\x00", ""))


def clean(text: str) -> str:
    """``text`` without the reserved characters, and with any lone surrogate (Graph may send
    one: see safekeep.graph.transport; no UTF-8 index can hold it) as U+FFFD. One ``replace``
    each: a search that finds nothing costs microseconds, where ``str.translate`` maps every
    character through a dict once the text holds one that is not ASCII (25 ms for 200,000
    characters with an umlaut, a message body's bound, on every document written)."""
    if text.isascii():
        return text.replace("\x00", "")
    for reserved, replacement in _RESERVED:
        text = text.replace(reserved, replacement)
    return storable_text(text)


def truncate(text: str, limit: int) -> str:
    """Cut at a word boundary near ``limit`` so that the last indexed token is a real word."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ", max(0, limit - 100))
    return cut[:space] if space > 0 else cut


def bounded(doc: SearchDocument, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> SearchDocument:
    """The document as it is written: long text cut to the configured bound, short fields and
    lists to fixed bounds. Backends call this on every write, so no caller can overflow them."""

    def short(value: str) -> str:
        return truncate(clean(value), MAX_SHORT_CHARS)

    def many(values: list[str]) -> list[str]:
        return [short(v) for v in values[:MAX_LIST_ITEMS] if v]

    return doc.model_copy(
        update={
            "title": short(doc.title),
            "folder_path": short(doc.folder_path),
            "sender": short(doc.sender) if doc.sender else doc.sender,
            "location": short(doc.location) if doc.location else doc.location,
            "recipients": many(doc.recipients),
            "people": many(doc.people),
            "attachment_names": many(doc.attachment_names),
            "body": truncate(clean(doc.body), max_text_chars),
            "attachment_text": truncate(clean(doc.attachment_text), max_text_chars),
        }
    )
