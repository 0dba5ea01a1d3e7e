"""What one Graph request asks of the transport, in one value instead of keyword lists.

Every layer above the transport (paging, ``$batch``, uploads, downloads) describes its request
with a ``RequestOptions`` and hands it down unchanged, so a new option is added in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypedDict

Scope = Literal["exchange", "sharepoint", "tenant"]
Json = dict[str, Any]

DEFAULT_EXPECTED: tuple[int, ...] = (200, 201, 202, 204)


class ReadFields(TypedDict, total=False):
    """The options of a read (``GraphClient.get_json``, ``paginate``, ``delta``) by keyword."""

    params: Mapping[str, Any] | None
    headers: Mapping[str, str] | None
    mailbox: str | None


class RequestFields(ReadFields, total=False):
    """The options a caller of ``GraphClient.request``/``request_json`` may pass by keyword."""

    json: Any
    content: bytes | str | None
    expected: tuple[int, ...] | list[int]
    idempotent: bool | None


@dataclass(frozen=True)
class RequestOptions:
    """One request's body, query, headers and the rules the transport applies to it.

    ``mailbox`` names the mailbox whose limits the request counts against when the path does
    not say it; ``idempotent`` says whether a request that may have reached Graph can be
    sent again after a network failure (by default only GET, PUT and DELETE are). ``auth``,
    ``scope``, ``width`` and ``learn`` are for the layers inside the package: pre-authenticated
    upload and download URLs go without the token and name their throttling scope themselves;
    a ``$batch`` to one mailbox takes as many of its slots as Exchange will run at once, and
    its envelope's 200 says nothing of load (its inner answers teach the window instead),
    and it waits out the pauses of every key its inner requests fall under (``pauses``).
    """

    json: Any = None
    content: bytes | str | None = None
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    mailbox: str | None = None
    expected: tuple[int, ...] = DEFAULT_EXPECTED
    idempotent: bool | None = None
    auth: bool = True
    scope: Scope | None = None
    width: int = 1
    learn: bool = True
    pauses: tuple[str, ...] = ()

    @classmethod
    def of(cls, fields: ReadFields) -> RequestOptions:
        values: dict[str, Any] = dict(fields)
        if "expected" in values:
            values["expected"] = tuple(values["expected"])
        return cls(**values)

    def but(self, **changes: Any) -> RequestOptions:
        """A copy with ``changes`` (the value is frozen so that layers can share it)."""
        if "expected" in changes:
            changes["expected"] = tuple(changes["expected"])
        return replace(self, **changes)


def prefer(
    *,
    max_page_size: int | None = None,
    immutable_id: bool = False,
    text_body: bool = False,
    extra: Iterable[str] = (),
) -> dict[str, str]:
    """A ``Prefer`` header; Outlook needs it on every page, so pass it with each call."""
    parts: list[str] = []
    if max_page_size is not None:
        parts.append(f"odata.maxpagesize={int(max_page_size)}")
    if immutable_id:
        parts.append('IdType="ImmutableId"')
    if text_body:
        parts.append('outlook.body-content-type="text"')
    parts.extend(extra)
    return {"Prefer": ", ".join(parts)} if parts else {}
