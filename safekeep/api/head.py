"""HEAD on every path that answers GET: the GET's status and headers, without its body.

HTTP requires it of a general-purpose server (RFC 9110, 9.3.2), and clients we did not write
use it: an uptime monitor's default check, a download manager learning a file's size and
whether it can resume before it asks for ranges, ``curl -I``, a portal checking a job's ETag.
FastAPI routes a method only to the routes declared with it, and ours declare GET, so a HEAD
was a 405 whose ``Allow`` header named HEAD.

``HeadAsGet`` hands the application a HEAD as the GET it stands for (a copy of the scope: the
server keeps its own, and with it its rule that a HEAD answer has no body) and sends on the
status and headers with the body left out, ``Content-Length`` included as the GET would send
it. Everything else a GET goes through (authentication, scopes, rate limits, conditional
requests, problem+json refusals) a HEAD goes through the same.

A route that streams its body from the blob store (an item's content, an export's ZIP) asks
``head_only`` before it opens the stream: a HEAD reads no bytes and is not audited as a
download. A route that streams without asking is a bug this module refuses loudly rather than
read a whole export for nobody."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEAD_KEY = "safekeep.head"  # in the scope the application sees: this GET is a HEAD


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    raise RuntimeError(
                        f"{scope['path']} streamed a body for a HEAD: it must ask head_only()"
                    )
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", HEAD_KEY: True}, receive, without_body)


def head_only(request: Request) -> bool:
    """This GET is a HEAD: answer the status and headers, open no body."""
    return bool(request.scope.get(HEAD_KEY, False))
