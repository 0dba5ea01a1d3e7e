"""Per-mailbox in-flight Graph requests over time, for ``/_sim/counters``.

Microsoft lets an app keep 4 requests in flight per mailbox; a backup that keeps close to
that finishes a large mailbox sooner. What a bench wants to know is how close it came
while the mailbox still had work: the time-weighted mean of the number of requests in
flight, from the start of the mailbox's first request to the end of its last one in the
window (since the counters were last reset). The integral is kept exactly (every start
and end moves it), with per-second buckets of it so the figure can be seen over time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BUCKET_S = 1.0


@dataclass
class _Mailbox:
    level: int = 0  # requests in flight now
    changed: float = 0.0  # when ``level`` last changed (or the window started)
    busy: float = 0.0  # integral of ``level`` over time in the window: request-seconds
    first: float | None = None  # start of the first request in the window
    last: float | None = None  # end of the last request in the window
    requests: int = 0
    peak: int = 0
    buckets: dict[int, float] = field(default_factory=dict)  # second -> request-seconds
    at_level: dict[int, float] = field(default_factory=dict)  # level >= 1 -> seconds at it


class InFlight:
    """Thread-safe: the server's event loop records, a test or bench thread reads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._origin = clock()
        self._mailboxes: dict[str, _Mailbox] = {}

    def begin(self, key: str) -> str:
        """A request for mailbox ``key`` is now in flight; pass the result to ``end``."""
        with self._lock:
            now = self._clock()
            box = self._mailboxes.setdefault(key, _Mailbox(changed=now))
            self._advance(box, now)
            box.level += 1
            box.requests += 1
            box.peak = max(box.peak, box.level)
            if box.first is None:
                box.first = now
        return key

    def end(self, key: str | None) -> None:
        if key is None:
            return
        with self._lock:
            box = self._mailboxes.get(key)
            if box is None or box.level <= 0:
                return
            now = self._clock()
            self._advance(box, now)
            box.level -= 1
            box.last = now

    def reset(self) -> None:
        """A new window: what is in flight now stays in flight and counts from now."""
        with self._lock:
            now = self._clock()
            self._origin = now
            kept = {k: b.level for k, b in self._mailboxes.items() if b.level > 0}
            self._mailboxes = {
                k: _Mailbox(level=level, changed=now, first=now, peak=level)
                for k, level in kept.items()
            }

    def _advance(self, box: _Mailbox, now: float) -> None:
        """Add ``level`` times the time since the last change to the integral and its
        per-second buckets."""
        start = box.changed
        box.changed = now
        if box.level <= 0 or now <= start:
            return
        box.busy += box.level * (now - start)
        box.at_level[box.level] = box.at_level.get(box.level, 0.0) + (now - start)
        t = start
        while t < now:
            second = math.floor((t - self._origin) / BUCKET_S)
            edge = min(now, self._origin + (second + 1) * BUCKET_S)
            box.buckets[second] = box.buckets.get(second, 0.0) + box.level * (edge - t)
            t = edge

    def as_dict(self) -> dict[str, Any]:
        """Per mailbox: requests, peak, request-seconds in flight (``busy_s``), the span from
        its first request's start to its last one's end (``span_s``; up to now while one is
        in flight), ``mean`` = busy_s / span_s, ``levels``: the seconds of the span spent
        at each number in flight ("0": between requests), and ``timeline``: the mean in
        flight per second of the window, from the second of its first request."""
        with self._lock:
            now = self._clock()
            out: dict[str, Any] = {}
            for key, box in self._mailboxes.items():
                self._advance(box, now)
                if box.first is None:
                    continue
                end = now if box.level > 0 else (box.last or box.first)
                span = max(0.0, end - box.first)
                seconds = sorted(box.buckets)
                lo = seconds[0] if seconds else 0
                hi = seconds[-1] if seconds else -1
                out[key] = {
                    "requests": box.requests,
                    "now": box.level,
                    "peak": box.peak,
                    "busy_s": round(box.busy, 6),
                    "span_s": round(span, 6),
                    "mean": round(box.busy / span, 4) if span > 0 else None,
                    "levels": _levels(box.at_level, span),
                    "timeline": {
                        "start_s": lo * BUCKET_S,
                        "step_s": BUCKET_S,
                        "values": [
                            round(box.buckets.get(s, 0.0) / BUCKET_S, 3) for s in range(lo, hi + 1)
                        ],
                    },
                }
            return out


def _levels(at_level: dict[int, float], span: float) -> dict[str, float]:
    """Seconds of the span spent at each number of requests in flight, "0" included (the
    span less the time at one or more): where a mean below 4 comes from, idle mailboxes or
    partly used ones."""
    out = {str(level): round(seconds, 6) for level, seconds in sorted(at_level.items())}
    return {"0": round(max(0.0, span - sum(at_level.values())), 6), **out}


def level_shares(per_mailbox: dict[str, Any]) -> dict[int, float]:
    """Across mailboxes, the share of their spans spent at each number in flight."""
    span = sum(float(m["span_s"]) for m in per_mailbox.values())
    seconds: dict[int, float] = {}
    for mailbox in per_mailbox.values():
        for level, spent in (mailbox.get("levels") or {}).items():
            seconds[int(level)] = seconds.get(int(level), 0.0) + float(spent)
    return {level: spent / span for level, spent in sorted(seconds.items())} if span > 0 else {}


def time_weighted_mean(per_mailbox: dict[str, Any]) -> float | None:
    """Across mailboxes, weighted by how long each had work: total request-seconds in
    flight over total span (None when no mailbox had a request)."""
    span = sum(float(m["span_s"]) for m in per_mailbox.values())
    if span <= 0:
        return None
    return sum(float(m["busy_s"]) for m in per_mailbox.values()) / span
