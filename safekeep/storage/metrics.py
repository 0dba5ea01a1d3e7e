"""Prometheus counters the blob stores update.

They live beside the stores, not in ``safekeep.api``, because ``storage/`` imports nothing of
ours; each process that serves ``/metrics`` imports this module and so exports them.
"""

from __future__ import annotations

from prometheus_client import Counter

BLOBSTORE_ERRORS = Counter(
    "safekeep_blobstore_errors",
    "Blob store calls that failed: unavailable (transport or 5xx) or failed (any other error)",
    ["kind"],
)
for _kind in ("unavailable", "failed"):
    BLOBSTORE_ERRORS.labels(_kind)
