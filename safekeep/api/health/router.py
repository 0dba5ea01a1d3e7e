"""Liveness, readiness (each dependency checked, naming the one that failed) and metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from sqlalchemy import text

from safekeep.api.auth import MetricsAccess
from safekeep.api.deps import RuntimeDep
from safekeep.api.metrics import FLEET
from safekeep.api.problems import responses
from safekeep.api.schemas import Schema
from safekeep.errors import MetricsUnauthorized
from safekeep.runtime import Runtime
from safekeep.transient import RETRY_AFTER_SECONDS
from safekeep.workers import broker as queue

log = structlog.get_logger(__name__)

router = APIRouter(tags=["Health"])

CHECK_TIMEOUT_SECONDS = 5.0
# /readyz answers anyone who reaches the API: callers within this long share one reading.
READINESS_MAX_AGE_SECONDS = 1.0


class Health(Schema):
    status: str


class Check(Schema):
    ok: bool
    backend: str
    latency_ms: float
    error: str | None = Field(
        default=None,
        description="The kind of failure (the exception's class name); the log has its message",
    )


class Readiness(Schema):
    status: str
    checks: dict[str, Check]


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (no dependency is checked)."""
    return Health(status="ok")


async def _check(name: str, backend: str, probe: Callable[[], Awaitable[object]]) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_SECONDS)
        error = None
    except Exception as exc:
        # The answer names the kind of failure only: its message carries the dependency's
        # address, bucket or user, and /readyz answers anyone who reaches the API. The log
        # has it whole.
        error = type(exc).__name__
        log.warning(
            "readiness_check_failed",
            check=name,
            backend=backend,
            error=f"{error}: {exc}"[:300],
            exc_info=True,
        )
    return Check(
        ok=error is None,
        backend=backend,
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        error=error,
    )


def _backend_name(url: str) -> str:
    return url.split(":", 1)[0]


async def readiness(runtime: Runtime) -> Readiness:
    settings = runtime.settings

    async def database() -> None:
        async with runtime.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def blobstore() -> None:
        await (await runtime.blobs()).ping()

    async def search() -> None:
        await (await runtime.search_backend()).ping()

    async def broker() -> None:
        await asyncio.to_thread(queue.ping, settings)

    checks = await asyncio.gather(
        _check("database", runtime.db.engine.dialect.name, database),
        _check(
            "queue",
            _backend_name(settings.broker_url) if settings.broker_url else "embedded",
            broker,
        ),
        _check("blobstore", _backend_name(settings.resolved_blobstore_url), blobstore),
        _check(
            "search",
            "opensearch" if settings.resolved_search_url.startswith("http") else "sqlite-fts5",
            search,
        ),
    )
    named = dict(zip(("database", "queue", "blobstore", "search"), checks, strict=True))
    return Readiness(status="ok" if all(c.ok for c in checks) else "unavailable", checks=named)


class RecentReadiness:
    """One process's last reading of its dependencies. Each reading is a round trip to the
    database, the queue, the blob store and search; callers within
    ``READINESS_MAX_AGE_SECONDS`` of one share it (those arriving during it wait for it), so a
    flood of /readyz from outside costs those four at most one call each a second, not one
    per request. An answer is at most a second old; Kubernetes probes every few seconds."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last: tuple[float, Readiness] | None = None

    async def read(self, runtime: Runtime) -> Readiness:
        async with self._lock:
            if self._last is None or self._clock() - self._last[0] >= READINESS_MAX_AGE_SECONDS:
                self._last = (self._clock(), await readiness(runtime))
            return self._last[1]


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is unreachable"}},
)
async def readyz(runtime: RuntimeDep, request: Request) -> JSONResponse:
    """Database, queue, blob store and search each reachable; 503 names the one that is not.
    Read at most once a second per process: callers within that second share the reading."""
    recent: RecentReadiness = request.app.state.readiness
    result = await recent.read(runtime)
    if result.status == "ok":
        return JSONResponse(result.model_dump())
    return JSONResponse(
        result.model_dump(),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _metrics_errors() -> dict[int | str, dict[str, Any]]:
    out = responses(401, 404)
    del out[429]  # the metrics token has no request rate; API keys do
    out[401] = {**out[401], "description": MetricsUnauthorized.title}
    return out


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[MetricsAccess],
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **_metrics_errors()},
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics of this process, and the fleet's as the catalog database has them:
    the operator's, so they need the metrics token (`SAFEKEEP_METRICS_TOKEN`), not an API key.
    401 without it; 404 in production when no token is configured."""
    await FLEET.refresh(runtime.db)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
