"""A fault-injecting HTTP proxy in front of S3 (SeaweedFS), for the fault suite.

Each request (one per client connection: the proxy asks the upstream to close, so clients
reconnect for the next one) may be answered, at the given rate, with one of:

- ``500``: ``InternalError``, nothing written;
- ``slowdown``: 503 ``SlowDown``, nothing written;
- ``drop_before``: the connection closed before the request reaches S3 (nothing written);
- ``drop_after``: the request is forwarded and S3 answers (the write happened), then the
  connection is closed before the answer reaches the client.

SigV4 signs the Host header, which the proxy forwards unchanged, so S3 accepts the requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from urllib.parse import urlsplit

FAULTS = ("500", "slowdown", "drop_before", "drop_after")

_ERRORS = {
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error."),
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


class FaultyS3Proxy:
    def __init__(self, upstream: str, *, rate: float, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream = (parts.hostname, parts.port)
        self.rate = rate
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self._rng = random.Random(seed)
        self._scripted: list[str] = []
        self._writes = 0
        self._server: asyncio.Server | None = None

    def script(self, faults: tuple[str, ...] | list[str]) -> None:
        """Inject these faults, in order, on every third write (PUT or POST) from now on,
        so that a short run meets each kind whatever the random draw."""
        self._scripted.extend(faults)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> FaultyS3Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head, body = await _read_request(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            writer.close()
            return
        self.requests += 1
        fault = self._rng.choice(FAULTS) if self._rng.random() < self.rate else None
        if head.startswith((b"PUT ", b"POST ")):
            self._writes += 1
            if self._scripted and self._writes % 3 == 0:
                fault = self._scripted.pop(0)
        try:
            if fault is not None:
                self.injected[fault] += 1
            if fault == "drop_before":
                return
            if fault in _ERRORS:
                writer.write(_error_response(*_ERRORS[fault]))
                await writer.drain()
                return
            answer = await self._forward(head, body)
            if fault == "drop_after":
                return
            writer.write(answer)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        lines = head.split(b"\r\n")
        kept = [
            line
            for line in lines[1:]
            if line and not line.lower().startswith((b"connection:", b"keep-alive:"))
        ]
        request = b"\r\n".join([lines[0], *kept, b"Connection: close", b"", b""]) + body
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            up_writer.write(request)
            await up_writer.drain()
            return await up_reader.read()  # the upstream closes after its answer
        finally:
            up_writer.close()


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[bytes, bytes]:
    """The request head (without its final blank line and any ``Expect``) and its raw body
    (chunked bodies are passed on still chunked, as their header says)."""
    head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"expect", b"").lower() == b"100-continue":
        # botocore waits for this before sending a PUT's body (a second if it never comes).
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        head = b"\r\n".join(
            line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:")
        )
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            body += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = await reader.readuntil(b"\r\n")
                    body += trailer
                    if trailer == b"\r\n":
                        return head, bytes(body)
            body += await reader.readexactly(size + 2)
    length = int(headers.get(b"content-length", b"0") or 0)
    return head, await reader.readexactly(length) if length else b""


def _error_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>fault-proxy</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body
