"""An open-loop HTTP/1.1 load generator cheap enough to share two cores with the server it
measures.

``bench/api.py`` runs it in a process of its own (``run`` through a spawned worker), so that
neither the bench's bookkeeping nor the server compete with it for one interpreter. Each
request is sent at its scheduled time whatever the others are doing, on a kept-alive
connection that is free at that moment (a new one when none is: a server that falls behind
gets more connections, as it would from many portals); its latency runs from the scheduled
time to the last byte of its answer, so queueing anywhere shows.

It speaks just enough HTTP/1.1 for our API: GET requests, answers framed by
``Content-Length`` (uvicorn frames every answer of ours that way; anything else is counted
as an error, not guessed at). Request bytes are built once per path, answers are parsed with
``bytes.find`` only: a few tens of microseconds of CPU per request where an HTTP client
library spends several hundred.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

TIMEOUT_SECONDS = 30.0
MAX_CONNECTIONS = 512
LATE_SECONDS = 0.01


@dataclass
class Outcome:
    """What one run measured (plain types: it crosses a process boundary)."""

    sent: int = 0
    late_sends: int = 0
    not_modified: int = 0
    # Kept-alive connections the server closed while they were idle. Each is a chance for the
    # race a proxy in front of the API meets: a request written just as the close arrives is
    # lost (counted as ``ConnectionLost``).
    idle_closed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    by_label: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class _Pending:
    label: str
    path: str
    scheduled: float
    poll: bool


class _Connection(asyncio.Protocol):
    def __init__(self, load: _Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.pending: _Pending | None = None
        self.buffer = bytearray()
        self.status = 0
        self.etag: str | None = None
        self.body_at = -1  # offset of the body in ``buffer`` once the head is in
        self.length = 0
        self.closing = False  # closed by this side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost(self)

    def send(self, pending: _Pending) -> None:
        assert self.transport is not None
        self.pending = pending
        self.buffer.clear()
        self.body_at = -1
        self.transport.write(self.load.request_bytes(pending))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.body_at < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buffer[:end]).split(b"\r\n")
            self.status = int(lines[0][9:12])
            self.etag = None
            self.length = 0
            framed = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self.length = int(value)
                    framed = True
                elif name == b"etag":
                    self.etag = value.strip().decode()
            if not framed and self.status not in (204, 304):
                self.load.failed(self, "unframed answer")
                return
            self.body_at = end + 4
        if len(buffer) - self.body_at >= self.length:
            self.load.answered(self, self.status, self.etag)


class _Load:
    def __init__(self, host: str, port: int, key: str, outcome: Outcome) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {key}\r\n".encode()
        self.outcome = outcome
        self.idle: list[_Connection] = []
        self.opened = 0
        self.waiting: list[_Pending] = []
        self.busy: set[_Connection] = set()
        self.etags: dict[str, str] = {}
        self._heads: dict[str, bytes] = {}
        self.done = 0
        self.all_done = asyncio.get_running_loop().create_future()
        self.total = 0

    def request_bytes(self, pending: _Pending) -> bytes:
        head = self._heads.get(pending.path)
        if head is None:
            head = f"GET {pending.path} HTTP/1.1\r\nHost: {self.host}\r\n".encode() + self.auth
            self._heads[pending.path] = head
        tag = self.etags.get(pending.path) if pending.poll else None
        if tag:
            return head + b"If-None-Match: " + tag.encode() + b"\r\n\r\n"
        return head + b"\r\n"

    def submit(self, pending: _Pending) -> None:
        if self.idle:
            connection = self.idle.pop()
            self.busy.add(connection)
            connection.send(pending)
        elif self.opened < MAX_CONNECTIONS:
            self.opened += 1
            asyncio.get_running_loop().create_task(self._open(pending))
        else:
            self.waiting.append(pending)

    async def _open(self, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError as exc:
            self.opened -= 1
            self._finish(pending, None, type(exc).__name__)
            return
        self.busy.add(connection)
        connection.send(pending)

    def _release(self, connection: _Connection) -> None:
        self.busy.discard(connection)
        if self.waiting:
            self.busy.add(connection)
            connection.send(self.waiting.pop(0))
        else:
            self.idle.append(connection)

    def answered(self, connection: _Connection, status: int, etag: str | None) -> None:
        pending = connection.pending
        connection.pending = None
        assert pending is not None
        if status == 304:
            self.outcome.not_modified += 1
        elif status == 200 and pending.poll and etag:
            self.etags[pending.path] = etag
        self._release(connection)
        self._finish(pending, status, None)

    def failed(self, connection: _Connection, reason: str) -> None:
        pending = connection.pending
        connection.pending = None
        self.close(connection)
        if pending is not None:
            self._finish(pending, None, reason)

    def close(self, connection: _Connection) -> None:
        connection.closing = True
        if connection.transport is not None:
            connection.transport.close()

    def lost(self, connection: _Connection) -> None:
        self.busy.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
            if not connection.closing:
                self.outcome.idle_closed += 1
        self.opened -= 1
        pending, connection.pending = connection.pending, None
        if pending is not None:
            self._finish(pending, None, "ConnectionLost")

    def _finish(self, pending: _Pending, status: int | None, error: str | None) -> None:
        if error is None and status not in (200, 304):
            error = f"HTTP {status}"
        if error is not None:
            self.outcome.errors[error] += 1
        else:
            elapsed = time.perf_counter() - pending.scheduled
            self.outcome.by_label[pending.label].append(elapsed)
        self.done += 1
        if self.done == self.total and not self.all_done.done():
            self.all_done.set_result(None)

    def expire(self, now: float) -> None:
        """Requests past the timeout are errors; their connections are closed."""
        for connection in list(self.busy):
            pending = connection.pending
            if pending is not None and now - pending.scheduled > TIMEOUT_SECONDS:
                connection.pending = None
                self._finish(pending, None, "TimeoutError")
                self.close(connection)
        while self.waiting and now - self.waiting[0].scheduled > TIMEOUT_SECONDS:
            self._finish(self.waiting.pop(0), None, "TimeoutError")


async def _run(
    base_url: str, key: str, requests: list[tuple[str, str, bool]], rate: float
) -> Outcome:
    host, _, port = base_url.removeprefix("http://").partition(":")
    outcome = Outcome()
    load = _Load(host, int(port), key, outcome)
    load.total = len(requests)
    start = time.perf_counter() + 0.05

    async def reaper() -> None:
        while not load.all_done.done():
            await asyncio.sleep(1.0)
            load.expire(time.perf_counter())

    reaping = asyncio.create_task(reaper())
    for i, (label, path, poll) in enumerate(requests):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -LATE_SECONDS:
            outcome.late_sends += 1
        load.submit(_Pending(label, path, scheduled, poll))
        outcome.sent += 1
    if requests:
        await load.all_done
    reaping.cancel()
    for connection in [*load.idle, *load.busy]:
        load.close(connection)
    return outcome


def run(base_url: str, key: str, requests: list[tuple[str, str, bool]], rate: float) -> Outcome:
    """Send ``requests`` ((label, path, is a job poll), in order) at ``rate`` per second.
    Job polls carry ``If-None-Match`` with the last ETag seen for their path, as a portal's
    would. Meant to run in a process of its own."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    outcome: Outcome = runner(_run(base_url, key, requests, rate))
    outcome.by_label = dict(outcome.by_label)
    return outcome
