"""How fast one API key may call one API process: a token bucket per key.

An API process's capacity (a few hundred requests a second: one event loop) is shared by every
key that reaches it. A partner portal stuck in a retry loop, or a leaked key in someone's
script, must not take it from the others: another MSP's portal, or the same MSP's other keys.
Each process admits a key's requests at up to ``rate`` a second, after a burst of up to
``burst`` (a portal opening a dashboard sends a few dozen at once); beyond that a request is
answered 429 with ``Retry-After`` before any work is done for it.

The limit is per process on purpose: what it protects is that process's loop, and it costs a
dictionary lookup, not a round trip to Redis per request (about 0.14 ms of the API's CPU, a
tenth of a tenant read). With R API pods, a key whose connections a load balancer spreads
over them gets at most R times the rate.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

# Buckets kept at most; past this, the full ones (keys idle long enough to have refilled,
# which a new bucket would equal) are dropped. Only authenticated keys get a bucket.
MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float  # when ``tokens`` was last brought up to date


class KeyRates:
    """Token buckets by API key id; ``rate`` 0 admits everything. Used from one event loop
    (the API's), so no lock: ``admit`` never awaits."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[uuid.UUID, _Bucket] = {}

    def admit(self, key_id: uuid.UUID) -> float:
        """Take one token for ``key_id``: 0.0 when admitted, else the seconds until a token
        is there again (nothing is taken from a refused request)."""
        if not self.rate:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_full(now)
            bucket = self._buckets[key_id] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _drop_full(self, now: float) -> None:
        refill = self.burst / self.rate
        self._buckets = {
            key: bucket for key, bucket in self._buckets.items() if now - bucket.stamp < refill
        }
