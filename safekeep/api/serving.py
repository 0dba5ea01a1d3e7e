"""How uvicorn serves the API, the same from ``safekeep serve``, the Helm chart and the tests.

The HTTP parser is httptools (llhttp, in C) rather than h11 (pure Python), which cost about
0.3 ms of CPU per request, a fifth of a cheap authenticated read. uvicorn writes a response's
status line and headers, then its body, as two writes, each a ``send()`` system call (on
loopback, with the delivery to the peer in it); ``HeadWithBody`` holds the head until the
body's first bytes so that a response leaves in one. httptools sets no bound of
its own on what it buffers before the application sees a request, so ``BoundedHttpTools``
adds the one h11 had: while a request's head (request line and headers) is incomplete, the
connection may not have sent more than ``MAX_REQUEST_HEAD_BYTES`` for it; past that uvicorn's
400 is sent and the connection closed. The ``RequestLimits`` middleware then applies the
finer limits (query 414, headers 431, body 413) with problem+json answers. The Helm chart
passes the same option (``--http safekeep.api.serving:BoundedHttpTools``).

An idle kept-alive connection is closed after ``KEEP_ALIVE_SECONDS``, not uvicorn's 5 s. A
proxy in front of the API (an Ingress controller, a cloud load balancer) keeps its idle
connections to us for about a minute (ingress-nginx's upstream keep-alive and AWS's ALB: 60 s)
and reuses them: when we close first, a request it writes just as our close arrives is lost,
and the caller gets a 502. Closing later than the proxy leaves that race to the proxy's side,
where it knows the request was never sent. The Helm chart passes the same value
(``api.keepAliveSeconds``).
"""

from __future__ import annotations

import sys
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_REQUEST_HEAD_BYTES = 64 * 1024
PROTOCOL = "safekeep.api.serving:BoundedHttpTools"
KEEP_ALIVE_SECONDS = 75  # above the 60 s of the proxies in front of us (see above)


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on an incomplete request head.

    Bytes are counted from the end of the previous request (or the connection's start) until
    the parser reports the headers complete. As with h11's ``max_incomplete_event_size`` the
    check is made after each read, so a head that completes within the read that crosses the
    cap is still parsed (and then meets ``RequestLimits``): what one connection can make the
    server hold stays bounded by the cap plus one socket read."""

    _head_bytes = 0
    _reading_head = True

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._reading_head
            and self._head_bytes > MAX_REQUEST_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            self.send_400_response("Request head too large.")

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()
        if self.cycle is not None and not isinstance(self.cycle.transport, HeadWithBody):
            HeadWithBody.install(self.cycle)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes = 0


class HeadWithBody:
    """The transport one request's response is written to, holding the response's head (the
    first write once the response has started) until its body's first bytes, the response's
    end (a HEAD answer or a 304 may have no body write at all) or the connection's close.
    A "100 Continue" goes out at once: it is written before the response starts."""

    __slots__ = ("_cycle", "_head", "_transport", "_waiting")

    def __init__(self, cycle: Any) -> None:
        self._transport = cycle.transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._waiting = True  # for the head

    @classmethod
    def install(cls, cycle: Any) -> None:
        held = cls(cycle)
        completed = cycle.on_response

        def on_response() -> None:
            held.flush()
            completed()

        cycle.transport = held
        cycle.on_response = on_response

    def write(self, data: bytes) -> None:
        if self._waiting and self._cycle.response_started:
            self._waiting = False
            self._head = data
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def uvicorn_options() -> dict[str, Any]:
    return {"http": PROTOCOL, "timeout_keep_alive": KEEP_ALIVE_SECONDS}


def api_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The API alone as its own process, with the options the Helm chart passes: what tests
    and benchmarks start when they want the API as it is deployed."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "safekeep.api.app:create_app",
        "--host",
        host,
        "--port",
        str(port),
        "--http",
        PROTOCOL,
        "--timeout-keep-alive",
        str(KEEP_ALIVE_SECONDS),
    ]
