"""httpx's connections to Graph on asyncio's own streams instead of anyio's.

httpcore reads a connection through anyio, whose TLS layer decrypts one TLS record (at most
16 KiB) per read, each read wrapped in a cancel scope and an h11 event: downloading MIME and
files, that per-read overhead was the largest share of a backup's CPU on the event loop.
asyncio's SSL transport decrypts everything that arrived in one go into the stream's buffer,
so one read hands h11 up to ``READ_BYTES`` at once, and the timeout is one timer handle.

Only the network layer changes: httpx and httpcore still do HTTP/1.1, pooling, keep-alive
and exception mapping (``httpcore.ReadTimeout`` and friends, which httpx maps as usual).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

# Bytes one read may return, and the stream buffer above which the transport stops reading
# from the socket until the consumer catches up (asyncio pauses at twice the limit).
READ_BYTES = 256 * 1024
# At most about 2 x STREAM_LIMIT is buffered per connection, a bound on memory for the pool.
STREAM_LIMIT = 128 * 1024
# A peer that does not answer our close_notify must not hold up a closing connection (httpcore
# closes one inline after a read timeout): past this it is aborted.
CLOSE_WAIT_SECONDS = 1.0

# RFC 8305: try the next address of a name if the first has not connected by then.
HAPPY_EYEBALLS_SECONDS = 0.25

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


@contextlib.contextmanager
def _mapped(timeout_error: type[Exception], other: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error(str(exc) or "timed out") from exc
    except (OSError, EOFError, ssl.SSLError) as exc:
        raise other(str(exc) or type(exc).__name__) from exc


def _readable(sock: Any) -> bool:
    """Whether an idle connection's socket has something to read (the peer closed it)."""
    if sock is None:
        return True
    try:
        fd = sock.fileno()
    except OSError:
        return True
    if fd < 0:
        return True
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection; the `timeout` parameters are httpcore's interface (noqa ASYNC109)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            if timeout is None:
                return await self._reader.read(max(max_bytes, READ_BYTES))
            async with asyncio.timeout(timeout):
                return await self._reader.read(max(max_bytes, READ_BYTES))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()

    async def aclose(self) -> None:
        self._writer.close()
        try:
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                await self._writer.wait_closed()
        except TimeoutError:
            self._writer.transport.abort()
        except (OSError, ssl.SSLError):
            pass  # closing a connection that already broke

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(
                        ssl_context,
                        server_hostname=server_hostname,
                        ssl_handshake_timeout=timeout,
                    )
        except BaseException:
            self._writer.transport.abort()
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        transport = self._writer.transport
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle keep-alive connection that can be read has been closed by the peer
            # (or sent something unasked): either way it must not be reused.
            return self._reader.at_eof() or _readable(transport.get_extra_info("socket"))
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                    limit=STREAM_LIMIT,
                    happy_eyeballs_delay=HAPPY_EYEBALLS_SECONDS,  # as anyio's connect_tcp
                )
        sock = writer.transport.get_extra_info("socket")
        if sock is not None:
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=STREAM_LIMIT)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AsyncioHTTPTransport(httpx.AsyncHTTPTransport):
    """httpx's HTTP/1.1 transport on ``AsyncioBackend``, with the same pool settings."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=verify, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=AsyncioBackend(),
        )


def graph_http_client(
    verify: ssl.SSLContext, timeout: httpx.Timeout, limits: httpx.Limits
) -> httpx.AsyncClient:
    """The HTTP client every Graph client uses (see the module docstring)."""
    return httpx.AsyncClient(
        transport=AsyncioHTTPTransport(verify=verify, limits=limits),
        timeout=timeout,
        follow_redirects=False,
    )


__all__ = ["AsyncioBackend", "AsyncioHTTPTransport", "graph_http_client"]
