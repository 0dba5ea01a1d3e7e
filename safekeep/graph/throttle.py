"""Limits shared by every request to the same mailbox, drive or tenant.

Microsoft throttles per app per mailbox (Exchange: 4 concurrent requests) and per app per
tenant (SharePoint and OneDrive resource units), and it expects a client that received a
``Retry-After`` to stop *all* its requests to that resource until the time has passed, not
only the one that was refused. Workers run in many processes on many nodes, so the shared
state lives behind one small interface with two implementations: asyncio primitives for the
embedded single-process mode, Redis for scale-out.

Microsoft's figures are ceilings, not promises: a tenant under load gets less, and Graph
punishes clients that keep knocking. So a key's concurrency adapts to the 429s its
requests receive, as TCP's congestion window does (additive increase, multiplicative
decrease, see ``Aimd``), never above the documented ceiling the caller passes as ``limit``.
The window is shared like the slots: every worker learns from every other's 429s.
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Aimd:
    """How a key's concurrency window moves.

    A key starts at ``initial`` and, until its first 429, grows by one slot per answer (TCP's
    slow start: it doubles per round of answers, so it reaches Microsoft's 4 after three
    answers, yet a mailbox whose real limit is lower is not hit with 4 requests, or a
    ``$batch`` that Exchange runs 4 at a time, before anything is known). After that, each
    answer that was not a 429 adds ``increase / window`` (about ``increase`` per window's
    worth of answers: additive increase), and each 429 multiplies it by ``decrease``, down
    to ``floor`` (multiplicative decrease). Answers within ``hold_seconds`` of a cut do not
    grow it: they answer requests sent before the cut, so they say nothing of the new
    window. A key unused for ``memory_seconds`` forgets its window and starts again. The
    slots a key grants are ``floor(window)``, between 1 and the ceiling.
    """

    initial: float = 1.0
    increase: float = 0.05
    decrease: float = 0.5
    floor: float = 1.0
    hold_seconds: float = 1.0
    memory_seconds: float = 600.0

    def grow(self, window: float, ceiling: int, *, slow_start: bool) -> float:
        step = 1.0 if slow_start else self.increase / max(window, self.floor)
        return min(float(ceiling), window + step)

    def cut(self, window: float) -> float:
        return max(self.floor, window * self.decrease)


def granted(window: float, ceiling: int) -> int:
    """The slots a key grants at ``window`` under ``ceiling``."""
    return max(1, min(ceiling, math.floor(window)))


class Limiter(Protocol):
    """Concurrency slots and Retry-After pauses keyed by an opaque string."""

    def slot(
        self, key: str, *, limit: int, count: int = 1, adaptive: bool = False
    ) -> AbstractAsyncContextManager[int]:
        """Hold ``count`` of ``key``'s slots at once (waits until they are free).

        ``limit`` is the ceiling; the key's adaptive window, once outcomes have been
        recorded for it, may grant fewer. An ``adaptive`` key that has no window yet grants
        ``Aimd.initial`` slots (slow start); any other grants ``limit``. ``count`` is cut to
        what the key grants, so that a caller asking for several never waits for ever: the
        context yields how many it holds.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return self._slot(key, limit, count, adaptive)

    def _slot(
        self, key: str, limit: int, count: int, adaptive: bool
    ) -> AbstractAsyncContextManager[int]:
        """``slot`` once its arguments are checked: what each limiter implements."""
        ...

    async def record_outcome(self, key: str, *, throttled: bool, ceiling: int) -> float:
        """Feed one answer to ``key``'s window (a 429 or not); returns the new window."""
        ...

    async def window(self, key: str, *, ceiling: int) -> int:
        """How many slots the adaptive ``key`` grants now."""
        ...

    async def wait_for_clearance(self, key: str) -> None:
        """Return once no Retry-After recorded for ``key`` is still running."""
        ...

    async def record_retry_after(self, key: str, seconds: float) -> None:
        """Pause every user of ``key`` for ``seconds`` (never shortens a longer pause)."""
        ...


