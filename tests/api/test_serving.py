"""The API's process as deployed (``api_command``: the options the Helm chart's api pods
pass to uvicorn), seen from a client's connection."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from safekeep.settings import Settings
from tests.fixtures.live import free_port, serve_api, serve_app

UVICORN_DEFAULT_KEEP_ALIVE = 5.0


def test_an_idle_connection_outlives_uvicorns_default_keep_alive(
    scaleout_settings: Settings, tmp_path: Path
) -> None:
    """A proxy in front of the API reuses its idle connections for up to a minute. A
    connection left idle past uvicorn's default keep-alive still serves the next request,
    on the same socket (``http.client`` does not reconnect a socket the server closed: the
    request would fail with ``RemoteDisconnected``)."""
    port = free_port()
    with serve_api(scaleout_settings, port, tmp_path / "api.log"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/healthz")
            first = connection.getresponse()
            first.read()
            assert first.status == 200 and not first.will_close
            socket_used = connection.sock
            time.sleep(UVICORN_DEFAULT_KEEP_ALIVE + 1.5)
            connection.request("GET", "/healthz")
            again = connection.getresponse()
            again.read()
            assert again.status == 200
            assert connection.sock is socket_used
        finally:
            connection.close()


def test_a_late_head_behind_a_slow_answer_is_timed_from_that_answers_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pipelined client whose next head stops halfway while the first answer is still
    being made: the head's clock starts once that answer is out, so the answer comes first
    and whole, then the 408 (a 408 written before it would be read as its answer).
    uvicorn with the API's protocol, serving a stand-in route that takes 1.5 s; the head
    deadline shortened to 0.5 s."""
    from safekeep.api import serving

    monkeypatch.setattr(serving, "HEAD_SECONDS", 0.5)

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(1.5)
        headers = [(b"content-length", b"11")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"slow answer"})

    with serve_app(slow, **serving.uvicorn_options()) as base:
        address = urlsplit(base)
        client = socket.create_connection((address.hostname, address.port), timeout=10)
        with client:
            client.sendall(b"GET /slow HTTP/1.1\r\nHost: s\r\n\r\nGET /next HTTP/1.1\r\nHo")
            started = time.monotonic()
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
            took = time.monotonic() - started
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), answer[:300]
    assert rest.startswith(b"slow answer") and b"HTTP/1.1 408" in rest, answer[:300]
    assert 1.9 <= took < 5, took
