"""A TCP proxy that can hold what clients send: a backend that stops answering for a while
(a JVM's pause, a merge, a network stall) without dropping anyone's connection."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class HeldProxy:
    """Forwards each connection to ``upstream``. While ``hold()`` is in force, bytes from
    clients wait in the proxy (the upstream sees nothing, so nothing is answered); ``release()``
    lets them through in order."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream = (parts.hostname, parts.port)
        self.scheme = parts.scheme
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.held = 0  # client writes that waited for a release
        self.holding = asyncio.Event()  # set once a client's write waits

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{self.scheme}://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            await asyncio.gather(
                self._pipe(reader, up_writer, gated=True), self._pipe(up_reader, writer)
            )
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, gated: bool = False
    ) -> None:
        try:
            while data := await source.read(65536):
                if gated and not self._open.is_set():
                    self.held += 1
                    self.holding.set()
                    await self._open.wait()
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(Exception):
                sink.close()
