"""What an API process remembers of the database for a moment: answers every request would
otherwise read again (a key's grant, the tenants a scope reaches), kept a couple of seconds.

A process that changes what it remembers forgets at once and again when its change commits
(``forget_with``); another process's memory is at most ``REMEMBER_SECONDS`` old."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

# How long an API process answers from its memory before reading the database again: the
# bound on how late it notices a change made by *another* process (a revocation, an MSP's
# suspension, a tenant created or deleted).
REMEMBER_SECONDS = 2.0
REMEMBER_SIZE = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Remembered(Generic[K, V]):
    """Values kept ``ttl`` seconds (least recently used evicted past ``size``).

    ``invalidate`` forgets everything and bumps a generation: a reader that read the database
    before a change committed cannot store its stale answer after it (it passes ``put`` the
    generation it saw before reading)."""

    def __init__(
        self,
        ttl: float = REMEMBER_SECONDS,
        size: int = REMEMBER_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self.generation = 0
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock() - entry[0] >= self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, generation: int) -> None:
        if generation != self.generation or self.ttl <= 0:
            return
        self._entries[key] = (self.clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def invalidate(self, *_args: Any) -> None:
        self.generation += 1
        self._entries.clear()

    def forget_with(self, session: Session) -> None:
        """Forget now and again once ``session``'s transaction commits, so that no request of
        this process that read before the commit keeps the old answer."""
        self.invalidate()
        event.listen(session, "after_commit", self.invalidate, once=True)
