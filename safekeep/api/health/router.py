"""Liveness, readiness (each dependency checked, naming the one that failed) and metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from safekeep.api.deps import RuntimeDep
from safekeep.api.metrics import FLEET
from safekeep.api.schemas import Schema
from safekeep.runtime import Runtime
from safekeep.transient import RETRY_AFTER_SECONDS
from safekeep.workers import broker as queue

router = APIRouter(tags=["Health"])

CHECK_TIMEOUT_SECONDS = 5.0


class Health(Schema):
    status: str


class Check(Schema):
    ok: bool
    backend: str
    latency_ms: float
    error: str | None = None


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
        error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
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


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is unreachable"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Database, queue, blob store and search each reachable; 503 names the one that is not."""
    result = await readiness(runtime)
    if result.status == "ok":
        return JSONResponse(result.model_dump())
    return JSONResponse(
        result.model_dump(),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


@router.get(
    "/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}}
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics of this process, and the fleet's as the catalog database has them."""
    await FLEET.refresh(runtime.db)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
