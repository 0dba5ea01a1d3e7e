"""Webhooks reach only the public internet: an MSP cannot turn our workers into a scanner of
the deployment's own network.

Every "must not be sent" is proven with a real listener on the address the URL names: it
counts TCP connections, and must see none. A control in each group shows the same listener
does see the delivery when private targets are allowed, so the zero is not an accident.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from safekeep.runtime import Runtime
from safekeep.settings import Environment
from safekeep.tenants import outbox
from safekeep.tenants.scope import system_principal
from safekeep.tenants.webhook import service as webhooks
from safekeep.tenants.webhook.target import address_refusal, embedded_ipv4
from tests.security.conftest import PROBLEM, Deliver, Live

NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Listener:
    """A TCP listener that counts connections and answers each request with ``answer``."""

    def __init__(self, host: str = "127.0.0.1", answer: bytes = NO_CONTENT) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.answer = answer
        self.connections = 0
        self.heads: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    head, _, body = data.partition(b"\r\n\r\n")
                    self.heads.append(head.decode("latin-1"))
                    length = next(
                        (
                            int(line.split(b":", 1)[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        0,
                    )
                    while len(body) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                    conn.sendall(self.answer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


@pytest.fixture
def listener6() -> Iterator[Listener]:
    try:
        found = Listener("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    yield found
    found.close()


def host_of(head: str) -> str:
    return next(
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("host:")
    )


async def stored_endpoint(runtime: Runtime, msp_id: uuid.UUID, url: str, **overrides: Any) -> str:
    """An endpoint row as one accepted before this check existed, or whose name resolved
    elsewhere then: created by the service with private targets allowed. It hears
    ``export.ready``, which the world's own endpoints do not."""
    settings = runtime.settings.model_copy(
        update={"webhook_allow_private_targets": True, **overrides}
    )
    async with runtime.db.session() as session:
        endpoint, _secret = await webhooks.create_endpoint(
            session,
            system_principal(msp_id),
            settings,
            url=url,
            events=["export.ready"],
            description=None,
        )
    return str(endpoint.id)


async def emit(runtime: Runtime, msp_id: uuid.UUID) -> list[str]:
    with outbox.collect():
        async with runtime.db.session() as session:
            deliveries = await webhooks.emit(
                session, msp_id=msp_id, event_type="export.ready", data={"export_id": "e1"}
            )
    return [str(d.id) for d in deliveries]


async def deliveries(live: Live, webhook_id: str) -> list[dict[str, Any]]:
    async with live.client() as api:
        r = await api.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=live.world.a.msp.headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


# --- refused when the endpoint is created -------------------------------------------------

CREATION_REFUSED = [
    "http://127.0.0.1:{port}/hook",
    "http://localhost:{port}/hook",
    "http://LOCALHOST.:{port}/hook",
    "http://api.localhost:{port}/hook",
    "http://\U0001f4a9.localhost:{port}/hook",  # an emoji name (xn--ls8h): still this machine
    "http://0x7f000001:{port}/hook",
    "http://2130706433:{port}/hook",
    "http://017700000001:{port}/hook",
    "http://127.1:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://[::1]:{port}/hook",
    "http://[::127.0.0.1]:{port}/hook",  # IPv4-compatible
    "http://[64:ff9b::127.0.0.1]:{port}/hook",  # NAT64
    "http://[2002:7f00:1::]:{port}/hook",  # 6to4
    "http://0.0.0.0:{port}/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",  # carrier-grade NAT
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://[fec0::1]/hook",
    "http://[ff02::1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
]


@pytest.mark.parametrize("template", CREATION_REFUSED)
async def test_creating_or_moving_a_webhook_to_a_non_public_address_is_refused(
    live: Live, listener: Listener, template: str
) -> None:
    url = template.format(port=listener.port)
    headers = live.world.a.msp.headers
    existing = f"/v1/webhooks/{live.world.a.webhook.id}"
    async with live.client() as api:
        before = (await api.get(existing, headers=headers)).json()
        created = await api.post(
            "/v1/webhooks", json={"url": url, "events": ["export.ready"]}, headers=headers
        )
        moved = await api.patch(existing, json={"url": url}, headers=headers)
        for r in (created, moved):
            assert r.status_code == 422, r.text
            assert r.headers["content-type"] == PROBLEM
            assert r.json()["type"].endswith("/webhook-target-refused")
        listed = (await api.get("/v1/webhooks", headers=headers)).json()["items"]
    assert listed == [before]  # nothing created, the existing one not moved
    assert listener.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/safekeep",
        # Registered names that IDNA 2008 refuses (httpx's ``host`` raised, a 500): judged
        # by their xn-- form, as DNS and TLS see them.
        "https://\U0001f4a9.la/hook",
        "https://\u2603.net/hook",
    ],
)
async def test_a_public_url_is_accepted(live: Live, url: str) -> None:
    async with live.client() as api:
        r = await api.post(
            "/v1/webhooks",
            json={"url": url, "events": ["export.ready"]},
            headers=live.world.a.msp.headers,
        )
        assert r.status_code == 201, r.text
        moved = await api.patch(
            f"/v1/webhooks/{r.json()['id']}", json={"url": url}, headers=live.world.a.msp.headers
        )
        assert moved.status_code == 200, moved.text


