"""The address the audit log records for a caller: an IP address or nothing."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from safekeep.api.deps import client_ip


def request_from(host: str | None) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [],
        "client": (host, 443) if host is not None else None,
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("host", "recorded"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:DB8:0:0::1", "2001:db8::1"),  # one spelling for one address
        ("fe80::1%eth0", "fe80::1"),  # a zone is the server's interface, not the caller's
        (None, None),
        ("", None),
        # What a client wrote into X-Forwarded-For, taken as its address by a proxy setup
        # that trusts it: not an address, so not recorded (the longest failed the audit
        # row's 64-character column, and with it every audited request).
        ("admin@example.com", None),
        ("1.2.3.4, 5.6.7.8", None),
        ("x" * 200, None),
        ("fe80::1%" + "x" * 200, "fe80::1"),
    ],
)
async def test_only_an_ip_address_is_recorded(host: str | None, recorded: str | None) -> None:
    assert await client_ip(request_from(host)) == recorded
