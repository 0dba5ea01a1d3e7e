"""Which of Microsoft's throttling regimes a request falls under, and the limiter keys that
follow from it.

Exchange throttles per app per mailbox, SharePoint and OneDrive per app per tenant, and
everything else (the directory) per tenant. The patterns below are the one place that knows
which Graph paths belong to which regime.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from safekeep.graph.options import Scope

_VERSION = r"/(?:v1\.0|beta)"
EXCHANGE_PATH = re.compile(
    _VERSION + r"/users/([^/?]+)/(?:messages|mailFolders|events|calendar|calendars|calendarView|"
    r"calendarGroups|contacts|contactFolders|mailboxSettings|outlook|inferenceClassification|"
    r"todo)(?:[/?(]|$)",
    re.IGNORECASE,
)
SHAREPOINT_PATH = re.compile(
    _VERSION
    + r"/(?:drives|sites|shares)(?:[/?]|$)|"
    + _VERSION
    + r"/(?:users|groups)/[^/]+/drives?(?:[/?]|$)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Target:
    """Where a request's limits live: its mailbox slot key, the tenant-wide slot key of the
    SharePoint and OneDrive regime, the pauses it obeys, and the key its Retry-After (and
    the 429s its concurrency window learns from) belong to."""

    slot: str | None
    clear: tuple[str, ...]
    record: str
    shared: str | None = None


def scope_of(path: str) -> tuple[Scope, str | None]:
    """The regime of a versioned Graph path, and the mailbox it names if it is Exchange's."""
    match = EXCHANGE_PATH.match(path)
    if match:
        return "exchange", unquote(match.group(1))
    if SHAREPOINT_PATH.match(path):
        return "sharepoint", None
    return "tenant", None


def target_for(tenant: str, path: str, mailbox: str | None, scope: Scope | None) -> Target:
    """The limiter keys for a request to ``path`` (empty for a URL outside Graph)."""
    kind, derived = scope_of(path) if scope is None else (scope, None)
    who = mailbox or derived
    slot = f"{tenant}:mailbox:{who.lower()}" if who else None
    if kind == "exchange" and slot is not None:
        return Target(slot, (tenant, slot), slot)
    if kind == "sharepoint":
        key = f"{tenant}:sharepoint"
        return Target(slot, (tenant, key), key, shared=key)
    return Target(slot, (tenant,), tenant)


def exchange_mailboxes(paths: Iterable[str]) -> set[str]:
    """The mailboxes (lower-cased) that the Exchange paths among ``paths`` address."""
    found: set[str] = set()
    for path in paths:
        match = EXCHANGE_PATH.match(path)
        if match:
            found.add(unquote(match.group(1)).lower())
    return found
