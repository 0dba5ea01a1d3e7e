"""Prometheus counters the Graph client updates.

They live beside the client, not in ``safekeep.api``, because ``graph/`` imports nothing of
ours; each process that serves ``/metrics`` (the API, ``safekeep worker --metrics-port``)
imports this module and so exports them.
"""

from __future__ import annotations

from prometheus_client import Counter

GRAPH_THROTTLED = Counter(
    "safekeep_graph_throttled_responses",
    "Microsoft Graph answers that throttled a request (429, or 503 with Retry-After)",
    ["status"],
)
GRAPH_RETRY_AFTER_WAIT = Counter(
    "safekeep_graph_retry_after_wait_seconds",
    "Time requests spent waiting for a Graph Retry-After pause to pass",
)
for _status in ("429", "503"):
    GRAPH_THROTTLED.labels(_status)
