"""How uvicorn serves the API, the same from ``safekeep serve``, the Helm chart and the tests.

The h11 protocol implementation is chosen because it bounds what the server buffers before
the application sees a request: the request line and headers together may not pass
``MAX_REQUEST_HEAD_BYTES`` (a larger head is refused by uvicorn with a 400 and the connection
closed). The ``RequestLimits`` middleware then applies the finer limits (query 414, headers
431, body 413) with problem+json answers. The Helm chart passes the same two options
(``--http h11 --h11-max-incomplete-event-size``).
"""

from __future__ import annotations

import sys
from typing import Any

MAX_REQUEST_HEAD_BYTES = 64 * 1024


def uvicorn_options() -> dict[str, Any]:
    return {"http": "h11", "h11_max_incomplete_event_size": MAX_REQUEST_HEAD_BYTES}


def api_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The API alone as its own process, with the options the Helm chart passes: what tests
    and benchmarks start when they want the API as it is deployed."""
    options = uvicorn_options()
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
        options["http"],
        "--h11-max-incomplete-event-size",
        str(options["h11_max_incomplete_event_size"]),
    ]
