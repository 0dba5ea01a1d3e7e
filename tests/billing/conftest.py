"""Billing against the real stripe-mock and PostgreSQL.

stripe-mock validates every request against Stripe's OpenAPI document but answers with canned
objects and keeps no state, so it proves that what we send is well-formed and accepted, not
what we sent. ``StripeRecorder`` sits in front of it as a plain HTTP relay that notes each
request (and can turn chosen ones into a 5xx, as a Stripe outage would), so tests can assert
the exact parameters and idempotency keys that reached stripe-mock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI

from safekeep.api.app import create_app
from safekeep.api.billing.router import router as billing_router
from safekeep.billing.stripe_client import BillingClient
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.tenants.models import Msp
from tests.factories import MspHandle
from tests.fixtures.app import SentMessages, build_settings

WEBHOOK_SECRET = "whsec_safekeep_test_secret"
API_KEY = "sk_test_safekeep"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    form: dict[str, str]
    status: int


@dataclass
class StripeRecorder:
    """An HTTP relay to stripe-mock that records requests; ``fail`` picks ones to answer 503."""

    upstream: str
    requests: list[Recorded] = field(default_factory=list)
    fail: Callable[[str, dict[str, str]], bool] | None = None
    url: str = ""

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _handler(recorder: StripeRecorder, upstream: httpx.Client) -> type[BaseHTTPRequestHandler]:
    class Relay(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            if recorder.fail is not None and recorder.fail(self.path, form):
                status, out, out_type = (
                    503,
                    json.dumps({"error": {"type": "api_error", "message": "injected outage"}}),
                    "application/json",
                )
            else:
                forwarded = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                answer = upstream.request(self.command, self.path, content=body, headers=forwarded)
                status, out, out_type = (
                    answer.status_code,
                    answer.text,
                    answer.headers.get("content-type", "application/json"),
                )
            recorder.requests.append(Recorded(self.command, self.path, headers, form, status))
            data = out.encode()
            self.send_response(status)
            self.send_header("Content-Type", out_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _relay
        do_POST = _relay
        do_DELETE = _relay

    return Relay


@pytest.fixture
def stripe_recorder(stripe_api_base: str) -> Iterator[StripeRecorder]:
    recorder = StripeRecorder(upstream=stripe_api_base)
    with httpx.Client(base_url=stripe_api_base, timeout=10) as upstream:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder, upstream))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield recorder
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


@pytest.fixture
def billing_client(stripe_recorder: StripeRecorder) -> BillingClient:
    """A client that reaches stripe-mock through the recorder, without library retries (so a
    test sees each request once)."""
    return BillingClient(API_KEY, api_base=stripe_recorder.url, max_network_retries=0)


@pytest.fixture
def closed_port_url() -> str:
    """An address where nothing listens: Stripe unreachable."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def unreachable_stripe(closed_port_url: str) -> BillingClient:
    return BillingClient(API_KEY, api_base=closed_port_url, max_network_retries=0)


def billing_settings(
    tmp_path: Path, postgres_url: str, api_base: str, *, webhook_secret: str | None
) -> Settings:
    """PostgreSQL and Stripe; the blob store and search stay unopened defaults (unused)."""
    return build_settings(
        tmp_path,
        database_url=postgres_url,
        stripe_api_key=API_KEY,
        stripe_webhook_secret=webhook_secret,
        stripe_api_base=api_base,
    )


@pytest.fixture
async def billing_runtime(
    tmp_path: Path, postgres_url: str, stripe_api_base: str, sent: SentMessages
) -> AsyncIterator[Runtime]:
    runtime = Runtime.build(
        billing_settings(tmp_path, postgres_url, stripe_api_base, webhook_secret=WEBHOOK_SECRET),
        send=sent,
    )
    try:
        yield runtime
    finally:
        await runtime.close()


def app_with_billing(runtime: Runtime) -> FastAPI:
    """The real app, with the billing router mounted if the app does not mount it yet."""
    app = create_app(runtime=runtime)
    if not any(getattr(r, "path", "") == "/v1/billing" for r in app.routes):
        app.include_router(billing_router)
    return app


@pytest.fixture
async def billing_http(billing_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(
        app=app_with_billing(billing_runtime), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://safekeep.test") as c:
        yield c


# --- Stripe events ----------------------------------------------------------------------------


def stripe_event(
    event_type: str,
    obj: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A snapshot event shaped as Stripe sends it."""
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created if created is not None else int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj},
    }


def invoice(customer: str, *, status: str = "open") -> dict[str, Any]:
    return {
        "id": f"in_{uuid.uuid4().hex[:20]}",
        "object": "invoice",
        "customer": customer,
        "status": status,
    }


def subscription(customer: str, status: str) -> dict[str, Any]:
    return {
        "id": f"sub_{uuid.uuid4().hex[:20]}",
        "object": "subscription",
        "customer": customer,
        "status": status,
    }


def signature(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """``Stripe-Signature`` computed as Stripe documents it, independently of the library we
    verify with: HMAC-SHA256 of ``"<t>.<body>"`` under the endpoint secret."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()


async def set_customer(runtime: Runtime, msp: MspHandle, customer_id: str | None = None) -> str:
    customer_id = customer_id or f"cus_{uuid.uuid4().hex[:14]}"
    async with runtime.db.session() as session:
        row = await session.get(Msp, msp.id)
        assert row is not None
        row.stripe_customer_id = customer_id
    return customer_id
