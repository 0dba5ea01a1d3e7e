"""Graph client tests run against graphsim over real HTTPS, with its CA."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from graphsim import Simulator
from safekeep.graph import AppCredentials, GraphClient, InProcessLimiter, TokenProvider
from safekeep.graph.client import ssl_context
from safekeep.graph.throttle import Limiter

# One user with an empty mailbox and drive and no sites: a test names only what it fills.
SMALL_TENANT: dict[str, Any] = {"users": 1, "messages": 0, "files": 0, "sites": 0}


def start_sim(**kwargs: Any) -> Simulator:
    """A started simulator, consented and unthrottled unless the test asks otherwise."""
    return Simulator(**{"consented": True, "throttling": "off", **SMALL_TENANT, **kwargs}).start()


def mailbox_budget(requests: int, window_s: float, **more: Any) -> dict[str, Any]:
    """Graph's per-mailbox request budget (``requests`` per ``window_s``), answered with
    fractional Retry-After values so the client's pauses can be measured to the millisecond."""
    return {
        "mailbox_requests": requests,
        "mailbox_window_s": window_s,
        "fractional_retry_after": True,
        **more,
    }


def one_slot_mailbox(latency_ms: float) -> dict[str, Any]:
    """A tenant whose real limit is one concurrent request per mailbox (Microsoft documents
    four): every burst beyond one is refused with a short fractional Retry-After."""
    return {
        "mode": "custom",
        "mailbox_concurrency": 1,
        "concurrency_retry_after_s": 0.2,
        "fractional_retry_after": True,
        "latency_ms": latency_ms,
    }


@pytest.fixture(scope="package")
def sim() -> Iterator[Simulator]:
    """A shared simulator for tests that only read; throttling off unless a test asks."""
    simulator = start_sim(seed=7, users=4, messages=24, files=12, sites=2)
    yield simulator
    simulator.stop()


@pytest.fixture
def fresh_sim() -> Iterator[Simulator]:
    """A simulator of its own, for tests that write, throttle or count requests."""
    simulator = start_sim(seed=11, users=3, messages=12, files=6, sites=1)
    yield simulator
    simulator.stop()


class Recorder:
    """Keeps every request the client put on the wire and when, and every answer's status.

    httpx calls the request hook just before sending and the response hook as soon as the
    status line and headers arrive, so the timestamps are those of the wire.
    """

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.sent: list[tuple[float, httpx.Request]] = []
        self.answers: list[tuple[float, httpx.Request, int, str | None]] = []
        self.throttled = asyncio.Event()  # set at the first 429 or 503

    async def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)
        self.sent.append((time.monotonic(), request))

    async def on_response(self, response: httpx.Response) -> None:
        if response.status_code in (429, 503):
            self.throttled.set()
        self.answers.append(
            (
                time.monotonic(),
                response.request,
                response.status_code,
                response.headers.get("retry-after"),
            )
        )

    def to(self, fragment: str) -> list[httpx.Request]:
        return [r for r in self.requests if fragment in str(r.url)]


def tokens_for(sim: Simulator, tenant: str | None = None, **kwargs: Any) -> TokenProvider:
    return TokenProvider(
        login_url=sim.base_url,
        tenant=tenant or sim.tenant().id,
        credentials=AppCredentials(sim.app_id, sim.app_secret),
        ca_bundle=str(sim.ca_path),
        **kwargs,
    )


ClientFactory = Callable[..., GraphClient]


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """Build clients against a simulator; each gets a request recorder as ``.recorder``."""
    made: list[tuple[GraphClient, TokenProvider, httpx.AsyncClient]] = []

    def build(
        sim: Simulator,
        *,
        limiter: Limiter | None = None,
        tokens: TokenProvider | None = None,
        graph_url: str | None = None,
        **kwargs: Any,
    ) -> GraphClient:
        recorder = Recorder()
        http = httpx.AsyncClient(
            verify=ssl_context(str(sim.ca_path)),
            timeout=30,
            event_hooks={"request": [recorder], "response": [recorder.on_response]},
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=40),
        )
        provider = tokens or tokens_for(sim)
        client = GraphClient(
            graph_url=graph_url or sim.graph_url,  # another: a proxy between, or a dead port
            tokens=provider,
            limiter=limiter or InProcessLimiter(),
            tenant_key=sim.tenant().id,
            http=http,
            **kwargs,
        )
        client.recorder = recorder  # type: ignore[attr-defined]
        made.append((client, provider, http))
        return client

    yield build
    for client, provider, http in made:
        await client.aclose()
        await http.aclose()
        await provider.aclose()


def recorder_of(client: GraphClient) -> Recorder:
    recorder = client.recorder  # type: ignore[attr-defined]
    assert isinstance(recorder, Recorder)
    return recorder
