"""HEAD on every GET route: the GET's status and headers, no body, the same refusals (another
MSP's ids, a tenant-limited key outside its tenants, no key), nothing changed; and through
uvicorn, a kept-alive connection that carries on after a HEAD."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route as StarletteRoute

from safekeep.api import serving
from safekeep.api.app import create_app
from safekeep.api.head import HeadAsGet
from tests.api.conftest import World, fingerprint
from tests.api.routes import ROUTES, Route
from tests.fixtures.live import serve_app

GETS = [r for r in ROUTES if r.method == "GET"]
SAME_HEADERS = ("content-type", "content-length", "etag", "cache-control", "retry-after")


async def _head_and_get(
    client: httpx.AsyncClient, route: Route, ids: dict[str, str], headers: dict[str, str]
) -> tuple[httpx.Response, httpx.Response]:
    url = route.url(ids)
    head = await client.head(url, params=route.query, headers=headers)
    get = await client.get(url, params=route.query, headers=headers)
    return head, get


async def test_head_is_every_get_without_its_body_and_changes_nothing(
    module_client: httpx.AsyncClient, module_world: World
) -> None:
    world = module_world
    limited = await world.key(["admin"], tenant_ids=[world.a.tenant.id])
    outside = {**world.a.ids(), "tenant_id": str(world.a.other_tenant.id)}
    before = await fingerprint(world.runtime)
    heads: list[tuple[Route, str, httpx.Response]] = []
    for route in GETS:
        cases = [
            ("owner", world.a.ids(), world.a.msp.headers),
            ("anonymous", world.a.ids(), {}),
        ]
        if route.ids:
            cases.append(("another MSP's ids", world.b.ids(), world.a.msp.headers))
            unknown = {k: str(uuid.uuid4()) for k in world.a.ids()}
            cases.append(("unknown ids", unknown, world.a.msp.headers))
        if "tenant_id" in route.ids:
            cases.append(("a key limited to another tenant", outside, limited))
        for case, ids, headers in cases:
            head = await module_client.head(route.url(ids), params=route.query, headers=headers)
            heads.append((route, case, head))
            assert head.content == b"", (route, case)
    # HEADs alone wrote nothing: no download audited, no job, no key touched
    after = await fingerprint(world.runtime)
    assert after.counts == before.counts and after.tenants == before.tenants

    answered: dict[int, int] = {}
    for route, case, head in heads:
        compared = {"owner": world.a.ids(), "another MSP's ids": world.b.ids()}.get(case)
        if compared is None:  # anonymous, unknown ids, or outside the key's tenants: refused
            assert head.status_code in (401, 404), (route, case, head.status_code)
            assert head.headers["content-type"] == "application/problem+json"
            continue
        get = await module_client.get(
            route.url(compared), params=route.query, headers=world.a.msp.headers
        )
        assert head.status_code == get.status_code, (route, case, head.status_code, get.text)
        for name in SAME_HEADERS:
            assert head.headers.get(name) == get.headers.get(name), (route, case, name)
        if "content-length" in get.headers:
            assert int(get.headers["content-length"]) == len(get.content)
        answered[head.status_code] = answered.get(head.status_code, 0) + 1
    assert answered.get(200, 0) >= len(GETS) - 5, answered  # most routes really answer
    # this world's export is "ready" with no ZIP behind it: both methods say so, before any
    # answer starts (not a 200 cut off after its head)
    download = f"/v1/exports/{world.a.export.id}/download"
    for method in ("HEAD", "GET"):
        r = await module_client.request(method, download, headers=world.a.msp.headers)
        assert r.status_code == 410 and r.headers["content-type"] == "application/problem+json"
    assert answered.get(404, 0) >= len([r for r in GETS if r.ids]), answered


async def test_a_head_through_uvicorn_leaves_the_connection_usable(module_world: World) -> None:
    """The server sends no body after a HEAD's headers (a client reading one would take it for
    the next answer), and a HEAD on a path that only takes POST is a 405 without HEAD in its
    ``Allow``."""
    world = module_world
    app = create_app(world.runtime.settings)
    with serve_app(app, **serving.uvicorn_options()) as base:
        tenant = f"/v1/tenants/{world.a.tenant.id}"
        auth = world.a.msp.headers["Authorization"]
        host, port = urlsplit(base).hostname, urlsplit(base).port
        assert host and port
        with socket.create_connection((host, port), timeout=10) as sock:
            request = f"{{}} {tenant} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
            sock.sendall(request.format("HEAD").encode() + request.format("GET").encode())
            received = b""
            while received.count(b"HTTP/1.1 ") < 2 or not received.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert rest.startswith(b"HTTP/1.1 200 "), rest[:200]  # nothing between the two answers
        body = rest.partition(b"\r\n\r\n")[2]  # after the GET's own head
        length = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        assert int(length) == len(body) > 0
        async with httpx.AsyncClient(base_url=base) as client:
            r = await client.head("/v1/billing/stripe/webhook")
            assert r.status_code == 405 and r.content == b""
            assert "HEAD" not in r.headers["allow"] and "POST" in r.headers["allow"]
            r = await client.head("/readyz")
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"


async def test_a_route_that_streams_for_a_head_is_refused_not_read_to_the_end() -> None:
    """The rule the two download routes keep (ask ``head_only`` before opening a stream),
    enforced: a route that forgets fails on its first chunk instead of reading a whole
    export for nobody."""
    read: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for n in range(1000):
            read.append(n)
            yield b"x" * 1024

    async def download(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), headers={"Content-Length": str(1024 * 1000)})

    app = HeadAsGet(Starlette(routes=[StarletteRoute("/download", download)]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(RuntimeError, match="must ask head_only"):
            await client.head("/download")
        assert read == [0]
        r = await client.get("/download")
        assert r.status_code == 200 and len(r.content) == 1024 * 1000
