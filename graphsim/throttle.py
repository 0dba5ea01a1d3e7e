"""Throttling as Microsoft documents it, plus injected latency and faults.

Figures (defaults of ``ThrottleConfig``; every one can be changed per simulator):

* Exchange (Outlook mail, calendar, contacts) per app per mailbox: 4 concurrent requests and
  10,000 requests per 10 minutes. Source: Microsoft Graph service-specific throttling limits,
  "Outlook service limits" (concepts/throttling-limits.md, microsoftgraph/
  microsoft-graph-docs-contrib); over concurrency Exchange answers 429 ``ApplicationThrottled``
  "Application is over its MailboxConcurrency limit.".
* SharePoint and OneDrive per app per tenant, resource units per minute by licence count:
  0-1,000 licences 1,250; 1,000-5,000 2,500; 5,000-15,000 3,750; 15,000-50,000 5,000; 50,000+
  6,250. A request costs 1 unit (single GET, delta with a token, download), 2 (listing
  children, delta without a token, create, update, delete, upload) or 5 (permissions).
  Per user: 3,000 requests per 5 minutes. Source: "Avoid getting throttled or blocked in
  SharePoint Online" (learn.microsoft.com/sharepoint/dev/general-development/
  how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online).
* Near the SharePoint budget (80 % of the minute's resource units by default) successful
  answers carry ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds),
  as the same SharePoint page describes for app-only callers.
* A throttled answer carries ``Retry-After`` (whole seconds unless ``fractional_retry_after``)
  and a client (app + tenant + mailbox, or app + tenant for SharePoint) that comes back
  before it elapses is counted as a violation and throttled again.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from graphsim.http import GraphError

SHAREPOINT_UNITS_BY_LICENCES: tuple[tuple[int, int], ...] = (
    (1_000, 1_250),
    (5_000, 2_500),
    (15_000, 3_750),
    (50_000, 5_000),
)
SHAREPOINT_UNITS_MAX = 6_250


def sharepoint_units_for(licences: int) -> int:
    for upper, units in SHAREPOINT_UNITS_BY_LICENCES:
        if licences <= upper:
            return units
    return SHAREPOINT_UNITS_MAX


@dataclass
class ThrottleConfig:
    mode: str = "microsoft"  # "microsoft" | "off" | "custom" (custom: figures below as given)
    mailbox_concurrency: int = 4
    mailbox_requests: int = 10_000
    mailbox_window_s: float = 600.0
    sharepoint_units_per_minute: int | None = None  # None: by the tenant's licence count
    sharepoint_user_requests: int = 3_000
    sharepoint_user_window_s: float = 300.0
    concurrency_retry_after_s: float = 1.0
    sharepoint_status: int = 429
    fractional_retry_after: bool = False
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0  # share of Graph requests answered 503 with Retry-After
    error_retry_after_s: float = 1.0
    # Requests arriving this soon after a 429 were most likely sent before the client saw it:
    # they are throttled too but not counted as Retry-After violations.
    violation_grace_s: float = 0.25
    # SharePoint adds RateLimit-Limit/-Remaining/-Reset once an app has used this share of
    # its per-minute resource units (app permissions only, which is all graphsim serves).
    rate_limit_warning: float = 0.8

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown throttling setting {key!r}")
            current = getattr(self, key)
            if current is not None and value is not None and not isinstance(value, type(current)):
                value = type(current)(value)
            setattr(self, key, value)
        if self.mode not in ("microsoft", "off", "custom"):
            raise ValueError("mode must be microsoft, off or custom")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Counters:
    """What clients sent. Wire requests (one per HTTP request, whatever it is) are in
    ``total``, ``by_kind``, ``by_endpoint`` and ``by_status``; the requests carried inside
    ``$batch`` envelopes are in ``batch_requests``, ``batch_by_endpoint`` and
    ``batch_by_status`` (the envelope itself is one wire request of kind ``batch``).
    ``by_mailbox`` and ``by_tenant`` count Graph operations, inner ones included, since
    that is what Graph's limits count."""

    total: int = 0
    throttled: int = 0
    retry_after_violations: int = 0
    injected_errors: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_endpoint: dict[str, int] = field(default_factory=dict)
    by_mailbox: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    by_tenant: dict[str, int] = field(default_factory=dict)
    batch_requests: int = 0
    batch_by_endpoint: dict[str, int] = field(default_factory=dict)
    batch_by_status: dict[str, int] = field(default_factory=dict)
    max_concurrency: dict[str, int] = field(default_factory=dict)
    # Outlook requests (inner ones included) that did not ask for immutable ids, by endpoint.
    # graphsim's ids never change, but Exchange's do when an item moves unless a client asks
    # (``Prefer: IdType="ImmutableId"``): a client that compares ids across runs must ask on
    # every request, and this is where one that forgot shows.
    without_immutable_ids: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Throttler:
    """Admission control for Graph requests; one per simulator, thread-safe."""

    def __init__(self, config: ThrottleConfig, seed: int) -> None:
        self.config = config
        self.counters = Counters()
        self._lock = threading.Lock()
        self._rng = random.Random(f"faults:{seed}")
        self._inflight: dict[tuple[str, ...], int] = {}
        self._mailbox_log: dict[tuple[str, ...], deque[float]] = {}
        self._units_log: dict[tuple[str, ...], deque[tuple[float, int]]] = {}
        self._user_log: dict[tuple[str, ...], deque[float]] = {}
        self._blocked_until: dict[tuple[str, ...], tuple[float, float]] = {}

    def reset_counters(self) -> None:
        with self._lock:
            self.counters = Counters()

    def reset(self) -> None:
        with self._lock:
            self.counters = Counters()
            self._inflight.clear()
            self._mailbox_log.clear()
            self._units_log.clear()
            self._user_log.clear()
            self._blocked_until.clear()

    def latency_s(self) -> float:
        cfg = self.config
        if cfg.latency_ms <= 0 and cfg.latency_jitter_ms <= 0:
            return 0.0
        with self._lock:
            jitter = self._rng.uniform(0, cfg.latency_jitter_ms) if cfg.latency_jitter_ms else 0
        return max(0.0, (cfg.latency_ms + jitter) / 1000)

    def _retry_after(self, seconds: float) -> str:
        if self.config.fractional_retry_after:
            return f"{max(seconds, 0.001):.3f}"
        return str(max(1, math.ceil(seconds)))

    def record(
        self,
        endpoint: str,
        mailbox: str | None,
        tenant: str | None,
        status: int,
        *,
        inner: bool = False,
    ) -> None:
        """One Graph request: a wire request, or one carried in a ``$batch`` (``inner``)."""
        with self._lock:
            c = self.counters
            if mailbox:
                c.by_mailbox[mailbox] = c.by_mailbox.get(mailbox, 0) + 1
            if tenant:
                c.by_tenant[tenant] = c.by_tenant.get(tenant, 0) + 1
            if inner:
                c.batch_requests += 1
                _bump(c.batch_by_endpoint, endpoint)
                _bump(c.batch_by_status, str(status))
                return
            self._wire(c, "batch" if endpoint.endswith("/$batch") else "graph", endpoint, status)

    def record_mutable_ids(self, endpoint: str) -> None:
        """An Outlook request that did not ask for immutable ids."""
        with self._lock:
            _bump(self.counters.without_immutable_ids, endpoint)

    def record_wire(self, kind: str, endpoint: str, status: int) -> None:
        """A wire request outside Graph: token, sign-in, download or upload."""
        with self._lock:
            self._wire(self.counters, kind, endpoint, status)

    @staticmethod
    def _wire(c: Counters, kind: str, endpoint: str, status: int) -> None:
        c.total += 1
        _bump(c.by_kind, kind)
        _bump(c.by_endpoint, endpoint)
        _bump(c.by_status, str(status))

    def admit(
        self,
        *,
        service: str,
        app: str,
        tenant: str,
        mailbox: str | None,
        licences: int,
        cost: int,
    ) -> tuple[str, ...] | None:
        """Admit a request or raise a throttling ``GraphError``; return the slot to release."""
        cfg = self.config
        now = time.monotonic()
        with self._lock:
            if cfg.error_rate > 0 and self._rng.random() < cfg.error_rate:
                self.counters.injected_errors += 1
                raise GraphError(
                    503,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable. Please retry after some time.",
                    headers={"Retry-After": self._retry_after(cfg.error_retry_after_s)},
                )
            if cfg.mode == "off" or service in ("directory", "teams"):
                return None  # Teams has its own limits (graphsim.teams_throttle)
            if service == "exchange" and mailbox:
                client: tuple[str, ...] = ("exchange", app, tenant, mailbox)
            else:
                client = ("sharepoint", app, tenant)
            blocked = self._blocked_until.get(client)
            if blocked is not None and now < blocked[0]:
                if now - blocked[1] > cfg.violation_grace_s:
                    self.counters.retry_after_violations += 1
                self.counters.throttled += 1
                raise self._error(service, blocked[0] - now, "violation")
            if service == "exchange" and mailbox:
                return self._admit_exchange(client, now)
            return self._admit_sharepoint(client, now, licences, cost, mailbox)

    def _error(self, service: str, wait: float, reason: str) -> GraphError:
        headers = {"Retry-After": self._retry_after(wait)}
        if service == "exchange":
            if reason == "concurrency":
                message = "Application is over its MailboxConcurrency limit."
            else:
                message = "Application is over its MailboxRequests limit."
            return GraphError(429, "ApplicationThrottled", message, headers=headers)
        status = self.config.sharepoint_status
        return GraphError(
            status,
            "activityLimitReached",
            "The request has been throttled",
            headers=headers,
            inner_code="throttledRequest",
        )

    def _block(self, client: tuple[str, ...], now: float, wait: float) -> float:
        if not self.config.fractional_retry_after:
            wait = max(1, math.ceil(wait))
        self._blocked_until[client] = (now + wait, now)
        self.counters.throttled += 1
        return wait

    def _admit_exchange(self, client: tuple[str, ...], now: float) -> tuple[str, ...] | None:
        cfg = self.config
        inflight = self._inflight.get(client, 0)
        if inflight >= cfg.mailbox_concurrency:
            wait = self._block(client, now, cfg.concurrency_retry_after_s)
            raise self._error("exchange", wait, "concurrency")
        log = self._mailbox_log.setdefault(client, deque())
        full = _window_full(log, now, cfg.mailbox_window_s, cfg.mailbox_requests)
        if full is not None:
            raise self._error("exchange", self._block(client, now, full), "budget")
        log.append(now)
        self._inflight[client] = inflight + 1
        key = "|".join(client[2:])
        peak = self.counters.max_concurrency.get(key, 0)
        self.counters.max_concurrency[key] = max(peak, inflight + 1)
        return client

    def _admit_sharepoint(
        self, client: tuple[str, ...], now: float, licences: int, cost: int, user: str | None
    ) -> tuple[str, ...] | None:
        cfg = self.config
        limit = cfg.sharepoint_units_per_minute or sharepoint_units_for(licences)
        log = self._units_log.setdefault(client, deque())
        horizon = now - 60.0
        while log and log[0][0] <= horizon:
            log.popleft()
        used = sum(units for _, units in log)
        if used + cost > limit:
            wait = self._block(client, now, (log[0][0] + 60.0 - now) if log else 1.0)
            raise self._error("sharepoint", wait, "units")
        if user:
            user_client = (*client, user)
            ulog = self._user_log.setdefault(user_client, deque())
            full = _window_full(
                ulog, now, cfg.sharepoint_user_window_s, cfg.sharepoint_user_requests
            )
            if full is not None:
                raise self._error("sharepoint", self._block(client, now, full), "user")
            ulog.append(now)
        log.append((now, cost))
        return None

    def rate_limit_headers(self, *, app: str, tenant: str, licences: int) -> dict[str, str]:
        """The RateLimit headers SharePoint sends near an app's per-minute budget."""
        cfg = self.config
        if cfg.mode == "off":
            return {}
        limit = cfg.sharepoint_units_per_minute or sharepoint_units_for(licences)
        now = time.monotonic()
        with self._lock:
            log = self._units_log.get(("sharepoint", app, tenant))
            if not log:
                return {}
            while log and log[0][0] <= now - 60.0:
                log.popleft()
            used = sum(units for _, units in log)
            if used < cfg.rate_limit_warning * limit or not log:
                return {}
            reset = max(1, math.ceil(log[0][0] + 60.0 - now))
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(max(0, limit - used)),
            "RateLimit-Reset": str(reset),
        }

    def release(self, slot: tuple[str, ...] | None) -> None:
        if slot is None:
            return
        with self._lock:
            remaining = self._inflight.get(slot, 0) - 1
            if remaining <= 0:
                self._inflight.pop(slot, None)
            else:
                self._inflight[slot] = remaining


def _window_full(log: deque[float], now: float, window: float, most: int) -> float | None:
    """A sliding window of request times (mailbox budget, SharePoint per-user rate): drops
    the times older than ``window``; when ``most`` remain, the seconds until the oldest leaves
    (the Retry-After), else None."""
    while log and log[0] <= now - window:
        log.popleft()
    return log[0] + window - now if len(log) >= most else None


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1
