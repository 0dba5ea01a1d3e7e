"""Every route of the API with the scope it needs and a valid body, for the matrix and the
isolation suite. A route added to the app but missing here fails test_every_route_listed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {tenant_id}, {account_id}, {job_id}, {item_id}, {export_id}, ...
    scope: str  # the scope that admits it ("admin" routes refuse any other)
    body: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)
    ids: tuple[str, ...] = ()  # the id placeholders it takes

    def url(self, ids: dict[str, str]) -> str:
        return self.path.format(**ids)


def _r(
    method: str, path: str, scope: str, body: dict[str, Any] | None = None, **query: str
) -> Route:
    import re

    names = tuple(re.findall(r"{(\w+)}", path))
    return Route(method, path, scope, body, dict(query), names)


ITEMS = "/v1/tenants/{tenant_id}/accounts/{account_id}/items"

ROUTES: list[Route] = [
    _r("GET", "/v1/api-keys", "admin"),
    _r("POST", "/v1/api-keys", "admin", {"name": "k", "scopes": ["read"]}),
    _r("GET", "/v1/api-keys/{key_id}", "admin"),
    _r("DELETE", "/v1/api-keys/{key_id}", "admin"),
    _r("GET", "/v1/tenants", "read"),
    _r("POST", "/v1/tenants", "admin", {"name": "New client"}),
    _r("GET", "/v1/tenants/{tenant_id}", "read"),
    _r("PATCH", "/v1/tenants/{tenant_id}", "admin", {"name": "Renamed"}),
    _r("DELETE", "/v1/tenants/{tenant_id}", "admin"),
    _r("POST", "/v1/tenants/{tenant_id}/consent", "admin"),
    _r("POST", "/v1/tenants/{tenant_id}/consent/release", "admin"),
    _r("POST", "/v1/tenants/{tenant_id}/discover", "backup"),
    _r("GET", "/v1/tenants/{tenant_id}/policy", "read"),
    _r("PUT", "/v1/tenants/{tenant_id}/policy", "admin", {"backups_per_day": 4}),
    _r("GET", "/v1/tenants/{tenant_id}/accounts", "read"),
    _r("GET", "/v1/tenants/{tenant_id}/accounts/{account_id}", "read"),
    _r("PATCH", "/v1/tenants/{tenant_id}/accounts/{account_id}", "admin", {"protected": False}),
    _r(
        "POST",
        "/v1/tenants/{tenant_id}/accounts/{account_id}/purge",
        "admin",
        {"confirm": "{account_id}"},
    ),
    _r("POST", "/v1/tenants/{tenant_id}/backups", "backup", {}),
    _r("GET", "/v1/tenants/{tenant_id}/jobs", "read"),
    _r("GET", "/v1/jobs/{job_id}", "read"),
    _r("POST", "/v1/jobs/{job_id}/cancel", "backup"),
    _r("GET", "/v1/jobs", "read"),
    _r("GET", "/v1/accounts", "read"),
    _r("GET", "/v1/tenants/{tenant_id}/snapshots", "read"),
    _r("GET", "/v1/usage", "read"),
    _r("GET", "/v1/billing", "read"),
    _r("GET", "/v1/audit-events", "read"),
    _r("GET", "/v1/webhooks", "admin"),
    _r(
        "POST",
        "/v1/webhooks",
        "admin",
        {"url": "https://example.com/h", "events": ["export.ready"]},
    ),
    _r("GET", "/v1/webhooks/{webhook_id}", "admin"),
    _r("PATCH", "/v1/webhooks/{webhook_id}", "admin", {"description": "Partner portal"}),
    _r("POST", "/v1/webhooks/{webhook_id}/secret", "admin", {}),
    _r("DELETE", "/v1/webhooks/{webhook_id}", "admin"),
    _r("GET", "/v1/webhooks/{webhook_id}/deliveries", "admin"),
    _r("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", "admin"),
    _r("POST", "/v1/webhooks/{webhook_id}/ping", "admin"),
    _r("POST", "/v1/webhooks/{webhook_id}/recover", "admin", {"since": "2026-12-01T00:00:00Z"}),
    _r("GET", ITEMS, "read", service="onedrive"),
    _r("GET", ITEMS + "/{item_id}", "read"),
    _r("GET", ITEMS + "/{item_id}/versions", "read"),
    _r("GET", ITEMS + "/{item_id}/content", "read"),
    _r(
        "POST",
        "/v1/tenants/{tenant_id}/restores",
        "restore",
        {"scope": {"type": "service", "account_id": "{account_id}", "service": "onedrive"}},
    ),
    _r("GET", "/v1/tenants/{tenant_id}/restores", "read"),
    _r(
        "POST",
        "/v1/tenants/{tenant_id}/exports",
        "export",
        {"scope": {"type": "service", "account_id": "{account_id}", "service": "onedrive"}},
    ),
    _r("GET", "/v1/tenants/{tenant_id}/exports", "read"),
    _r("GET", "/v1/exports/{export_id}", "read"),
    _r("GET", "/v1/exports/{export_id}/download", "export"),
    _r("GET", "/v1/exports/{export_id}/url", "export"),
    _r("GET", "/v1/search", "read"),
    _r("GET", "/v1/tenants/{tenant_id}/search", "read"),
    _r("GET", "/v1/tenants/{tenant_id}/subscriptions", "read"),
    _r("GET", "/v1/tenants/{tenant_id}/detections", "read"),
    _r("GET", "/v1/tenants/{tenant_id}/detections/{detection_id}", "read"),
    _r("POST", "/v1/tenants/{tenant_id}/detections/{detection_id}/acknowledge", "backup"),
    _r("POST", "/v1/tenants/{tenant_id}/detections/{detection_id}/release", "admin"),
    _r("POST", "/v1/tenants/{tenant_id}/detections/{detection_id}/restore", "restore"),
    _r("GET", "/v1/tenants/{tenant_id}/detection-thresholds", "read"),
    _r(
        "PUT",
        "/v1/tenants/{tenant_id}/detection-thresholds",
        "admin",
        {"min_files": 20, "min_deletions": 100, "sigmas": 4},
    ),
]

# Routes that take no MSP key (/metrics takes the operator's token: tests/api/test_health.py).
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/consent/callback"),
    ("POST", "/v1/billing/stripe/webhook"),
    ("POST", "/v1/graph/notifications"),
    ("POST", "/v1/graph/lifecycle"),
}

# A key holding a scope other than the one needed (admin holds every scope).
WRONG_SCOPE = {
    "admin": "read",
    "read": "export",
    "backup": "read",
    "restore": "read",
    "export": "read",
}


def fill(value: Any, ids: dict[str, str]) -> Any:
    """Put ids into a body template."""
    if isinstance(value, str):
        return value.format(**ids) if "{" in value else value
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value
