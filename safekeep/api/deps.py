"""Request-scoped dependencies: the runtime, the unit of work, the caller.

The session dependency owns the unit of work: it commits after the route returns (before the
response is sent), rolls back on error, and only then sends the worker messages the route's
services collected, so a rolled-back request enqueues nothing. What was committed is answered
as done even when the queue is down at that moment (``send_committed``).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, TypeVar

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.tenants import outbox
from safekeep.tenants.outbox import Message
from safekeep.transient import is_transient

T = TypeVar("T")
log = structlog.get_logger(__name__)

# How long a request waits for the queue to take what its committed unit of work collected.
# The broker's client retries a restarting Redis for longer than that; the send goes on in
# its thread meanwhile.
SEND_PATIENCE_SECONDS = 3.0


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
            await send_committed(runtime, box.messages)


async def send_committed(runtime: Runtime, messages: Sequence[Message]) -> None:
    """Hand the queue what a committed request collected, off the event loop (the broker's
    client is synchronous and retries a restarting Redis for seconds, which blocked every
    request of the process) and for at most ``SEND_PATIENCE_SECONDS``.

    The write is committed whatever the queue says: a 503 would tell the client that nothing
    happened, and its retry would make a second job. So a queue that is down is logged, not
    raised; what was not sent is sent by the recovery that covers a lost message (the
    scheduler re-sends jobs left unstarted, webhook deliveries are retried, stale versions
    are re-indexed). Anything else (an actor that does not exist) is a bug and raises."""
    try:
        await asyncio.wait_for(asyncio.to_thread(runtime.send, messages), SEND_PATIENCE_SECONDS)
    except TimeoutError:
        log.warning("enqueue_slow", actors=sorted({m.actor for m in messages}))
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning(
            "enqueue_deferred",
            actors=sorted({m.actor for m in messages}),
            error=f"{type(exc).__name__}: {exc}"[:300],
        )


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
