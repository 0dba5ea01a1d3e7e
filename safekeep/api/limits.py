"""Bounds on every request, enforced before anything reads it.

A pure ASGI middleware, outside routing and authentication: an anonymous caller must not be
able to make the API buffer a large body (FastAPI reads a JSON body whole before the auth
dependency runs) or carry a huge query string or header set into the application.

- the body: a declared ``Content-Length`` above the route's limit is answered 413 at once, and
  the connection closed, without reading any of it; a chunked body is counted as the
  application receives it, and the 413 is raised as soon as the count passes the limit;
- the query string: 414 beyond ``max_query_bytes``;
- the path and the query string: 400 when either carries U+0000 (NUL, ``%00``): PostgreSQL's
  text cannot hold it and no client means it (JSON bodies refuse it field by field, in
  ``safekeep.api.schemas.RequestSchema``);
- the headers: 431 beyond ``max_header_bytes`` (the server bounds what it buffers before this
  point: see ``safekeep.api.serving``).

Answers are problem+json like every other error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from safekeep.errors import PROBLEM_BASE

PROBLEM_MEDIA_TYPE = b"application/problem+json"
# Beyond this many digits a Content-Length is nonsense, whatever the limit.
_MAX_LENGTH_DIGITS = 18


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit. An HTTPException, so
    that FastAPI's body parsing lets it through and the problem handler renders it."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"The request body is larger than the {limit} bytes this route accepts",
            headers={"Connection": "close"},
        )


async def _problem(
    send: Send, status: int, slug: str, title: str, detail: str, path: str, *, close: bool
) -> None:
    body = json.dumps(
        {
            "type": PROBLEM_BASE + slug,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": path,
        }
    ).encode()
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_query_bytes: int,
        max_header_bytes: int,
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        """``body_limits`` maps exact paths to their own body limit (a route that takes
        something other than a small JSON document)."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_query_bytes = max_query_bytes
        self.max_header_bytes = max_header_bytes
        self.body_limits = dict(body_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        query = scope.get("query_string", b"")
        if len(query) > self.max_query_bytes:
            await _problem(
                send,
                414,
                "uri-too-long",
                "URI too long",
                f"The query string is longer than {self.max_query_bytes} bytes",
                path,
                close=False,
            )
            return
        if b"%00" in query or b"\x00" in query or "\x00" in path:
            await _problem(
                send,
                400,
                "bad-request",
                "Bad request",
                "The path and query may not carry U+0000 (NUL, %00)",
                path.replace("\x00", "%00"),
                close=False,
            )
            return
        header_bytes = 0
        declared: list[bytes] = []
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value) + 4  # ": " and CRLF
            if name == b"content-length":
                declared.append(value.strip())
        if header_bytes > self.max_header_bytes:
            await _problem(
                send,
                431,
                "request-header-fields-too-large",
                "Request header fields too large",
                f"The request headers are larger than {self.max_header_bytes} bytes",
                path,
                close=True,
            )
            return
        limit = self.body_limits.get(path, self.max_body_bytes)
        if declared:
            length = declared[0]
            too_long = len(length) > _MAX_LENGTH_DIGITS
            if too_long or (length.isdigit() and int(length) > limit):
                await _problem(
                    send,
                    413,
                    "payload-too-large",
                    "Payload too large",
                    f"The request body is larger than the {limit} bytes this route accepts",
                    path,
                    close=True,
                )
                return

        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:  # the application answered before reading all of it: nothing to add
                raise
            await _problem(
                send, 413, "payload-too-large", "Payload too large", exc.detail, path, close=True
            )
