"""Instants that Python's ``datetime`` can hold.

A ``datetime`` spans 0001-01-01 to 9999-12-31 in its own zone, so an instant near either end
written with an offset, as ISO 8601 allows (``9999-12-31T23:00:00-05:00``,
``0001-01-01T00:30:00+01:00``), parses, but its UTC form lies outside that span and converting
it raises ``OverflowError``, which nothing that handles bad input expects (a query parameter
with one was a 500). Here it is a ``ValueError`` that says what is allowed: pydantic turns a
``ValueError`` in a validator into a validation error, so a request with one is a 4xx. Plain:
imports nothing of ours, so any layer may use it.
"""

from __future__ import annotations

from datetime import UTC, datetime

RANGE = "between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z"


class OutOfRange(ValueError):
    """An instant whose UTC form a ``datetime`` cannot hold."""


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive ``value`` is taken as UTC, so comparisons never mix naive and
    aware. Raises ``OutOfRange`` where the UTC form is outside ``datetime``'s span."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise OutOfRange(f"must lie {RANGE} when read in UTC") from None
