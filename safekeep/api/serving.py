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

uvicorn stops counting a connection's idleness at its first byte, and then waits for the
rest of the request for ever: anyone who can reach the port could hold a connection (its
descriptor and memory) with one byte, and a process with a few tens of thousands of them.
``BoundedHttpTools`` bounds that wait as nginx's ``client_header_timeout`` and
``client_body_timeout`` do: a request's head must be complete ``HEAD_SECONDS`` after its first
byte (else 408 and the connection closed), and while its body is being sent no more than
``BODY_IDLE_SECONDS`` may pass without a byte (else the connection is closed, and the
application sees the client gone). The body's clock stops while the server itself has
paused reading (the application has not taken what came). The other way round, a client
that asks for an answer and does not read it would leave the server holding what the
kernel cannot take (the 400 KB OpenAPI document, for anyone): once the answer has waited
``SEND_IDLE_SECONDS`` above the transport's high-water mark without the client taking
enough to bring it back down, the connection is dropped (aborted: closing would wait for a
flush that never comes).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_REQUEST_HEAD_BYTES = 64 * 1024
PROTOCOL = "safekeep.api.serving:BoundedHttpTools"
KEEP_ALIVE_SECONDS = 75  # above the 60 s of the proxies in front of us (see above)
HEAD_SECONDS = 20.0  # from a request head's first byte to its end
BODY_IDLE_SECONDS = 20.0  # between two reads of a request body
SEND_IDLE_SECONDS = 60.0  # an answer the client stops taking (nginx's send_timeout)


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on an incomplete request head, and deadlines
    for a client that stops sending in the middle of a request (see the module docstring).

    Bytes are counted from the end of the previous request (or the connection's start) until
    the parser reports the headers complete. As with h11's ``max_incomplete_event_size`` the
    check is made after each read, so a head that completes within the read that crosses the
    cap is still parsed (and then meets ``RequestLimits``): what one connection can make the
    server hold stays bounded by the cap plus one socket read."""

    _head_bytes = 0
    _reading_head = True  # False from a head's end to its request's end: the body's time
    _head_begun = False  # the parser has seen a head's first byte, not yet its end
    _request_deadline: asyncio.TimerHandle | None = None  # the head's, or the body's pause
    _send_deadline: asyncio.TimerHandle | None = None  # an answer the client is not taking

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _Flow(transport, paused=self._cancel_request_deadline, resumed=self._arm_body)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_deadline()
        self._cancel_send_deadline()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(SEND_IDLE_SECONDS, self.transport.abort)

    def resume_writing(self) -> None:
        self._cancel_send_deadline()
        super().resume_writing()

    def _cancel_send_deadline(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._reading_head and self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            self.send_400_response("Request head too large.")
        elif self._reading_head:
            self._arm_head()
        else:
            self._arm_body()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True

    def on_headers_complete(self) -> None:
        self._cancel_request_deadline()
        self._head_begun = False
        self._reading_head = False
        super().on_headers_complete()
        if self.cycle is not None and not isinstance(self.cycle.transport, HeadWithBody):
            HeadWithBody.install(self.cycle)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_request_deadline()
        self._reading_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._reading_head:
            self._arm_head()  # a next head begun while this answer was on its way

    def _arm_head(self) -> None:
        """Start the head's clock at its first byte, once no answer is on its way (a 408
        written then would come out ahead of that answer)."""
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._head_begun and self._request_deadline is None and not answering:
            self._request_deadline = self.loop.call_later(HEAD_SECONDS, self._head_timed_out)

    def _arm_body(self) -> None:
        """(Re)start the body's clock, unless no body is awaited or reading is paused."""
        self._cancel_request_deadline()
        if not (self._reading_head or self.flow.read_paused or self.transport.is_closing()):
            self._request_deadline = self.loop.call_later(BODY_IDLE_SECONDS, self._body_timed_out)

    def _cancel_request_deadline(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _head_timed_out(self) -> None:
        self._request_deadline = None
        if self.transport.is_closing():
            return
        msg = b"Request head not received in time."
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[408],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(msg)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    msg,
                ]
            )
        )
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._request_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class _Flow(FlowControl):
    """uvicorn's flow control, telling the protocol when reading pauses and resumes: a client
    is not waited for while the server holds it back."""

    def __init__(
        self,
        transport: asyncio.Transport,
        *,
        paused: Callable[[], None],
        resumed: Callable[[], None],
    ) -> None:
        super().__init__(transport)
        self._paused, self._resumed = paused, resumed

    def pause_reading(self) -> None:
        super().pause_reading()
        self._paused()

    def resume_reading(self) -> None:
        was_paused = self.read_paused
        super().resume_reading()
        if was_paused:
            self._resumed()


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
