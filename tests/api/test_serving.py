"""The API's process as deployed (``api_command``: the options the Helm chart's api pods
pass to uvicorn), seen from a client's connection."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from safekeep.settings import Settings
from tests.fixtures.live import free_port, serve_api

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
