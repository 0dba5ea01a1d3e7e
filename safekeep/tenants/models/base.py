"""One metadata for every table; column types that mean the same on SQLite and PostgreSQL."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from safekeep.instants import as_utc

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, also on SQLite (which stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name == "sqlite":
            return _utc_from_sqlite
        if dialect.name == "postgresql":
            return _utc_from_driver
        return super().result_processor(dialect, coltype)


def _utc_from_sqlite(value: str | None) -> datetime | None:
    """A stored SQLite timestamp (UTC, as ``UTCDateTime`` writes it: ISO text without a zone)
    read as aware UTC in one parse. Read as naive and then given its zone, a timestamp cost
    ten times as much: ``datetime.replace`` alone takes 1.5 us, and a page of 50 accounts
    reads 100 of them."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value + "+00:00")
    except ValueError:  # text this type did not write: with a zone of its own
        parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is UTC else as_utc(parsed)


def _utc_from_driver(value: datetime | None) -> datetime | None:
    """What ``process_result_value`` makes of psycopg's aware timestamp, called directly: the
    TypeDecorator's wrapper and a conversion that changes nothing (every connection's
    TimeZone is UTC) were a tenth of a page of accounts' row handling."""
    if value is None or value.tzinfo is UTC:
        return value
    return as_utc(value)


class UUIDType(Uuid[uuid.UUID]):
    """SQLAlchemy's ``Uuid``, read faster where it is stored as 32 hex digits (SQLite;
    PostgreSQL's driver makes ``UUID`` objects itself). ``uuid.UUID(text)`` is Python that
    strips, replaces and checks its argument: 1.3-1.8 us a value, the largest part of reading a
    page of accounts. Made from the integer, as psycopg makes its UUIDs: 0.6-0.9 us (timed
    side by side; the machine's speed moves both)."""

    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if self.as_uuid and not (dialect.supports_native_uuid and self.native_uuid):
            return _uuid_from_hex
        return super().result_processor(dialect, coltype)


_new_object = object.__new__
_set_attribute = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown  # read once: an enum member's lookup is Python code


def _uuid_from_hex(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    if len(value) != 32 or not value.isalnum():  # not as ``Uuid`` writes it (``hex``): the
        return uuid.UUID(value)  # full parser, with its stripping and checks
    made = _new_object(uuid.UUID)
    _set_attribute(made, "int", int(value, 16))
    _set_attribute(made, "is_safe", _UNKNOWN_SAFETY)
    return made


JSONType = JSON().with_variant(JSONB(), "postgresql")


class InstantsByName(TypeDecorator[dict[str, datetime]]):
    """A JSON object of instants by name (``{"mail": <aware datetime>}``), kept as ISO 8601
    text with its offset and read back as aware UTC datetimes (text written without a zone
    is UTC)."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        return dialect.type_descriptor(JSONB() if dialect.name == "postgresql" else JSON())

    def process_bind_param(
        self, value: dict[str, datetime] | None, dialect: Dialect
    ) -> dict[str, str] | None:
        if value is None:
            return None
        return {name: as_utc(at).isoformat() for name, at in value.items()}

    def process_result_value(
        self, value: dict[str, str] | None, dialect: Dialect
    ) -> dict[str, datetime]:
        return _instants(value)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """One call a row: the driver's JSON (text on SQLite, read by the engine's
        deserializer; a dict from psycopg) and the instants in it, without the decorator's
        wrapper around the two."""
        load = self.load_dialect_impl(dialect).result_processor(dialect, coltype)
        if load is None:
            return _instants

        def read(value: Any) -> dict[str, datetime]:
            return _instants(None if value is None else load(value))

        return read


def _instants(value: dict[str, str] | None) -> dict[str, datetime]:
    if not value:
        return {}
    out: dict[str, datetime] = {}
    for name, text in value.items():
        at = datetime.fromisoformat(text)
        out[name] = at if at.tzinfo is UTC else as_utc(at)
    return out


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), uuid.UUID: UUIDType()}


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)


class CreatedMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


def table_of(model: type[Base]) -> Table:
    """A model's Core table. Hot statements that are built once are written on it: the
    ORM-enabled form of a DML statement is taken apart, rebuilt and keyed for the
    compiled cache on every execution (measured: 140 µs against 73 for a task's settling
    UPDATE on SQLite), where the Core statement's cache key is computed once."""
    return cast(Table, model.__table__)


def page_index(table: str, scope: str, newest_by: str = "created_at") -> Index:
    """The index a list route pages along: its scope column (the MSP, tenant or endpoint
    every page is filtered by), then the page order (``newest_by``, id), so that a page is read
    in order from the index instead of sorting the scope's every row
    (``safekeep.tenants.pagination``)."""
    return Index(f"ix_{table}_{scope.removesuffix('_id')}_page", scope, newest_by, "id")


class AccountServiceMixin:
    """What a backup keeps per account and service (snapshots, items and their versions,
    delta state, skipped items, change subscriptions): gone with the account or its tenant.
    ``tenant_id`` is what scope filters read; a table that filters on it alone indexes it."""

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    service: Mapped[str] = mapped_column(String(20))


class EnumText(TypeDecorator[Any]):
    """A string enum stored as its value in a plain VARCHAR, read back as the enum member
    (so ``job.status.finished`` works on loaded rows, and migrations stay dialect-neutral)."""

    impl = String(20)
    cache_ok = True

    def __init__(self, enum_cls: type[enum.StrEnum]) -> None:
        super().__init__()
        self.enum_cls = enum_cls
        # Members by value: a dict lookup, where calling the enum class costs a few
        # microseconds a value (a page of 50 rows reads a hundred or more of them).
        self._members = {member.value: member for member in enum_cls}

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        member = self._members.get(value)
        return (member if member is not None else self.enum_cls(value)).value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        member = self._members.get(value)
        return member if member is not None else self.enum_cls(value)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """What ``process_result_value`` does, as one function: without the TypeDecorator's
        wrapper around the method (String has no result processor of its own to chain)."""
        members: dict[Any, Any] = {None: None, **self._members}
        enum_cls = self.enum_cls
        missing = object()

        def process(value: Any) -> Any:
            member = members.get(value, missing)
            return enum_cls(value) if member is missing else member

        return process
