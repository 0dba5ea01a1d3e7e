"""Teams throttling as Microsoft documents it (concepts/throttling-limits.md, "Microsoft Teams
service limits"): requests per second per app per tenant by request type, and at most 4
requests per second per app on a given team or channel. (The 3,000 messages per app per day
a channel takes outside migration mode cannot be reached: an application may post only in
migration mode, which is exempt.) A throttled request gets 429 ``TooManyRequests``
with a whole-second ``Retry-After``.

The limits are kept in one-second sliding windows. ``TeamsLimits.scale`` multiplies every
rate (tests that are not about throttling may raise it); the simulator's throttling mode
``off`` turns them off with the rest.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from graphsim.http import GraphError, Req

# (method, category) -> requests per second per app per tenant
RATES: dict[str, int] = {
    "get_entity": 30,  # GET team, channel, tab
    "write_entity": 30,  # POST/PUT/PATCH channel, tab
    "delete_entity": 15,
    "post_teams": 10,
    "get_members": 60,  # GET /teams/{id}/members, /channels, /channels/{id}/members
    "get_channel_message": 20,
    "get_chat_message": 20,
    "post_channel_message": 50,
    "post_chat_message": 20,
    "other_get": 30,
    "other": 30,
}
PER_TEAM_RPS = 4


@dataclass
class TeamsLimits:
    enabled: bool = True
    scale: float = 1.0
    per_team_rps: int = PER_TEAM_RPS
    retry_after_s: int = 1

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown Teams throttling setting {key!r}")
            setattr(self, key, type(getattr(self, key))(value))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TeamsThrottler:
    limits: TeamsLimits = field(default_factory=TeamsLimits)
    _log: dict[tuple[str, ...], deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, req: Req, category: str, scope: str | None) -> None:
        """Count the request in its windows, or raise 429 if one of them is full."""
        limits = self.limits
        if not limits.enabled:
            return
        assert req.tenant is not None
        now = time.monotonic()
        rate = max(1, int(RATES[category] * limits.scale))
        keys: list[tuple[tuple[str, ...], int]] = [
            (("type", req.app_id, req.tenant.id, category), rate)
        ]
        if scope:
            per_scope = max(1, int(limits.per_team_rps * limits.scale))
            keys.append((("scope", req.app_id, scope), per_scope))
        with self._lock:
            for key, limit in keys:
                log = self._log.setdefault(key, deque())
                while log and log[0] <= now - 1.0:
                    log.popleft()
                if len(log) >= limit:
                    raise too_many(limits.retry_after_s)
            for key, _ in keys:
                self._log[key].append(now)

    def reset(self) -> None:
        with self._lock:
            self._log.clear()


def too_many(retry_after: int) -> GraphError:
    return GraphError(
        429,
        "TooManyRequests",
        "Too many requests. Please retry after the time in the Retry-After header.",
        headers={"Retry-After": str(max(1, retry_after))},
    )
