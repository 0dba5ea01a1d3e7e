"""Small factories for search documents and queries used across the search tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from safekeep.search import SearchDocument, SearchQuery

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


def doc(**overrides: Any) -> SearchDocument:
    """A current mail message of tenant "ta", account "a1", unless overridden."""
    n = next(_ids)
    fields: dict[str, Any] = {
        "version_id": f"v{n:05d}",
        "msp_id": "msp1",
        "tenant_id": "ta",
        "account_id": "a1",
        "service": "mail",
        "item_id": f"item{n:05d}",
        "folder_path": "/Inbox",
        "kind": "message",
        "title": "Weekly status",
        "valid_from": T0,
        "date": T0 + timedelta(hours=n),
        "size": 1_000,
        "sender": "Bob Builder <bob@fabrikam.example>",
        "recipients": ["Carol <carol@tailspin.example>"],
        "body": "Nothing special here.",
    }
    fields.update(overrides)
    return SearchDocument(**fields)


def q(text: str = "", tenants: tuple[str, ...] = ("ta",), **kw: Any) -> SearchQuery:
    return SearchQuery(tenant_ids=frozenset(tenants), text=text, **kw)


def ids(page: Any) -> list[str]:
    return [hit.version_id for hit in page.hits]