@dataclass
class _Window:
    value: float
    cut_at: float | None  # time.monotonic() of the last cut; None: still in slow start
    used_at: float


class InProcessLimiter(Limiter):
    """The embedded limiter: correct for any number of tasks in one process and event loop."""

    def __init__(self, aimd: Aimd | None = None) -> None:
        self.aimd = aimd or Aimd()
        self._held: dict[str, int] = {}
        self._changed: dict[str, tuple[asyncio.Condition, list[int]]] = {}
        self._windows: dict[str, _Window] = {}
        self._until: dict[str, float] = {}  # key -> time.monotonic() at which it clears

    def _current(self, key: str) -> _Window | None:
        found = self._windows.get(key)
        if found is not None and time.monotonic() - found.used_at > self.aimd.memory_seconds:
            del self._windows[key]
            return None
        return found

    async def window(self, key: str, *, ceiling: int, adaptive: bool = True) -> int:
        found = self._current(key)
        if found is None:
            return granted(self.aimd.initial, ceiling) if adaptive else ceiling
        return granted(found.value, ceiling)

    @asynccontextmanager
    async def _slot(self, key: str, limit: int, count: int, adaptive: bool) -> AsyncIterator[int]:
        entry = self._changed.get(key)
        if entry is None:
            entry = self._changed[key] = (asyncio.Condition(), [0])
        changed, users = entry
        users[0] += 1
        taken = 0
        try:
            async with changed:
                while True:
                    allowed = await self.window(key, ceiling=limit, adaptive=adaptive)
                    wanted = max(1, min(count, allowed))
                    if self._held.get(key, 0) + wanted <= allowed:
                        break
                    await changed.wait()
                taken = wanted
                self._held[key] = self._held.get(key, 0) + taken
            yield taken
        finally:
            await asyncio.shield(self._give_back(key, changed, taken))
            users[0] -= 1
            if users[0] == 0 and self._changed.get(key) is entry:
                del self._changed[key]  # keep the table as small as the set of busy keys

    async def _give_back(self, key: str, changed: asyncio.Condition, taken: int) -> None:
        if not taken:
            return
        async with changed:
            left = self._held.get(key, 0) - taken
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)
            changed.notify_all()

    async def record_outcome(self, key: str, *, throttled: bool, ceiling: int) -> float:
        now = time.monotonic()
        found = self._current(key) or _Window(min(self.aimd.initial, ceiling), None, now)
        if throttled:
            found.value, found.cut_at = self.aimd.cut(found.value), now
        elif found.cut_at is None:
            found.value = self.aimd.grow(found.value, ceiling, slow_start=True)
        elif now - found.cut_at >= self.aimd.hold_seconds:
            found.value = self.aimd.grow(found.value, ceiling, slow_start=False)
        found.used_at = now
        self._windows[key] = found
        entry = self._changed.get(key)
        if entry is not None and not throttled:
            async with entry[0]:
                entry[0].notify_all()  # the window may have grown: waiters look again
        return found.value

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
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: the slot set, the window hash. ARGV: lease id, ceiling, lease ms, count, the window
# of a key that has none yet.
# Grants min(count, slots the window allows) leases at once, or none and the ms to wait.
_ACQUIRE = (
    _NOW
    + """
local lease_ms = tonumber(ARGV[3])
local ceiling = tonumber(ARGV[2])
local window = tonumber(redis.call('HGET', KEYS[2], 'w') or '') or tonumber(ARGV[5])
local allowed = math.max(1, math.min(ceiling, math.floor(window)))
local count = math.max(1, math.min(tonumber(ARGV[4]), allowed))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) + count <= allowed then
  for i = 1, count do
    redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[1] .. ':' .. i)
  end
  redis.call('PEXPIRE', KEYS[1], lease_ms * 2)
  return {count, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = 50
if first[2] then
  wait = math.max(1, tonumber(first[2]) - now)
end
return {0, wait}
"""
)

