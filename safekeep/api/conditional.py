"""Conditional requests (RFC 9110 §13): an ``ETag`` on reads and ``304 Not Modified`` without
a body when ``If-None-Match`` names it (for pollers); ``If-Match`` on writes, which change a
resource only while it still has the tag (412 otherwise: no lost updates between two
portal users).

The tag is a hash of the exact JSON the client would get, so it changes exactly when the
answer does (a job's progress lives in its tasks, not in a timestamp on the job row); the
server still reads the rows, but a portal polling a job that has not moved gets a few header
bytes back instead of the body, and can poll with one cache entry per URL.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import Response
from pydantic import BaseModel

from safekeep.errors import PreconditionFailed

CACHE_CONTROL = "private, no-cache"

IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        max_length=2000,
        description="An `ETag` from an earlier answer: `304 Not Modified` if it still holds",
    ),
]


IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=2000,
        description="An `ETag` from a GET of this resource: the change is made only if the "
        "resource still has it (`412 Precondition Failed` otherwise; `*`: any)",
    ),
]


def require_match(if_match: str | None, current: BaseModel) -> None:
    """``If-Match`` (RFC 9110 §13.1.1) against the resource as a GET would show it now:
    strong comparison (a weak tag never matches), ``*`` matches any. 412 when none does."""
    if if_match is None:
        return
    etag = etag_of(current.model_dump_json().encode())
    if not any(tag.strip() in ("*", etag) for tag in if_match.split(",")):
        raise PreconditionFailed(
            "The resource has changed since the ETag sent in If-Match: read it again"
        )


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison, as If-None-Match asks: ``W/"x"`` matches ``"x"``; ``*`` matches any."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def conditional(
    model: BaseModel, if_none_match: str | None, *, headers: dict[str, str] | None = None
) -> Response:
    """The model as JSON with its ETag, or 304 with the same headers when the client's copy
    is current."""
    return conditional_body(model.model_dump_json().encode(), if_none_match, headers=headers)


def conditional_body(
    body: bytes, if_none_match: str | None, *, headers: dict[str, str] | None = None
) -> Response:
    """``conditional`` for an answer already written as JSON."""
    etag = etag_of(body)
    all_headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, **(headers or {})}
    if matches(if_none_match, etag):
        return Response(status_code=304, headers=all_headers)
    return Response(body, media_type="application/json", headers=all_headers)


_ETAG_HEADER = {
    "ETag": {
        "description": "Tag of this answer; send it back as `If-None-Match` when polling",
        "schema": {"type": "string"},
    }
}


def conditional_responses(*, retry_after: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI for a conditional read: the headers of its 200 and its 304."""
    headers: dict[str, Any] = dict(_ETAG_HEADER)
    if retry_after:
        headers["Retry-After"] = {
            "description": "While the job is queued or running: seconds to wait before the "
            "next poll",
            "schema": {"type": "integer"},
        }
    return {
        200: {"headers": headers},
        304: {
            "description": "Not modified: the `If-None-Match` tag still holds",
            "headers": headers,
        },
    }
