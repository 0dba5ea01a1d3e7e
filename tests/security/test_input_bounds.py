"""Every input is bounded before it is read: bodies, query strings, headers, Range values;
and every backed-up name can be downloaded, whatever characters it holds."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from safekeep.backup.context import open_repository
from safekeep.disposition import safe_filename
from safekeep.runtime import Runtime
from safekeep.tenants.models import Item, ItemVersion, utcnow
from tests.api.conftest import MspWorld, fingerprint
from tests.security.conftest import PROBLEM, Live

MiB = 1024 * 1024
ATTACK_BYTES = 20 * MiB


def raw_exchange(base: str, head: bytes, body: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send a request head and part of a body on a raw socket, then read the answer: with
    ``body`` shorter than the declared length, an answer proves the server did not wait."""
    address = urlsplit(base)
    started = time.monotonic()
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                head_part, _, rest = answer.partition(b"\r\n\r\n")
                lengths = [
                    int(line.split(b":", 1)[1])
                    for line in head_part.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if lengths and len(rest) >= lengths[0]:
                    break
    return answer, time.monotonic() - started


def assert_problem(r: httpx.Response, status: int, slug: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/" + slug)
    assert r.json()["status"] == status


# --- bodies -------------------------------------------------------------------------------


def test_an_anonymous_20_mb_body_is_refused_from_its_content_length(live: Live) -> None:
    """The server answers 413 after 64 KiB of a declared 20 MB: it read nothing more, and
    did not get as far as authentication (no key is sent)."""
    head = (
        "POST /v1/tenants HTTP/1.1\r\nHost: safekeep\r\nContent-Type: application/json\r\n"
        f"Content-Length: {ATTACK_BYTES}\r\n\r\n"
    ).encode()
    answer, elapsed = raw_exchange(live.base, head, b" " * 65536)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer[:200]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in headers.lower()
    assert b"connection: close" in headers.lower()
    problem = json.loads(body)
    assert problem["type"].endswith("/payload-too-large") and problem["status"] == 413
    print(f"413 for a declared 20 MB body after {elapsed * 1000:.0f} ms")


def test_an_anonymous_20_mb_body_sent_whole_gets_413(live: Live) -> None:
    started = time.monotonic()
    r = httpx.post(
        f"{live.base}/v1/tenants",
        content=b"{" + b" " * ATTACK_BYTES + b"}",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert_problem(r, 413, "payload-too-large")
    print(f"413 for a 20 MB body sent whole in {elapsed * 1000:.0f} ms")
    assert httpx.get(f"{live.base}/healthz", timeout=30).status_code == 200


def test_a_chunked_body_is_cut_off_once_past_the_limit(live: Live) -> None:
    """No Content-Length: the body is counted as it arrives and the 413 is answered once
    the count passes 1 MiB; the client is not made to send the rest."""
    pulled = 0

    def chunks() -> Iterator[bytes]:
        nonlocal pulled
        for _ in range(20):
            pulled += 1
            yield b" " * MiB

    r = httpx.post(
        f"{live.base}/v1/tenants",
        content=chunks(),
        headers={"Content-Type": "application/json", **live.world.a.msp.headers},
        timeout=30,
    )
    assert_problem(r, 413, "payload-too-large")
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert pulled < 20, "the server read the whole body"


def test_a_body_within_the_limit_is_still_served(live: Live) -> None:
    r = httpx.post(
        f"{live.base}/v1/webhooks",
        json={
            "url": "https://hooks.example.com/x",
            "events": ["export.ready"],
            "description": "x" * 400,
        },
        headers=live.world.a.msp.headers,
        timeout=30,
    )
    assert r.status_code == 201, r.text


# --- U+0000 (NUL), which PostgreSQL's text cannot hold ---------------------------------------


async def test_nul_in_any_text_sent_is_a_4xx_and_changes_nothing(live: Live) -> None:
    """A string carrying U+0000 reached PostgreSQL and failed there as a 500: from an MSP's
    key (a tenant's or a key's name), and from anyone at all (Graph's notification
    endpoints, the consent callback, any query or path). Each is now refused before any
    work, and a string that only looks like the escape (a backslash, then "u0000") is text."""
    a = live.world.a
    tenant = f"/v1/tenants/{a.tenant.id}"
    before = await fingerprint(live.world.runtime)
    bodies = [  # (method, path, JSON with the escape written as JSON writes U+0000, status)
        ("POST", "/v1/tenants", '{"name": "Contoso\\u0000"}', 422),
        ("PATCH", tenant, '{"name": "a\\u0000b"}', 422),
        ("POST", "/v1/api-keys", '{"name": "\\u0000", "scopes": ["read"]}', 422),
        (
            "POST",
            "/v1/webhooks",
            '{"url": "https://hooks.example.com/x", "events": ["export.ready"],'
            ' "description": "x\\u0000"}',
            422,
        ),
        ("POST", "/v1/graph/notifications", '{"value": [{"subscriptionId": "\\u0000"}]}', 400),
        (
            "POST",
            "/v1/graph/lifecycle",
            '{"value": [{"subscriptionId": "s", "clientState": '
            '"\\u0000", "lifecycleEvent": "missed"}]}',
            400,
        ),
    ]
    queries = [
        "/v1/audit-events?action=%00",
        f"{tenant}/accounts?q=a%00",
        f"{tenant}/search?q=invoice%00",
        "/v1/consent/callback?state=a%00b&code=c",
        "/v1/tenants/%00",
    ]
    async with live.client() as client:
        for method, path, body, status in bodies:
            headers = {**a.msp.headers, "content-type": "application/json"}
            r = await client.request(method, path, content=body, headers=headers)
            assert r.status_code == status, (path, r.text)
            assert r.headers["content-type"] == PROBLEM
        for path in queries:
            r = await client.get(path, headers=a.msp.headers)
            assert_problem(r, 400, "bad-request")
            assert "U+0000" in r.json()["detail"]
        assert await fingerprint(live.world.runtime) == before
        # A backslash and "u0000" are only text.
        r = await client.post("/v1/tenants", content='{"name": "\\\\u0000"}', headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "\\u0000"


async def test_deeply_nested_json_is_a_4xx_and_changes_nothing(live: Live) -> None:
    """An array nested a few hundred deep in a field passed the JSON parser and overflowed
    the recursive NUL check (a 500, from any key that may write); deeper still, the parser
    itself gives up. Every depth is now a 4xx."""
    a = live.world.a
    before = await fingerprint(live.world.runtime)
    writes = [
        ("POST", "/v1/tenants", "name"),
        ("PATCH", f"/v1/tenants/{a.tenant.id}", "name"),
        ("POST", "/v1/api-keys", "name"),
    ]
    async with live.client() as client:
        for depth in (33, 100, 400, 900, 5000):
            nested = "[" * depth + "]" * depth
            for method, path, field in writes:
                r = await client.request(
                    method,
                    path,
                    content=f'{{"{field}": {nested}}}',
                    headers={**a.msp.headers, "content-type": "application/json"},
                )
                assert r.status_code in (400, 422), (depth, path, r.status_code)
                assert r.headers["content-type"] == PROBLEM
        # Nesting a body's schema allows, within the bound, is still judged by the schema.
        r = await client.post("/v1/tenants", json={"name": [[[]]]}, headers=a.msp.headers)
        assert r.status_code == 422
        assert "nests deeper" not in r.text
    assert await fingerprint(live.world.runtime) == before


# --- instants and positions no datetime or 64-bit integer holds -------------------------------


def _cursor(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_instants_and_positions_past_what_is_stored_are_4xx_and_change_nothing(
    live: Live,
) -> None:
    """ISO 8601 lets an instant near year 1 or 9999 carry an offset whose UTC form no
    datetime can hold, and a page's cursor is base64 of JSON that anyone can rewrite. Each of
    these was a 500 (OverflowError converting to UTC; SQLite refusing a number past 64 bits;
    a lone surrogate it could not encode): each is now refused before any work."""
    a = live.world.a
    tenant = f"/v1/tenants/{a.tenant.id}"
    items = f"{tenant}/accounts/{a.account.id}/items"
    service = a.snapshot.service
    late, early = "9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"
    past_2038 = _cursor({"t": late, "i": str(uuid.uuid4())})
    gets: list[tuple[str, dict[str, str], str]] = [  # (path, query, the parameter named)
        ("/v1/search", {"q": "a", "date_from": late}, "date_from"),
        (f"{tenant}/search", {"q": "a", "at": early}, "at"),
        (f"{tenant}/search", {"q": "a", "date_to": early}, "date_to"),
        (f"{tenant}/snapshots", {"since": late}, "since"),
        (f"{tenant}/snapshots", {"until": early}, "until"),
        (items, {"service": service, "at": late}, "at"),
        ("/v1/search", {"q": "a", "size_min": str(2**63)}, "size_min"),
        (f"{tenant}/search", {"q": "a", "size_max": str(10**30)}, "size_max"),
    ]
    cursors = [
        ("/v1/tenants", {"cursor": past_2038}),
        (f"{tenant}/jobs", {"cursor": past_2038}),
        (f"{tenant}/snapshots", {"cursor": past_2038}),
        (items, {"service": service, "cursor": _cursor({"n": "\ud800", "i": str(a.item.id)})}),
    ]
    bodies = [
        (f"{tenant}/restores", {"at": late, "scope": {"type": "tenant"}}),
        (f"{tenant}/exports", {"at": early, "scope": {"type": "tenant"}}),
        ("/v1/api-keys", {"name": "x", "scopes": ["read"], "expires_at": late}),
    ]
    before = await fingerprint(live.world.runtime)
    async with live.client() as client:
        for path, query, name in gets:
            r = await client.get(path, params=query, headers=a.msp.headers)
            assert r.status_code == 422, (path, query, r.text)
            assert r.headers["content-type"] == PROBLEM
            assert name in json.dumps(r.json()), r.text
        for path, query in cursors:
            r = await client.get(path, params=query, headers=a.msp.headers)
            assert_problem(r, 400, "invalid-cursor")
        for path, body in bodies:
            r = await client.post(path, json=body, headers=a.msp.headers)
            assert r.status_code == 422, (path, r.text)
            assert "when read in UTC" in r.text
        assert await fingerprint(live.world.runtime) == before
        # The ends of the range themselves, in UTC, are instants like any other.
        r = await client.get(
            f"{tenant}/snapshots",
            params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"},
            headers=a.msp.headers,
        )
        assert r.status_code == 200, r.text
        assert a.snapshot.id in {uuid.UUID(s["id"]) for s in r.json()["items"]}


async def test_a_folder_filter_past_its_bound_is_422_naming_it(live: Live) -> None:
    """A folder filter OpenSearch would refuse (a prefix of about 1,000 characters once case
    and accents are folded) is refused by the API first, naming ``folder``, whether it is long
    as sent or only once folded; the longest allowed one is searched."""
    a = live.world.a
    tenant = f"/v1/tenants/{a.tenant.id}"
    async with live.client() as client:
        for path in ("/v1/search", f"{tenant}/search"):
            for folder in ("/" + "a" * 900, "/" + "\ufb03" * 350):  # "ﬃ" folds to "ffi"
                r = await client.get(path, params={"folder": folder}, headers=a.msp.headers)
                assert r.status_code == 422, (path, len(folder), r.text)
                assert r.headers["content-type"] == PROBLEM
                assert "folder" in json.dumps(r.json()), r.text
            r = await client.get(path, params={"folder": "/" + "a" * 899}, headers=a.msp.headers)
            assert r.status_code == 200, r.text


# --- query strings and headers ------------------------------------------------------------


def test_a_huge_query_string_is_414(live: Live) -> None:
    r = httpx.get(f"{live.base}/v1/tenants", params={"cursor": "A" * 20_000}, timeout=30)
    assert_problem(r, 414, "uri-too-long")


def test_huge_headers_are_refused(live: Live) -> None:
    r = httpx.get(f"{live.base}/v1/tenants", headers={"X-Padding": "a" * 40_000}, timeout=30)
    assert_problem(r, 431, "request-header-fields-too-large")
    # far beyond: uvicorn refuses the head itself (400, connection closed) without
    # buffering it; the client may see the reset while still writing. The server stays up.
    try:
        r = httpx.get(f"{live.base}/v1/tenants", headers={"X-Padding": "a" * 4 * MiB}, timeout=10)
    except httpx.TransportError:
        pass
    else:
        assert r.status_code == 400
    assert httpx.get(f"{live.base}/healthz", timeout=30).status_code == 200


def test_a_head_that_never_ends_is_cut_at_the_cap(live: Live) -> None:
    """Headers trickled in 4 KiB writes without ever ending the head: the server answers 400
    and closes once the head passes MAX_REQUEST_HEAD_BYTES (what the client managed to write
    meanwhile sits in the kernel's socket buffers, so it proves nothing), and stays up."""
    from safekeep.api.serving import MAX_REQUEST_HEAD_BYTES

    address = urlsplit(live.base)
    sent = 0
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: safekeep\r\n")
        line = b"X-Padding: " + b"a" * 4000 + b"\r\n"
        try:
            while sent < 4 * MAX_REQUEST_HEAD_BYTES:
                sock.sendall(line)
                sent += len(line)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert httpx.get(f"{live.base}/healthz", timeout=30).status_code == 200


def test_heads_are_counted_per_request_on_a_kept_alive_connection(live: Live) -> None:
    """Many requests on one connection whose heads add up to more than the cap all pass: the
    count starts again with each request; and a body does not count as head."""
    from safekeep.api.serving import MAX_REQUEST_HEAD_BYTES

    padding = {"X-Padding": "a" * 8000}
    with httpx.Client(base_url=live.base, timeout=30) as client:
        for _ in range(2 * MAX_REQUEST_HEAD_BYTES // 8000):
            assert client.get("/healthz", headers=padding).status_code == 200
        r = client.post("/v1/tenants", content=b"{" + b" " * 200_000 + b"}")
        assert r.status_code in (401, 422)  # read past the head, then refused by the app


# --- time: a client that stops sending in the middle of a request --------------------------


def _until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and how long that took (the
    socket's timeout makes a server that never closes fail the test)."""
    started = time.monotonic()
    sock.settimeout(limit)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer, time.monotonic() - started


def test_a_head_that_stops_coming_is_408_and_closed(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One byte holds no connection: a head still incomplete ``HEAD_SECONDS`` after its first
    byte is answered 408 and closed, even when its bytes keep trickling in; the server
    stays up. (A shorter deadline than the deployed one, to keep the test quick.)"""
    from safekeep.api import serving

    monkeypatch.setattr(serving, "HEAD_SECONDS", 1.0)
    address = urlsplit(live.base)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"G")
        answer, waited = _until_closed(sock, 10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.9 <= waited < 5
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: safekeep\r\n")
        started = time.monotonic()
        try:
            while time.monotonic() - started < 5:
                sock.sendall(b"X-Slow: 1\r\n")  # a header every 0.2 s, never the blank line
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, _ = _until_closed(sock, 10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 5
    assert httpx.get(f"{live.base}/healthz", timeout=30).status_code == 200


def test_a_body_that_stops_coming_closes_the_connection(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body whose bytes stop for ``BODY_IDLE_SECONDS`` ends the connection (the route
    never runs: no tenant is made); one that keeps coming, however slowly, is served."""
    from safekeep.api import serving

    monkeypatch.setattr(serving, "BODY_IDLE_SECONDS", 1.0)
    address = urlsplit(live.base)
    key = live.world.a.msp.headers["Authorization"]
    body = json.dumps({"name": "Slow client"}).encode()
    head = (
        f"POST /v1/tenants HTTP/1.1\r\nHost: safekeep\r\nAuthorization: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(head + body[:5])
        answer, waited = _until_closed(sock, 10)
    assert answer == b"" and 0.9 <= waited < 5
    tenants = httpx.get(f"{live.base}/v1/tenants", headers={"Authorization": key}).json()
    assert "Slow client" not in {t["name"] for t in tenants["items"]}

    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(head)
        for n in range(0, len(body), 6):  # 0.6 s between pieces: 2.4 s for the body
            sock.sendall(body[n : n + 6])
            time.sleep(0.6)
        [(status, answered)] = _read_answers(sock, 1)
    assert status.startswith(b"HTTP/1.1 201"), status
    assert json.loads(answered)["name"] == "Slow client"


async def test_a_client_that_stops_reading_is_dropped(
    live: Live, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that asks for a large answer with a tiny receive window and never reads
    would make the server hold what the kernel cannot take, for ever: once the answer has
    waited ``SEND_IDLE_SECONDS`` with the client taking nothing, the connection is dropped.
    A client that reads, however late within the deadline, gets the whole answer. (8 MB:
    on loopback the kernel takes a few MB itself; a 1 s deadline to keep the test quick.)"""
    from safekeep.api import serving

    monkeypatch.setattr(serving, "SEND_IDLE_SECONDS", 1.0)
    world = live.world.a
    data = os.urandom(8 * MiB)
    item_id = await add_file(runtime, world, "large.bin", data)
    address = urlsplit(live.base)
    key = world.msp.headers["Authorization"]
    request = (
        f"GET {content_url(world, item_id)} HTTP/1.1\r\nHost: safekeep\r\n"
        f"Authorization: {key}\r\n\r\n"
    ).encode()

    def fetch(wait: float) -> tuple[bytes, bool]:
        """(what arrived, whether the server ended the connection)."""
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((address.hostname, address.port))
            sock.sendall(request)
            time.sleep(wait)
            sock.settimeout(2)
            answer = b""
            try:
                while chunk := sock.recv(1 << 20):
                    answer += chunk
            except ConnectionResetError:
                return answer, True
            except TimeoutError:
                return answer, False
            return answer, True

    answer, ended = await asyncio.to_thread(fetch, 4.0)
    assert ended and len(answer) < len(data)
    answer, ended = await asyncio.to_thread(fetch, 0.5)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == data and not ended
    async with httpx.AsyncClient(base_url=live.base, timeout=30) as client:
        assert (await client.get("/healthz")).status_code == 200


def _read_answers(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` (head, body) answers from a kept-alive connection, framed by Content-Length
    (a 304 or a 100 has no body to read)."""
    buffer = b""
    answers: list[tuple[bytes, bytes]] = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, (answers, buffer)
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        if head.startswith((b"HTTP/1.1 304", b"HTTP/1.1 100")):
            length = 0
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, (answers, buffer)
            buffer += chunk
        answers.append((head, buffer[:length]))
        buffer = buffer[length:]
    return answers


def test_answers_whole_in_order_on_one_connection(live: Live) -> None:
    """The server sends a response's head with its body (one write): every kind of answer
    still arrives whole and in order on a kept-alive connection: a JSON body, a HEAD answer
    (a head and no body), a 304, a 100 Continue before the final answer, and pipelined
    requests answered one after another."""
    address = urlsplit(live.base)
    key = live.world.a.msp.headers["Authorization"]
    tenant = f"/v1/tenants/{live.world.a.tenant.id}"
    etag = httpx.get(live.base + tenant, headers={"Authorization": key}).headers["etag"]
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(f"GET {tenant} HTTP/1.1\r\nHost: s\r\nAuthorization: {key}\r\n\r\n".encode())
        [(head, body)] = _read_answers(sock, 1)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["id"] == str(
            live.world.a.tenant.id
        )
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: s\r\n\r\n")
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk
            buffer += chunk
        assert buffer.startswith(b"HTTP/1.1 ") and buffer.endswith(b"\r\n\r\n"), buffer
        conditional = (
            f"GET {tenant} HTTP/1.1\r\nHost: s\r\nAuthorization: {key}\r\n"
            f"If-None-Match: {etag}\r\n\r\n"
        )
        sock.sendall(conditional.encode())
        [(head, body)] = _read_answers(sock, 1)
        assert head.startswith(b"HTTP/1.1 304") and body == b""
        payload = b'{"name": "Continued"}'
        sock.sendall(
            (
                f"PATCH {tenant} HTTP/1.1\r\nHost: s\r\nAuthorization: {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Expect: 100-continue\r\n\r\n"
            ).encode()
        )
        [(head, _)] = _read_answers(sock, 1)
        assert head.startswith(b"HTTP/1.1 100"), head
        sock.sendall(payload)
        [(head, body)] = _read_answers(sock, 1)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["name"] == "Continued"
        pipelined = b"".join(
            f"GET {path} HTTP/1.1\r\nHost: s\r\nAuthorization: {key}\r\n\r\n".encode()
            for path in (tenant, "/healthz", "/v1/nowhere", tenant)
        )
        sock.sendall(pipelined)
        answers = _read_answers(sock, 4)
        assert [h.split(b" ", 2)[1] for h, _ in answers] == [b"200", b"200", b"404", b"200"]
        assert json.loads(answers[0][1]) == json.loads(answers[3][1])


# --- Range --------------------------------------------------------------------------------


def content_url(world: MspWorld, item_id: object) -> str:
    return f"/v1/tenants/{world.tenant.id}/accounts/{world.account.id}/items/{item_id}/content"


@pytest.mark.parametrize(
    "value",
    [
        "bytes=" + "9" * 5000 + "-",
        "bytes=0-" + "9" * 5000,
        "bytes=-" + "9" * 5000,
        "bytes=" + "1" * 19 + "-",
    ],
    ids=["start", "end", "suffix", "19-digits"],
)
def test_a_range_with_absurd_digits_is_416(live: Live, value: str) -> None:
    world = live.world.a
    r = httpx.get(
        live.base + content_url(world, world.item.id),
        headers={**world.msp.headers, "Range": value},
        timeout=30,
    )
    assert_problem(r, 416, "range-not-satisfiable")
    assert r.headers["content-range"] == f"bytes */{world.version.size}"


def test_an_ordinary_range_still_works(live: Live) -> None:
    world = live.world.a
    r = httpx.get(
        live.base + content_url(world, world.item.id),
        headers={**world.msp.headers, "Range": "bytes=0-4"},
        timeout=30,
    )
    assert r.status_code == 206 and r.content == b"hello"


# --- download names -----------------------------------------------------------------------

NAMES = [
    "report\r\nSet-Cookie: stolen=1.txt",
    "..\\..\\Windows\\System32\\evil.dll",
    "../../etc/passwd",
    'quote " percent % semicolon ; .txt',
    "Résumé – 2024 ✓.docx",
    "\u202eexe.txt",  # right-to-left override: would show as "txt.exe"
    "bell\x07 escape\x1b[31m tab\t.txt",
    "...",
]


async def add_file(runtime: Runtime, world: MspWorld, name: str, data: bytes) -> str:
    repo = await open_repository(runtime, world.tenant)
    content = await repo.put_bytes(data)
    now = utcnow()
    async with runtime.db.session() as session:
        item = Item(
            tenant_id=world.tenant.id,
            account_id=world.account.id,
            service="onedrive",
            external_id=f"odd-{len(data)}-{abs(hash(name))}",
            kind="file",
        )
        session.add(item)
        await session.flush()
        session.add(
            ItemVersion(
                item_id=item.id,
                tenant_id=world.tenant.id,
                account_id=world.account.id,
                service="onedrive",
                kind="file",
                first_seq=1,
                valid_from=now,
                name=name,
                parent_external_id=world.folder.external_id,
                size=content.size,
                content=content.to_json(),
                content_hash=content.sha256,
                meta={"mime_type": "application/octet-stream"},
            )
        )
    return str(item.id)


async def test_every_name_downloads_with_a_safe_disposition(live: Live, runtime: Runtime) -> None:
    world = live.world.a
    items = {
        name: await add_file(runtime, world, name, f"bytes of {i}".encode())
        for i, name in enumerate(NAMES)
    }
    async with live.client() as api:
        for i, (name, item_id) in enumerate(items.items()):
            r = await api.get(content_url(world, item_id), headers=world.msp.headers)
            assert r.status_code == 200, (name, r.text)
            assert r.content == f"bytes of {i}".encode()
            assert "set-cookie" not in r.headers
            disposition = r.headers["content-disposition"]
            assert not any(c in disposition for c in "\r\n\x07\x1b\t")
            assert disposition.isascii()
            plain = disposition.split('filename="', 1)[1].split('"', 1)[0]
            assert not any(c in plain for c in '/\\"%;'), disposition
            assert not plain.startswith(".")
            exact = unquote(disposition.split("filename*=UTF-8''", 1)[1])
            assert exact == safe_filename(name)
            assert "/" not in exact and "\\" not in exact
            assert not any(ord(c) < 0x20 or c == "\u202e" for c in exact)
    # the printable parts of a name survive in filename*
    assert safe_filename("Résumé – 2024 ✓.docx") == "Résumé – 2024 ✓.docx"
    assert safe_filename("..\\..\\Windows\\System32\\evil.dll") == "_.._Windows_System32_evil.dll"