# --- refused when a delivery is sent ------------------------------------------------------

SEND_REFUSED = [
    "http://localhost:{port}/hook",  # a name: refused for what it resolves to
    "http://127.0.0.1:{port}/hook",
    "http://0x7f000001:{port}/hook",
    "http://2130706433:{port}/hook",
    "http://127.1:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
]


@pytest.mark.parametrize("template", SEND_REFUSED)
async def test_a_delivery_to_a_non_public_address_never_leaves_the_process(
    live: Live, runtime: Runtime, deliver_as: Deliver, listener: Listener, template: str
) -> None:
    msp_id = live.world.a.msp.id
    webhook_id = await stored_endpoint(runtime, msp_id, template.format(port=listener.port))
    (delivery_id,) = await emit(runtime, msp_id)
    await deliver_as(delivery_id)
    await deliver_as(delivery_id)  # a redelivered message sends nothing either
    assert listener.connections == 0
    (row,) = await deliveries(live, webhook_id)
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("failed", 1, None)
    assert row["last_error"].startswith("refused: ")
    host = httpx.URL(template.format(port=1)).host
    if host in ("127.0.0.1", "::ffff:127.0.0.1"):  # an address written as one: named, with why
        assert "loopback" in row["last_error"]
    else:
        # A name (or a form only the resolver reads as an address): what our DNS answered
        # for it is not the MSP's to read (which names exist inside the deployment, and
        # where), the same words as for a name that does not resolve.
        assert row["last_error"] == (
            f"refused: {host} does not resolve to a public internet address; "
            "webhooks are sent to the public internet only"
        )
    assert row["next_attempt_at"] is None


async def test_a_name_that_does_not_resolve_is_not_told_apart_by_the_resolver_error(
    live: Live, runtime: Runtime, deliver_as: Deliver
) -> None:
    msp_id = live.world.a.msp.id
    webhook_id = await stored_endpoint(runtime, msp_id, "http://no-such-name.invalid/hook")
    (delivery_id,) = await emit(runtime, msp_id)
    await deliver_as(delivery_id)
    (row,) = await deliveries(live, webhook_id)
    assert (row["status"], row["last_error"]) == (
        "pending",  # retried: DNS may be failing for a moment
        "no-such-name.invalid does not resolve to a public internet address",
    )


async def test_an_ipv6_loopback_delivery_never_leaves_the_process(
    live: Live, runtime: Runtime, deliver_as: Deliver, listener6: Listener
) -> None:
    msp_id = live.world.a.msp.id
    webhook_id = await stored_endpoint(runtime, msp_id, f"http://[::1]:{listener6.port}/hook")
    (delivery_id,) = await emit(runtime, msp_id)
    await deliver_as(delivery_id)
    assert listener6.connections == 0
    (row,) = await deliveries(live, webhook_id)
    assert row["status"] == "failed" and "loopback" in row["last_error"]


