"""Fixtures: a small consented simulator per test module, msal and httpx as real clients."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import msal
import pytest
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory

from graphsim import Simulator

GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@pytest.fixture(scope="session", autouse=True)
def _requests_honours_verify() -> Iterator[None]:
    """requests lets REQUESTS_CA_BUNDLE override a session's ``verify``; msal relies on it."""
    saved = {
        k: os.environ.pop(k) for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if k in os.environ
    }
    yield
    os.environ.update(saved)


def msal_app(
    sim: Simulator, tenant_id: str, secret: str | None = None
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sim.app_id,
        client_credential=secret or sim.app_secret,
        authority=sim.authority(tenant_id),
        instance_discovery=False,
        azure_region=None,
        verify=str(sim.ca_path),
    )


def token_for(sim: Simulator, tenant_id: str | None = None) -> str:
    tenant_id = tenant_id or sim.tenant().id
    result = msal_app(sim, tenant_id).acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert "access_token" in result, result
    return str(result["access_token"])


def graph_client(sim: Simulator, tenant_id: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=sim.graph_url,
        verify=sim.ssl_context(),
        headers={"Authorization": f"Bearer {token_for(sim, tenant_id)}"},
        timeout=60,
    )


def add_weekly_series(
    sim: Simulator, user: Any, subject: str, start: datetime, length: timedelta, occurrences: int
) -> str:
    """A series repeating weekly on ``start``'s weekday for ``occurrences`` weeks, the recurring
    event the calendar tests expand, select from and attach to; returns the master's id."""
    return sim.add_event(
        sim.tenant().id,
        user.id,
        subject=subject,
        start=start,
        end=start + length,
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [WEEKDAYS[start.weekday()]]},
            "range": {
                "type": "numbered",
                "startDate": start.date().isoformat(),
                "numberOfOccurrences": occurrences,
            },
        },
    )


def attach_file(client: httpx.Client, item_path: str, name: str, data: bytes) -> httpx.Response:
    """POST a fileAttachment to the message or event at ``item_path`` (``/users/u/events/e``)."""
    return client.post(
        f"{item_path}/attachments",
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": name,
            "contentBytes": base64.b64encode(data).decode(),
        },
    )


def sdk_parse(model: Any, payload: bytes) -> Any:
    """Parse a response with the official msgraph-sdk model; a rejection is a fidelity bug."""
    node = JsonParseNodeFactory().get_root_parse_node("application/json", payload)
    return node.get_object_value(model)


def collect(
    client: httpx.Client,
    url: str,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Follow nextLinks to the end; return every value and the deltaLink (or "")."""
    values: list[dict[str, Any]] = []
    next_url: str | None = url
    first = True
    delta = ""
    while next_url:
        resp = client.get(next_url, headers=headers, params=params if first else None)
        assert resp.status_code == 200, resp.text
        first = False
        body = resp.json()
        values.extend(body["value"])
        next_url = body.get("@odata.nextLink")
        delta = body.get("@odata.deltaLink", delta)
    return values, delta


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(seed=7, users=3, messages=40, files=20, consented=True) as running:
        yield running


@pytest.fixture(scope="module")
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with graph_client(sim) as c:
        yield c


@pytest.fixture(scope="module")
def user(sim: Simulator) -> Any:
    return sorted(sim.tenant().users.values(), key=lambda u: u.upn)[0]
