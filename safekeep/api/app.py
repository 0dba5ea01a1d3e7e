"""The FastAPI application: routers, error rendering, metrics, lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import configure_mappers

from safekeep import __version__
from safekeep import logging as safekeep_logging
from safekeep.api import problems
from safekeep.api.accounts.router import msp_router as msp_accounts_router
from safekeep.api.accounts.router import router as accounts_router
from safekeep.api.api_keys.router import router as api_keys_router
from safekeep.api.audit.router import router as audit_router
from safekeep.api.billing.router import MAX_WEBHOOK_BYTES as STRIPE_WEBHOOK_BYTES
from safekeep.api.billing.router import router as billing_router
from safekeep.api.consent.router import router as consent_router
from safekeep.api.detections.router import router as detections_router
from safekeep.api.detections.router import thresholds_router as detection_thresholds_router
from safekeep.api.exports.router import router as exports_router
from safekeep.api.head import HeadAsGet
from safekeep.api.health.router import RecentReadiness
from safekeep.api.health.router import router as health_router
from safekeep.api.items.router import router as items_router
from safekeep.api.jobs.router import router as jobs_router
from safekeep.api.limits import RequestLimits
from safekeep.api.metrics import MetricsMiddleware
from safekeep.api.notifications.router import router as notifications_router
from safekeep.api.policy.router import router as policy_router
from safekeep.api.rates import RequestRates
from safekeep.api.restores.router import router as restores_router
from safekeep.api.search.router import router as search_router
from safekeep.api.snapshots.router import router as snapshots_router
from safekeep.api.strict import reject_unknown_query
from safekeep.api.tenants.router import router as tenants_router
from safekeep.api.usage.router import router as usage_router
from safekeep.api.webhooks.router import router as webhooks_router
from safekeep.runtime import Runtime, Sender
from safekeep.settings import Settings, get_settings
from safekeep.workers import broker as queue

DESCRIPTION = """
Safekeep backs up Microsoft 365 tenants (Exchange Online mail, calendars, contacts, OneDrive,
SharePoint) for managed service providers, into storage independent of Microsoft.

**Auth.** Every route but the health checks, the consent callback and the Stripe webhook
(authenticated by its `Stripe-Signature`) needs an MSP API key: `Authorization: Bearer sk_...`.
Keys carry scopes (`admin`, `read`, `backup`, `restore`, `export`; admin implies all) and may be
limited to some tenants.

**Errors** are `application/problem+json` (RFC 9457) with a stable `type`.

**Lists** are newest first and paginate with an opaque `cursor` (`next_cursor` of the previous
page) and a `limit` of at most 200.

**Limits.** By default request bodies are at most 1 MiB (413), query strings 8 KiB (414) and headers
32 KiB (431), checked before authentication. Each API server admits one key's requests at up to
100 a second after a burst of 300, and an MSP's keys together at up to 200 after 600 (the
deployment may change these); beyond either it answers 429
(`type` ending `rate-limited`) with `Retry-After` in seconds, having done nothing for the
request. A key that polls many jobs should use `If-None-Match` (304s still count, but cost
little) and the `Retry-After` a running job's answer carries.

**Idempotency.** Creating POSTs accept `Idempotency-Key`; a repeat with the same key and body
replays the first answer (with `Idempotent-Replayed: true`).

**Webhooks** are POSTed as JSON with `Safekeep-Signature: t=<unix seconds>,v1=<hex>` where the
hex is HMAC-SHA256 of `"<t>.<raw body>"` under the endpoint's secret; reject timestamps older
than five minutes. They also carry the Standard Webhooks headers (`webhook-id`,
`webhook-timestamp`, `webhook-signature`), so any Standard Webhooks library verifies them with the
endpoint's `whsec_` secret. Failed deliveries are retried after 30 s, 2 min, 10 min, 1 h and 6 h.
Deliveries go only to public internet addresses; one refused is recorded as failed with the
reason, and nothing is sent.
"""


# The API process's collector thresholds (young, middle, old), see the lifespan below.
API_GC_THRESHOLDS = (10_000, 10, 10)


def _operation_id(route: APIRoute) -> str:
    return route.name


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    return problems.problem_response(
        409,
        "conflict",
        "Conflict with the current state",
        "The request conflicts with a concurrent change; retry it",
        instance=request.url.path,
    )


def create_app(
    settings: Settings | None = None, runtime: Runtime | None = None, send: Sender | None = None
) -> FastAPI:
    """``send`` replaces the queue client for the runtime the lifespan builds (``safekeep
    serve`` forwards messages to its worker process)."""
    settings = settings or (runtime.settings if runtime else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = runtime is None
        if own:
            # Serving on its own (uvicorn --factory, the Helm chart's api pods): set up logging
            # and bind the actors to the configured queue so that enqueued jobs reach workers.
            safekeep_logging.configure(settings.log_level, json=settings.log_json)
            queue.configure(settings)
        app.state.runtime = runtime or Runtime.build(settings, send=send or queue.send_messages)
        if own:
            # Everything imported and built so far lives as long as the process: keep it out of
            # the collector's way, or each full collection walks it again mid-request. The
            # mappers are configured first (SQLAlchemy would do it at the first query) so that
            # what that builds is frozen too.
            configure_mappers()
            gc.collect()
            gc.freeze()
            # A request allocates a few thousand objects and leaves almost none behind. At
            # CPython's default (a young collection every 700 net allocations) requests in
            # flight were promoted into the older generations and full collections ran every
            # second or two under load, each pausing every request for 20-60 ms.
            gc.set_threshold(*API_GC_THRESHOLDS)
        try:
            yield
        finally:
            if own:
                await app.state.runtime.close()

    app = FastAPI(
        title="Safekeep",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
        # operationId = the handler's name (unique across the API), so generated clients get
        # `create_tenant`, not `create_tenant_v1_tenants_post`.
        generate_unique_id_function=_operation_id,
    )
    if runtime is not None:
        app.state.runtime = runtime
    app.state.request_rates = RequestRates.from_settings(settings)
    app.state.readiness = RecentReadiness()
    problems.install(app)
    app.add_exception_handler(IntegrityError, _integrity_error)
    # Innermost: the router sees a HEAD as its GET; the metrics and the limits see the HEAD.
    app.add_middleware(HeadAsGet)
    app.add_middleware(MetricsMiddleware)
    # Added last, so outermost: bounds apply before routing, authentication or any read.
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        max_query_bytes=settings.max_query_bytes,
        max_header_bytes=settings.max_header_bytes,
        body_limits={"/v1/billing/stripe/webhook": STRIPE_WEBHOOK_BYTES},
    )
    # A request tries the routers in this order, each route of each in turn (about 12% of a
    # job poll's CPU when the jobs came seventh), so the routes portals poll come first. The
    # order decides nothing else: no request matches two routes (tests/api/test_routing.py).
    for router in (
        jobs_router,
        tenants_router,
        search_router,
        accounts_router,
        msp_accounts_router,
        snapshots_router,
        usage_router,
        health_router,
        api_keys_router,
        consent_router,
        policy_router,
        items_router,
        restores_router,
        exports_router,
        billing_router,
        audit_router,
        webhooks_router,
        notifications_router,
        detections_router,
        detection_thresholds_router,
    ):
        app.include_router(router)
    return app