async def test_allowed_private_target_is_reached_at_the_checked_address_once_resolved(
    live: Live,
    runtime: Runtime,
    deliver_as: Deliver,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: with the development setting on, the same listener hears the delivery;
    the name was resolved once (no second lookup), and Host still names it."""
    resolved: list[Any] = []
    real_getaddrinfo = socket.getaddrinfo

    def spy(host: Any, *args: Any, **kwargs: Any) -> Any:
        resolved.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    msp_id = live.world.a.msp.id
    webhook_id = await stored_endpoint(runtime, msp_id, f"http://localhost:{listener.port}/hook")
    (delivery_id,) = await emit(runtime, msp_id)
    await deliver_as(delivery_id, webhook_allow_private_targets=True)
    assert listener.connections == 1
    assert host_of(listener.heads[0]) == f"localhost:{listener.port}"
    assert listener.heads[0].startswith("POST /hook HTTP/1.1")
    assert [h for h in resolved if h == "localhost"] == ["localhost"]
    (row,) = await deliveries(live, webhook_id)
    assert (row["status"], row["last_status_code"], row["last_error"]) == ("delivered", 204, None)


# --- redirects ----------------------------------------------------------------------------


async def test_redirects_are_not_followed(
    live: Live, runtime: Runtime, deliver_as: Deliver, listener: Listener
) -> None:
    msp_id = live.world.a.msp.id
    redirector = Listener(
        answer=(
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{listener.port}/x"
            "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    try:
        webhook_id = await stored_endpoint(
            runtime, msp_id, f"http://127.0.0.1:{redirector.port}/hook"
        )
        (delivery_id,) = await emit(runtime, msp_id)
        await deliver_as(delivery_id, webhook_allow_private_targets=True)
        assert redirector.connections == 1
    finally:
        redirector.close()
    assert listener.connections == 0
    (row,) = await deliveries(live, webhook_id)
    assert (row["status"], row["last_status_code"]) == ("pending", 307)
    assert "redirects are not followed" in row["last_error"]


# --- https in production ------------------------------------------------------------------


async def test_production_accepts_only_https(
    live: Live, start_server: Callable[..., str], runtime: Runtime, deliver_as: Deliver
) -> None:
    import base64

    from pydantic import SecretStr

    production = {
        "env": Environment.production,
        "master_key": SecretStr(base64.urlsafe_b64encode(b"p" * 32).decode()),
        "app_client_secret": SecretStr("a-production-app-secret"),
    }
    base = start_server(**production)
    headers = live.world.a.msp.headers
    async with httpx.AsyncClient(base_url=base) as api:
        r = await api.post(
            "/v1/webhooks",
            json={"url": "http://hooks.example.com/safekeep", "events": ["export.ready"]},
            headers=headers,
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == PROBLEM
        assert "https" in r.json()["detail"]
        r = await api.post(
            "/v1/webhooks",
            json={"url": "https://hooks.example.com/safekeep", "events": ["export.ready"]},
            headers=headers,
        )
        assert r.status_code == 201, r.text
    # an http endpoint stored before: a production worker refuses to send to it
    msp_id = live.world.b.msp.id
    webhook_id = await stored_endpoint(
        runtime, msp_id, "http://hooks.example.com/old", master_key=production["master_key"]
    )
    (delivery_id,) = await emit(runtime, msp_id)
    await deliver_as(delivery_id, **production)
    async with httpx.AsyncClient(base_url=base) as api:
        r = await api.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=live.world.b.msp.headers)
    (row,) = r.json()["items"]
    assert row["status"] == "failed" and "https" in row["last_error"]


# --- TLS to the checked address -----------------------------------------------------------


async def test_tls_names_the_host_while_connecting_to_the_checked_address(
    live: Live, runtime: Runtime, deliver_as: Deliver
) -> None:
    """Connected to 127.0.0.1, the worker's TLS hello still names ``localhost`` (SNI), and
    the certificate is verified (this one, from a CA nobody trusts, is refused)."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    names: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(10)

    def accept_one() -> None:
        with contextlib.suppress(OSError):
            conn, _ = sock.accept()
            with conn, contextlib.suppress(ssl.SSLError, OSError):
                server_context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    try:
        msp_id = live.world.a.msp.id
        port = sock.getsockname()[1]
        webhook_id = await stored_endpoint(runtime, msp_id, f"https://localhost:{port}/hook")
        (delivery_id,) = await emit(runtime, msp_id)
        await deliver_as(delivery_id, webhook_allow_private_targets=True)
        thread.join(10)
    finally:
        sock.close()
    assert names == ["localhost"]
    (row,) = await deliveries(live, webhook_id)
    assert row["status"] == "pending" and "CERTIFICATE_VERIFY_FAILED" in row["last_error"]


# --- the address rule itself: public addresses pass -----------------------------------------


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80e::200e", "2002:808:808::1"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    """The rule must not over-block: public IPv4, IPv6 and 6to4 of a public IPv4 pass."""
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("::10.0.0.1", "10.0.0.1"),
        ("64:ff9b::a00:1", "10.0.0.1"),
        ("64:ff9b:1::a00:1", "10.0.0.1"),
        ("2002:a00:1::", "10.0.0.1"),
    ],
)
def test_ipv6_forms_are_judged_by_the_ipv4_address_they_carry(address: str, carried: str) -> None:
    why = address_refusal(ipaddress.ip_address(address))
    assert why == f"a private address (carried in {ipaddress.ip_address(address)})"
    assert str(embedded_ipv4(ipaddress.ip_address(address))) == carried
