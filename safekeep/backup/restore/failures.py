"""Which errors met while restoring one item are the item's, and which are the job's.

A restore reports an item as failed only for a reason that trying again would not change: the
target refused it, its stored copy is missing. A blip of our own infrastructure (the blob
store unreachable, the database restarting) or of Microsoft Graph that outlasted the client's
own retries (throttled, 5xx) is not the item's: it propagates, ``lifecycle.run_job`` retries
the whole job with backoff, and the retry skips what the earlier attempt already put in the
target (``identity.py``: the restore's folder name and the job's stamp stay the same).
"""

from __future__ import annotations

from safekeep.graph.errors import Throttled, TransientError
from safekeep.transient import is_transient


def retries_the_job(exc: BaseException) -> bool:
    """Whether ``exc``, met while restoring one item, must stop the attempt (to be retried)
    rather than fail the item."""
    return is_transient(exc) or isinstance(exc, Throttled | TransientError)


def first_error(exc: BaseException) -> BaseException:
    """The first error an ``asyncio.TaskGroup`` raised, out of its exception group, so that
    the job's lifecycle classifies the error itself (a group is never transient)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
