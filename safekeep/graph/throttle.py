"""Limits shared by every request to the same mailbox, drive or tenant.

Microsoft throttles per app per mailbox (Exchange: 4 concurrent requests) and per app per
tenant (SharePoint and OneDrive resource units), and it expects a client that received a
``Retry-After`` to stop *all* its requests to that resource until the time has passed, not
only the one that was refused. Workers run in many processes on many nodes, so the shared
state lives behind one small interface with two implementations: asyncio primitives for the
embedded single-process mode, Redis for scale-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


class Limiter(Protocol):
    """Concurrency slots and Retry-After pauses keyed by an opaque string."""

    def slot(self, key: str, *, limit: int) -> AbstractAsyncContextManager[None]:
        """Hold one of ``limit`` slots for ``key`` (waits until one is free)."""
        ...

    async def wait_for_clearance(self, key: str) -> None:
        """Return once no Retry-After recorded for ``key`` is still running."""
        ...

    async def record_retry_after(self, key: str, seconds: float) -> None:
        """Pause every user of ``key`` for ``seconds`` (never shortens a longer pause)."""
        ...


class InProcessLimiter:
    """The embedded limiter: correct for any number of tasks in one process and event loop."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[int, asyncio.Semaphore, list[int]]] = {}
        self._until: dict[str, float] = {}  # key -> time.monotonic() at which it clears

    @asynccontextmanager
    async def slot(self, key: str, *, limit: int) -> AsyncIterator[None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        entry = self._slots.get(key)
        if entry is None:
            entry = (limit, asyncio.Semaphore(limit), [0])
            self._slots[key] = entry
        _, semaphore, users = entry
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0 and self._slots.get(key) is entry:
                del self._slots[key]  # keep the table as small as the set of busy keys

    async def wait_for_clearance(self, key: str) -> None:
        while True:
            until = self._until.get(key)
            if until is None:
                return
            remaining = until - time.monotonic()
            if remaining <= 0:
                if self._until.get(key) == until:
                    del self._until[key]
                return
            await asyncio.sleep(remaining)

    async def record_retry_after(self, key: str, seconds: float) -> None:
        until = time.monotonic() + max(0.0, seconds)
        if until > self._until.get(key, 0.0):
            self._until[key] = until


# Lua runs atomically inside Redis and reads Redis's clock, so every worker agrees on
# "now" regardless of clock skew between nodes.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease_ms * 2)
  return -1
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(first[2]) - now)
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', now + lease_ms, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease_ms * 2)
  return 1
end
return 0
"""

_RETRY_AFTER = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
return 1
"""


class RedisLimiter:
    """The scale-out limiter: one Redis shared by every worker process.

    A slot is a lease (a member of a sorted set scored by its expiry) renewed by a
    background task while held, so a worker that dies stops holding slots within
    ``lease_seconds``. A Retry-After is a key with a PX expiry. A release is announced on a
    pub/sub channel so that waiters in any process retry at once instead of polling; they
    still poll every ``poll_seconds`` in case an announcement is missed. One instance per
    event loop (its connections and background tasks belong to the loop that used it).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = "safekeep:graph",
        lease_seconds: float = 30.0,
        poll_seconds: float = 0.5,
    ) -> None:
        if lease_seconds <= 0.3:
            raise ValueError("lease_seconds must exceed 0.3 s")
        self._redis = redis
        self._prefix = prefix
        self._lease_ms = int(lease_seconds * 1000)
        self._poll = poll_seconds
        self._channel = f"{prefix}:released"
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._retry_after = redis.register_script(_RETRY_AFTER)
        self._held: dict[str, str] = {}  # lease id -> slot set key
        self._waiters: dict[str, weakref.WeakSet[asyncio.Event]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._owns_redis = False

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisLimiter:
        from safekeep.transient import async_redis

        # Health checks and retries with backoff: a Redis restart pauses the limiter's callers
        # for its duration instead of failing every backup task that holds a connection.
        limiter = cls(async_redis(url), **kwargs)
        limiter._owns_redis = True
        return limiter

    def _slot_key(self, key: str) -> str:
        return f"{self._prefix}:slots:{key}"

    def _pause_key(self, key: str) -> str:
        return f"{self._prefix}:pause:{key}"

    @asynccontextmanager
    async def slot(self, key: str, *, limit: int) -> AsyncIterator[None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._start_background()
        slot_key = self._slot_key(key)
        lease = uuid.uuid4().hex
        event = asyncio.Event()
        waiters = self._waiters.setdefault(slot_key, weakref.WeakSet())
        waiters.add(event)
        try:
            while True:
                event.clear()
                wait_ms = int(
                    await self._acquire(keys=[slot_key], args=[lease, limit, self._lease_ms])
                )
                if wait_ms < 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(wait_ms / 1000, self._poll))
        finally:
            waiters.discard(event)
            if not waiters and self._waiters.get(slot_key) is waiters:
                del self._waiters[slot_key]
        self._held[lease] = slot_key
        try:
            yield
        finally:
            self._held.pop(lease, None)
            await asyncio.shield(self._release(slot_key, lease))

    async def _release(self, slot_key: str, lease: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(slot_key, lease)
            pipe.publish(self._channel, slot_key)
            await pipe.execute()

    async def wait_for_clearance(self, key: str) -> None:
        pause_key = self._pause_key(key)
        while True:
            ttl_ms = int(await self._redis.pttl(pause_key))
            if ttl_ms <= 0:  # -2: no pause recorded; -1 cannot happen (always set with PX)
                return
            await asyncio.sleep(ttl_ms / 1000 + 0.001)

    async def record_retry_after(self, key: str, seconds: float) -> None:
        ms = max(1, math.ceil(seconds * 1000))
        await self._retry_after(keys=[self._pause_key(key)], args=[ms])

    async def aclose(self) -> None:
        """Stop the background tasks; give back any slot still held; close an owned client."""
        for task in (self._renewer, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._renewer = self._listener = None
        for lease, slot_key in list(self._held.items()):
            with contextlib.suppress(Exception):
                await self._release(slot_key, lease)
        self._held.clear()
        if self._owns_redis:
            await self._redis.aclose()  # type: ignore[attr-defined]  # types-redis predates aclose

    # -- background work -----------------------------------------------------------------------

    def _start_background(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever(), name="graph-limiter-renew")
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(
                self._listen_forever(), name="graph-limiter-listen"
            )

    async def _renew_forever(self) -> None:
        interval = self._lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            for lease, slot_key in list(self._held.items()):
                try:
                    kept = await self._renew(keys=[slot_key], args=[lease, self._lease_ms])
                except Exception:  # Redis blip: try again next round, the lease has slack
                    log.warning("could not renew Graph limiter lease", exc_info=True)
                    continue
                if not kept and lease in self._held:
                    log.warning("Graph limiter lease for %s expired while held", slot_key)

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message.get("data")
                        slot_key = data.decode() if isinstance(data, bytes) else str(data)
                        for event in list(self._waiters.get(slot_key, ())):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # waiters fall back to polling until we are back
                log.warning("Graph limiter lost its pub/sub connection", exc_info=True)
                await asyncio.sleep(1.0)
