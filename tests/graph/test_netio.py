"""The Graph HTTP client's network layer (asyncio streams under httpx) and the throttling
path read from a URL without a full parse: each must answer exactly as what it replaced."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme

from safekeep.graph import InProcessLimiter
from safekeep.graph.netio import AsyncioHTTPTransport, graph_http_client
from safekeep.graph.transport import Transport, is_absolute

BODY = os.urandom(3 * 1024 * 1024 + 17)  # many TLS records, not a multiple of any buffer


class Server:
    """A TLS HTTP/1.1 server on loopback: ``/body`` sends BODY, ``/slow`` never answers,
    ``/drop`` answers then closes the connection without saying so. Counts connections."""

    def __init__(self, tmp: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        self.server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.server_ctx)
        self.client_ctx = ssl.create_default_context()
        ca.configure_trust(self.client_ctx)
        self.connections = 0
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/slow":
                    await asyncio.sleep(30)
                body = BODY if path == b"/body" else b"ok"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                writer.write(body)
                await writer.drain()
                if path == b"/drop":  # keep-alive promised, then dropped: as idle servers do
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.server_ctx)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with Server(tmp_path) as s:
        yield s


def client_for(server: Server, timeout: float = 10.0) -> httpx.AsyncClient:
    return graph_http_client(
        server.client_ctx,
        httpx.Timeout(timeout),
        httpx.Limits(max_connections=4, max_keepalive_connections=2),
    )


async def test_a_streamed_body_arrives_whole_over_tls_on_one_kept_connection(
    server: Server,
) -> None:
    async with client_for(server) as http:
        assert isinstance(http._transport, AsyncioHTTPTransport)
        for _ in range(2):
            received = bytearray()
            async with http.stream("GET", f"{server.url}/body") as resp:
                assert resp.status_code == 200
                async for piece in resp.aiter_bytes(1024 * 1024):
                    received += piece
            assert bytes(received) == BODY
        assert (await http.get(f"{server.url}/small")).content == b"ok"
    assert server.connections == 1  # keep-alive: the pool reused the connection


async def test_a_connection_the_server_dropped_is_not_reused(server: Server) -> None:
    async with client_for(server) as http:
        assert (await http.get(f"{server.url}/drop")).content == b"ok"
        await asyncio.sleep(0.05)
        assert (await http.get(f"{server.url}/small")).content == b"ok"
    assert server.connections == 2


async def test_timeouts_and_refusals_are_httpx_errors(server: Server) -> None:
    async with client_for(server, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{server.url}/slow")
        with pytest.raises(httpx.ConnectError):
            await http.get("https://127.0.0.1:9/")  # discard port: nothing listens


async def test_an_untrusted_certificate_is_refused(server: Server) -> None:
    async with graph_http_client(
        ssl.create_default_context(), httpx.Timeout(5), httpx.Limits(max_connections=1)
    ) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{server.url}/small")


@pytest.mark.parametrize("root", ["https://graph.microsoft.com", "https://127.0.0.1:8443"])
async def test_graph_and_version_paths_read_as_httpx_does(root: str) -> None:
    async with httpx.AsyncClient() as http:
        transport = Transport(
            graph_url=f"{root}/v1.0",
            tokens=None,  # type: ignore[arg-type]  # never asked: no request is sent
            limiter=InProcessLimiter(),
            tenant_key="t",
            http=http,
        )
        urls = [
            f"{root}/v1.0/users/a%40b.com/messages/AAMk%2Fx%3D%3D/$value",
            f"{root}/v1.0/users/x/mailFolders/delta?$select=a&b=%2F",
            f"{root}/beta/sites/a,b,c/lists",
            f"{root}/v1.0/users/x y/messages",
            f"{root}/v1.0/users/%C3%BC/drive/root:/a.b/c:/content",
            f"{root}/v1.0/a/../b",
            f"{root}/v1.0/a/./b",
            f"{root}/v1.0/a#frag",
            f"{root}/",
            root.upper() + "/v1.0/users/x",
            "https://other.example/v1.0/users/x",
            "https://graph.microsoft.com.evil.example/v1.0/users/x",
        ]
        for url in urls:
            parsed = httpx.URL(url)
            expected = parsed.path if transport.same_origin(url) else ""
            assert transport.graph_path(url) == expected, url
            if is_absolute(url):  # as Graph writes them (a scheme in capitals is a path here)
                assert transport.version_path(url) == parsed.path, url
