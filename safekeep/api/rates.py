"""How fast one API key, and one MSP, may call one API process: token buckets.

An API process's capacity (a few hundred requests a second: one event loop) is shared by every
key that reaches it. A partner portal stuck in a retry loop, or a leaked key in someone's
script, must not take it from the others: another MSP's portal, or the same MSP's other keys.
Each process admits a key's requests at up to a rate, after a burst (a portal opening a
dashboard sends a few dozen at once), and an MSP's keys together at up to a larger one (a
hundred keys must not buy a hundred times the rate); beyond either, a request is answered 429
with ``Retry-After`` before any work is done for it.

The limit is per process on purpose: what it protects is that process's loop, and it costs a
dictionary lookup, not a round trip to Redis per request (about 0.14 ms of the API's CPU, a
tenth of a tenant read). With R API pods, a key whose connections a load balancer spreads
over them gets at most R times the rate.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from safekeep.settings import Settings

# Buckets kept at most; past this, the full ones (keys idle long enough to have refilled,
# which a new bucket would equal) are dropped. Only authenticated keys get a bucket.
MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float  # when ``tokens`` was last brought up to date


class TokenBuckets:
    """A token bucket per id (an API key's, an MSP's); ``rate`` 0 admits everything. Used
    from one event loop (the API's), so no lock: ``admit`` never awaits."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[uuid.UUID, _Bucket] = {}

    def admit(self, owner: uuid.UUID) -> float:
        """Take one token from ``owner``'s bucket: 0.0 when admitted, else the seconds until a
        token is there again (nothing is taken from a refused request)."""
        if not self.rate:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(owner)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_full(now)
            bucket = self._buckets[owner] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def give_back(self, owner: uuid.UUID) -> None:
        """Return the token ``admit`` just took from ``owner`` (for a request refused by
        another bucket after this one admitted it)."""
        bucket = self._buckets.get(owner)
        if self.rate and bucket is not None:
            bucket.tokens = min(float(self.burst), bucket.tokens + 1.0)

    def _drop_full(self, now: float) -> None:
        refill = self.burst / self.rate
        self._buckets = {
            key: bucket for key, bucket in self._buckets.items() if now - bucket.stamp < refill
        }


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request past a bucket: whose, that bucket's terms, and how long to wait."""

    whose: str  # "API key" or "MSP"
    rate: float
    burst: int
    wait: float

    @property
    def seconds(self) -> int:
        """``Retry-After``: whole seconds, at least one."""
        return max(1, math.ceil(self.wait))

    @property
    def detail(self) -> str:
        return (
            f"This {self.whose} sent more than {self.rate:g} requests a second (after a burst of "
            f"{self.burst}) to this server; retry in {self.seconds} s"
        )


class RequestRates:
    """The buckets a request takes from: its key's, then its MSP's. A request the MSP's bucket
    refuses gets its key's token back: a key pays only for what was served, so one busy key of
    an MSP does not also drain the budget of the MSP's other keys that were refused with it."""

    def __init__(self, keys: TokenBuckets, msps: TokenBuckets) -> None:
        self.keys = keys
        self.msps = msps

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestRates:
        return cls(
            TokenBuckets(settings.api_key_rate_per_second, settings.api_key_burst),
            TokenBuckets(settings.api_msp_rate_per_second, settings.api_msp_burst),
        )

    def admit(self, key_id: uuid.UUID, msp_id: uuid.UUID) -> Refusal | None:
        wait = self.keys.admit(key_id)
        if wait:
            return Refusal("API key", self.keys.rate, self.keys.burst, wait)
        wait = self.msps.admit(msp_id)
        if wait:
            self.keys.give_back(key_id)
            return Refusal("MSP", self.msps.rate, self.msps.burst, wait)
        return None
