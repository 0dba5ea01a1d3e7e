"""bench/loadgen.py decides issue 18's latency figures, so what it counts is tested here
against a tiny server whose answers and delays the test controls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bench import loadgen


@asynccontextmanager
async def server(delay: float, *, chunked_path: str = "/chunked") -> AsyncIterator[str]:
    """Answers every GET after ``delay`` s: 304 when If-None-Match carries the ETag it gave,
    an unframed (chunked) answer on ``chunked_path``, else a 200 with an ETag."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head)
                await asyncio.sleep(delay)
                path = head.split(b" ", 2)[1].decode()
                if path == chunked_path:
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                elif b'if-none-match: "v1"' in head.lower():
                    writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n')
                else:
                    body = b'{"ok":true}'
                    writer.write(
                        b'HTTP/1.1 200 OK\r\nETag: "v1"\r\nContent-Length: '
                        + str(len(body)).encode()
                        + b"\r\n\r\n"
                        + body
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


async def test_every_request_is_answered_and_timed_from_its_schedule() -> None:
    requests = [("job", "/v1/jobs/1", True)] * 20 + [("tenant", "/v1/tenants/1", False)] * 20
    async with server(delay=0.05) as url:
        outcome = await loadgen._run(url, "key", requests, rate=200.0)
    assert outcome.sent == 40
    assert not outcome.errors
    assert len(outcome.by_label["job"]) == 20 and len(outcome.by_label["tenant"]) == 20
    # Latency runs from the scheduled time: never below the server's own delay.
    assert min(min(v) for v in outcome.by_label.values()) >= 0.05
    # A poll after the first answer carries the ETag and gets a 304; tenant reads never do.
    assert 0 < outcome.not_modified < 20


async def test_open_loop_does_not_wait_for_a_slow_server() -> None:
    """40 requests at 100/s finish in about 0.4 s plus one delay when requests overlap on
    several connections; a closed loop over one connection would take 40 delays (8 s)."""
    requests = [("tenant", "/v1/tenants/1", False)] * 40
    async with server(delay=0.2) as url:
        started = asyncio.get_running_loop().time()
        outcome = await loadgen._run(url, "key", requests, rate=100.0)
        took = asyncio.get_running_loop().time() - started
    assert not outcome.errors and len(outcome.by_label["tenant"]) == 40
    assert took < 3.0


async def test_an_unframed_answer_is_an_error_not_a_guess() -> None:
    requests = [("chunked", "/chunked", False), ("tenant", "/v1/tenants/1", False)]
    async with server(delay=0.0) as url:
        outcome = await loadgen._run(url, "key", requests, rate=50.0)
    assert outcome.errors == {"unframed answer": 1}
    assert len(outcome.by_label["tenant"]) == 1
