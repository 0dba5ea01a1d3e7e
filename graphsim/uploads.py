"""Resumable upload sessions for drive items and mail/event attachments.

Both kinds follow the same protocol (``PUT uploadUrl`` with ``Content-Range``, no
Authorization, ``nextExpectedRanges``) but differ in their rules: drive fragments must be
multiples of 320 KiB and under 60 MiB, attachment fragments at most 4 MB; a drive session
answers 202 until the last fragment, an attachment session 200.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from graphsim.content import Content, ContentSink
from graphsim.http import GraphError, Resp

FRAGMENT_UNIT = 320 * 1024
DRIVE_MAX_FRAGMENT = 60 * 1024 * 1024
ATTACHMENT_MAX_FRAGMENT = 4 * 1024 * 1024
ATTACHMENT_MAX_SIZE = 150 * 1024 * 1024

_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass
class UploadSession:
    id: str
    kind: str  # "drive" | "attachment"
    tenant_id: str
    expires: float
    commit: Callable[[Content], Resp]
    sink: ContentSink
    total: int | None = None
    received: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    # deferCommit: the bytes wait, complete, until the client POSTs to the upload URL.
    defer_commit: bool = False
    pending: Content | None = None

    def expiration(self) -> str:
        return (
            datetime.fromtimestamp(self.expires, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        )

    def status_body(self) -> dict[str, Any]:
        complete = self.total is not None and self.received >= self.total
        return {
            "expirationDateTime": self.expiration(),
            "nextExpectedRanges": [] if complete else [f"{self.received}-"],
        }

    def complete(self) -> Resp:
        """The explicit commit of a deferred session (``POST uploadUrl``, no body)."""
        if not self.defer_commit:
            raise GraphError(
                400, "invalidRequest", "The upload session is not waiting for a commit."
            )
        if self.pending is None:
            raise GraphError(
                400,
                "invalidRequest",
                f"The upload is not complete; next expected range {self.received}-.",
            )
        return self.commit(self.pending)


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


def accept_fragment(session: UploadSession, content_range: str, data: bytes) -> Resp | None:
    """Apply one fragment; return the final response when the upload completes."""
    if time.time() > session.expires:
        raise GraphError(404, "itemNotFound", "The upload session was not found or has expired.")
    found = _RANGE.match(content_range.strip())
    if not found:
        raise GraphError(400, "invalidRequest", "Missing or malformed Content-Range header.")
    start, end, total_raw = int(found.group(1)), int(found.group(2)), found.group(3)
    total = int(total_raw) if total_raw != "*" else None
    if end < start or end - start + 1 != len(data):
        raise GraphError(
            400,
            "invalidRequest",
            "The Content-Range header length does not match the provided number of bytes.",
        )
    if session.total is not None and total is not None and total != session.total:
        raise GraphError(400, "invalidRequest", "The total size does not match the upload session.")
    if total is not None:
        session.total = total
    if start != session.received:
        raise GraphError(
            416,
            "invalidRange",
            f"The uploaded fragment overlaps with data that has already been received "
            f"or does not start at the next expected range {session.received}-.",
        )
    size = len(data)
    last = session.total is not None and end + 1 == session.total
    if session.kind == "drive":
        if size >= DRIVE_MAX_FRAGMENT:  # "less than 60 MiB" in any one request
            raise GraphError(413, "invalidRequest", "A fragment must be smaller than 60 MiB.")
        if not last and size % FRAGMENT_UNIT:
            raise GraphError(
                400,
                "invalidRequest",
                "Fragments must be a multiple of 320 KiB (327,680 bytes) except the last.",
            )
    elif size > ATTACHMENT_MAX_FRAGMENT:
        raise GraphError(413, "RequestEntityTooLarge", "The fragment exceeds 4 MB.")
    if session.total is not None and end >= session.total:
        raise GraphError(416, "invalidRange", "The fragment is beyond the declared size.")
    session.sink.write(data)
    session.received = end + 1
    if last:
        if session.defer_commit:
            session.pending = session.sink.finish()
            return None
        return session.commit(session.sink.finish())
    return None