# KEYS: the window hash. ARGV: ceiling, throttled (1/0), increase, decrease, floor,
# hold ms, memory ms, initial. The same arithmetic as ``Aimd`` (no 'cut' field: still in
# slow start); returns the new window as a string (Lua numbers would come back truncated).
_OUTCOME = (
    _NOW
    + """
local ceiling = tonumber(ARGV[1])
local window = tonumber(redis.call('HGET', KEYS[1], 'w') or '')
if not window then
  window = math.min(ceiling, tonumber(ARGV[8]))
end
local cut = tonumber(redis.call('HGET', KEYS[1], 'cut') or '')
if ARGV[2] == '1' then
  window = math.max(tonumber(ARGV[5]), window * tonumber(ARGV[4]))
  cut = now
elseif not cut then
  window = math.min(ceiling, window + 1)
elseif now - cut >= tonumber(ARGV[6]) then
  window = math.min(ceiling, window + tonumber(ARGV[3]) / math.max(window, tonumber(ARGV[5])))
end
redis.call('HSET', KEYS[1], 'w', tostring(window))
if cut then
  redis.call('HSET', KEYS[1], 'cut', tostring(cut))
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[7]))
return tostring(window)
"""
)

_RENEW = (
    _NOW
    + """
local lease_ms = tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', now + lease_ms, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease_ms * 2)
  return 1
end
return 0
"""
)

_RETRY_AFTER = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
return 1
"""


class RedisLimiter(Limiter):
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
        aimd: Aimd | None = None,
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
        self._outcome = redis.register_script(_OUTCOME)
        self.aimd = aimd or Aimd()
        self._held: dict[str, str] = {}  # lease member -> slot set key
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

    def _window_key(self, key: str) -> str:
        return f"{self._prefix}:window:{key}"

    async def window(self, key: str, *, ceiling: int) -> int:
        value = await self._redis.hget(self._window_key(key), "w")
        return granted(float(value) if value is not None else self.aimd.initial, ceiling)

    async def record_outcome(self, key: str, *, throttled: bool, ceiling: int) -> float:
        aimd = self.aimd
        value = await self._outcome(
            keys=[self._window_key(key)],
            args=[
                ceiling,
                1 if throttled else 0,
                aimd.increase,
                aimd.decrease,
                aimd.floor,
                int(aimd.hold_seconds * 1000),
                max(1, int(aimd.memory_seconds * 1000)),
                aimd.initial,
            ],
        )
        return float(value.decode() if isinstance(value, bytes) else value)

    @asynccontextmanager
    async def _slot(self, key: str, limit: int, count: int, adaptive: bool) -> AsyncIterator[int]:
        self._start_background()
        start = self.aimd.initial if adaptive else limit
        slot_key = self._slot_key(key)
        window_key = self._window_key(key)
        lease = uuid.uuid4().hex
        event = asyncio.Event()
        waiters = self._waiters.setdefault(slot_key, weakref.WeakSet())
        waiters.add(event)
        try:
            while True:
                event.clear()
                taken, wait_ms = await self._acquire(
                    keys=[slot_key, window_key],
                    args=[lease, limit, self._lease_ms, count, start],
                )
                if int(taken) > 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(int(wait_ms) / 1000, self._poll))
        finally:
            waiters.discard(event)
            if not waiters and self._waiters.get(slot_key) is waiters:
                del self._waiters[slot_key]
        members = [f"{lease}:{i}" for i in range(1, int(taken) + 1)]
        for member in members:
            self._held[member] = slot_key
        try:
            yield len(members)
        finally:
            for member in members:
                self._held.pop(member, None)
            await asyncio.shield(self._release(slot_key, *members))

    async def _release(self, slot_key: str, *members: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(slot_key, *members)
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
        tasks = [t for t in (self._renewer, self._listener) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a listener cancelled while redis-py is still subscribing can take
            # its time to notice (closing the client below ends it for good).
            await asyncio.wait(tasks, timeout=1.0)
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
