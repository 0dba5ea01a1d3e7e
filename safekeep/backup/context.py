"""What the engine needs to work on one tenant: its Graph client, its blob repository.

Loop-bound things (HTTP clients, the limiter, token caches) are kept per event loop and
shared by every task on it, so a burst of tasks for one tenant asks Entra for one token and
counts against one shared set of per-mailbox limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from safekeep.graph.auth import AppCredentials, TokenProvider
from safekeep.graph.client import GraphClient
from safekeep.graph.throttle import InProcessLimiter, Limiter, RedisLimiter
from safekeep.runtime import Runtime
from safekeep.storage.keys import unwrap_data_key
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import Policy, Tenant, utcnow
from safekeep.tenants.tenant.service import app_credentials


@dataclass
class _LoopShared:
    limiter: Limiter
    tokens: dict[tuple[str, str, str, str], TokenProvider]


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
    # The CA is part of the key: a test's simulator may reuse an earlier one's port (and,
    # from the same seed, its tenant id) with a new CA.
    key = (settings.login_url, tenant.entra_tenant_id, creds.client_id, str(settings.ca_bundle))
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
        ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
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
    data_key = unwrap_data_key(
        runtime.settings.master_key_bytes, tenant.wrapped_data_key, tenant_id=str(tenant.id)
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
    close = getattr(shared.limiter, "aclose", None)
    if close is not None:
        await close()
