"""Request-scoped dependencies: the runtime, the unit of work, the caller.

The session dependency owns the unit of work: it commits after the route returns (before the
response is sent), rolls back on error, and only then sends the worker messages the route's
services collected, so a rolled-back request enqueues nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.tenants import outbox

T = TypeVar("T")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings(request: Request) -> Settings:
    return get_runtime(request).settings


# Requests that read: their SELECTs run without BEGIN/COMMIT round trips, and the few GETs
# that write (an audited download, a key's last use) open the transaction at that write.
_READ_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    runtime = get_runtime(request)
    with outbox.collect() as box:
        async with runtime.db.session(begin_on_write=request.method in _READ_METHODS) as session:
            yield session
        if box.messages:
            runtime.send(box.messages)


async def client_ip(request: Request) -> str | None:
    """The caller's address as the audit log records it, or None. Behind a proxy trusted by
    ``--forwarded-allow-ips`` it comes from X-Forwarded-For, whose first entry a client may
    write itself: only an IP address is kept (not any text, nor one longer than the column,
    which failed every audited request of that client)."""
    host = request.client.host if request.client else None
    if not host:
        return None
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))  # no IPv6 zone: not the caller's
    except ValueError:
        return None


# FastAPI runs a plain ``def`` dependency on a worker thread (two thread switches per request);
# these only read request state, so they are coroutines.
async def _runtime_dep(request: Request) -> Runtime:
    return get_runtime(request)


async def _settings_dep(request: Request) -> Settings:
    return get_settings(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime_dep)]
SettingsDep = Annotated[Settings, Depends(_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ClientIp = Annotated[str | None, Depends(client_ip)]
