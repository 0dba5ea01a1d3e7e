"""Which failures are blips of our own infrastructure, and how code that meets one waits.

A job, an actor or the scheduler that catches an error asks here whether it is worth trying
again soon, rather than keeping a tuple of its own: a database disconnect, a serialization
failure, Redis or the queue restarting, S3 throttling after botocore's own retries. Such an
error must never leave work stuck behind a lease until it times out; the code that catches it
gives its lease back and lets the broker retry with backoff (see ``backup/jobs/backup.py``).

The connection settings that make clients heal after a restart (redis-py's retry and health
checks) live here too, so every Redis client in the process behaves the same.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import dramatiq.errors
import psycopg
import psycopg.errors
import structlog
from sqlalchemy import exc as sa_exc

from safekeep.graph.errors import GraphError
from safekeep.storage.errors import BlobStoreUnavailable, StorageError

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.retry import Retry

log = structlog.get_logger(__name__)

T = TypeVar("T")
_R = TypeVar("_R", "Retry", "AsyncRetry")

# Seconds a client says to wait before asking again while a dependency is down (the API's
# Retry-After, the scheduler's next try after a failed step).
RETRY_AFTER_SECONDS = 5


class TransientCondition(Exception):
    """Base of our own "not now, soon" errors (another job in the way, a dependency down)."""


# SQLSTATEs that say "run the transaction again": serialization failure, deadlock.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error, what it wraps (a DBAPI error's ``orig``) and what caused it, once each."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo.extend([current.__cause__, orig if isinstance(orig, BaseException) else None])


def _one_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientCondition | BlobStoreUnavailable):
        return True
    # The database: a connection lost (SQLAlchemy flags it) or a server restarting, and
    # transactions PostgreSQL asks us to run again.
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True  # a pool checkout that could not get a live connection in time
    if isinstance(exc, psycopg.OperationalError):
        return True  # connection failures, admin shutdown, cannot connect now (57P03)
    if isinstance(exc, psycopg.Error) and exc.sqlstate in _RETRY_SQLSTATES:
        return True
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc).lower()
        return "database is locked" in message or "database is busy" in message
    # Redis (throttle limiter, broker) and the queue. BusyLoadingError (a restart still
    # loading its dump) is a redis ConnectionError; ConnectionTimeout an OpenSearch one.
    if isinstance(exc, dramatiq.errors.BrokerConnectionError):
        return True
    if isinstance(exc, _client_errors()):
        return True
    # A socket refused or reset on the way to any of them.
    return isinstance(exc, ConnectionError | TimeoutError)


def is_transient(exc: BaseException) -> bool:
    """A blip of our own infrastructure: retrying in a few seconds is expected to work, and
    it must not count against the work's own failure budget."""
    return any(_one_is_transient(e) for e in _chain(exc))


def is_retryable(exc: BaseException) -> bool:
    """Worth another attempt of a job: an infrastructure blip, or a failure of Microsoft Graph
    or of storage that the job's bounded retries cover (permanent Graph failures, such as
    revoked consent, are sorted out by the caller before it asks)."""
    return is_transient(exc) or isinstance(exc, GraphError | StorageError | OSError)


async def retry_transient(
    fn: Callable[[], Awaitable[T]],
    *,
    within: float,
    what: str,
    first_delay: float = 0.2,
    max_delay: float = 3.0,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient failures with backoff for up to
    ``within`` seconds (then the last error is raised). For small writes that must not be
    lost to a blip, such as giving a task's lease back while the database restarts."""
    deadline = time.monotonic() + within
    delay = first_delay
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.info("transient_retry", what=what, error=str(exc)[:200], retry_in=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


# --- Redis clients that heal --------------------------------------------------------------

# How long a Redis command keeps retrying through a restart before it raises (about 17 s:
# 0.1, 0.2, 0.4 ... then every 2 s): long enough to ride out a short restart unnoticed, short
# enough that a real outage surfaces as an error the caller classifies as transient.
REDIS_RETRY_ATTEMPTS = 12
REDIS_RETRY_BACKOFF_CAP = 2.0
REDIS_RETRY_BACKOFF_BASE = 0.05
# Ping a pooled connection idle this long before using it, so one the server dropped while
# restarting is replaced instead of failing the first command.
REDIS_HEALTH_CHECK_SECONDS = 5
REDIS_CONNECT_TIMEOUT = 3.0
REDIS_SOCKET_TIMEOUT = 10.0


# The connection errors of client libraries that only a scale-out deployment loads: an error of
# a library never imported cannot be raised, and an embedded process never imports redis, pika
# or opensearch-py (about 30 MB of its memory).
_CLIENT_ERRORS = {
    "redis": ("ConnectionError", "TimeoutError"),
    "pika.exceptions": ("AMQPConnectionError", "AMQPChannelError"),
    "opensearchpy.exceptions": ("ConnectionError",),
}


def _client_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module, names in _CLIENT_ERRORS.items():
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.extend(getattr(loaded, name) for name in names)
    return tuple(found)


def redis_options() -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url`` (sync or asyncio) every client uses."""
    import redis

    return {
        "health_check_interval": REDIS_HEALTH_CHECK_SECONDS,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "socket_keepalive": True,
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


def _retry(retry_type: type[_R]) -> _R:
    """The one retry policy, built by the sync or the asyncio client's own ``Retry`` class."""
    from redis.backoff import ExponentialBackoff

    return retry_type(
        ExponentialBackoff(REDIS_RETRY_BACKOFF_CAP, REDIS_RETRY_BACKOFF_BASE),
        REDIS_RETRY_ATTEMPTS,
    )


def sync_redis(url: str) -> redis.Redis:
    import redis
    from redis.retry import Retry

    return redis.Redis.from_url(url, retry=_retry(Retry), **redis_options())


def async_redis(url: str) -> aioredis.Redis:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry as AsyncRetry

    return aioredis.Redis.from_url(url, retry=_retry(AsyncRetry), **redis_options())
