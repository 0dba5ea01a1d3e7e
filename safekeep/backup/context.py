"""What the engine needs to work on one tenant: its Graph client, its blob repository.

Loop-bound things (HTTP clients, the limiter, token caches) are kept per event loop and
shared by every task on it, so a burst of tasks for one tenant asks Entra for one token and
counts against one shared set of per-mailbox limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from safekeep.graph.auth import AppCredentials, TokenProvider
from safekeep.graph.client import GraphClient, ssl_context
from safekeep.graph.netio import graph_http_client
from safekeep.graph.throttle import InProcessLimiter, Limiter, RedisLimiter
from safekeep.runtime import Runtime
from safekeep.storage.keys import unwrap_with_any
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import Policy, Tenant, utcnow
from safekeep.tenants.tenant.service import app_credentials


@dataclass
class _LoopShared:
    limiter: Limiter
    tokens: dict[tuple[str, str, str, str], TokenProvider]
    # One HTTP connection pool per trusted CA: each task used to build its own client (an SSL
    # context read from disk, new TLS handshakes), a large share of a short incremental task.
    http: dict[str, httpx.AsyncClient] = field(default_factory=dict)


# As GraphClient's own pool, shared by every task on the loop.
GRAPH_HTTP_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=40)
GRAPH_HTTP_TIMEOUT = 60.0


def _graph_http(runtime: Runtime) -> httpx.AsyncClient:
    settings = runtime.settings
    ca = str(settings.ca_bundle) if settings.ca_bundle else ""
    shared = _loop_shared(runtime)
    client = shared.http.get(ca)
    if client is None or client.is_closed:
        client = graph_http_client(
            ssl_context(ca or None), httpx.Timeout(GRAPH_HTTP_TIMEOUT), GRAPH_HTTP_LIMITS
        )
        shared.http[ca] = client
    return client


_shared: dict[asyncio.AbstractEventLoop, _LoopShared] = {}


def _loop_shared(runtime: Runtime) -> _LoopShared:
    loop = asyncio.get_running_loop()
    shared = _shared.get(loop)
    if shared is None:
        redis_url = runtime.settings.resolved_redis_url
        limiter: Limiter = RedisLimiter.from_url(redis_url) if redis_url else InProcessLimiter()
        shared = _LoopShared(limiter=limiter, tokens={})
        _shared[loop] = shared
    return shared


def token_provider(runtime: Runtime, tenant: Tenant) -> TokenProvider:
    if not tenant.entra_tenant_id:
        raise ValueError("the tenant has not consented yet")
    settings = runtime.settings
    creds = app_credentials(settings, tenant)
    # The CA is part of the key: a provider's session trusts one CA (a new simulator on a
    # reused port, or a rotated private CA, must not meet a session pinned to the old one).
    key = (settings.login_url, str(settings.ca_bundle), tenant.entra_tenant_id, creds.client_id)
    shared = _loop_shared(runtime)
    provider = shared.tokens.get(key)
    if provider is None:
        provider = TokenProvider(
            login_url=settings.login_url,
            tenant=tenant.entra_tenant_id,
            credentials=AppCredentials(creds.client_id, creds.client_secret),
            ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
        )
        shared.tokens[key] = provider
    return provider


@asynccontextmanager
async def graph_client(runtime: Runtime, tenant: Tenant) -> AsyncIterator[GraphClient]:
    settings = runtime.settings
    client = GraphClient(
        graph_url=settings.graph_url,
        tokens=token_provider(runtime, tenant),
        limiter=_loop_shared(runtime).limiter,
        tenant_key=tenant.entra_tenant_id or str(tenant.id),
        http=_graph_http(runtime),
    )
    try:
        yield client
    finally:
        await client.aclose()


def retain_until(policy: Policy | None) -> timedelta | None:
    if policy is None or policy.retention_days is None:
        return None
    return timedelta(days=policy.retention_days)


async def open_repository(
    runtime: Runtime, tenant: Tenant, policy: Policy | None = None
) -> TenantRepository:
    """The tenant's encrypted, deduplicated blob repository. Blobs written under an Object
    Lock bucket carry the policy's retention, so none can be deleted before it ends."""
    data_key = unwrap_with_any(
        runtime.settings.master_keys, tenant.wrapped_data_key, tenant_id=str(tenant.id)
    )
    keep = retain_until(policy)
    return TenantRepository(
        await runtime.blobs(),
        tenant_id=str(tenant.id),
        data_key=data_key,
        retain_until=utcnow() + keep if keep else None,
    )


async def close_loop_resources() -> None:
    """Close this loop's shared limiter and token providers (a worker shutting down)."""
    shared = _shared.pop(asyncio.get_running_loop(), None)
    if shared is None:
        return
    for provider in shared.tokens.values():
        await provider.aclose()
    for http in shared.http.values():
        await http.aclose()
    close = getattr(shared.limiter, "aclose", None)
    if close is not None:
        await close()
