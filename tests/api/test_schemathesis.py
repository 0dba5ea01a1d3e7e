"""Schemathesis against the committed OpenAPI document and a real server: generated
requests (valid and invalid) never get a 5xx, and every answer matches the document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.config import SchemathesisConfig

from safekeep.api.app import create_app
from safekeep.settings import Settings
from tests.api.conftest import World
from tests.fixtures.live import serve_app

DOCUMENT = json.loads(
    (Path(__file__).resolve().parents[2] / "openapi" / "openapi.json").read_text()
)
# Examples and fuzzing phases, not the exhaustive coverage phase (thousands of boundary cases
# that multiply the run time by five for little more than the fuzzing finds here). Rejections
# are schemathesis' default statuses plus the 413, 414 and 431 of safekeep.api.limits (a
# generated query past its bound is rejected before validation).
CONFIG = SchemathesisConfig.from_dict(
    {
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "413", "414"),
                    *("415", "422", "428", "429", "431", "5xx"),
                ]
            }
        },
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
# The operator's token for /metrics: with it configured, schemathesis also sees that route
# refuse callers without it.
METRICS_TOKEN = "schemathesis-metrics-token-0123456789"


@pytest.fixture(scope="module")
def server(module_scaleout_settings: Settings) -> Iterator[str]:
    """The app on a real port, building its own runtime in its lifespan like production."""
    configured = module_scaleout_settings.model_copy(
        update={"metrics_token": SecretStr(METRICS_TOKEN)}
    )
    with serve_app(create_app(configured)) as base:
        yield base


@pytest.fixture(scope="module")
def admin_headers(module_world: World) -> dict[str, str]:
    return module_world.a.msp.headers


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms(case: schemathesis.Case, server: str, admin_headers: dict[str, str]) -> None:
    # positive_data_acceptance is left out on purpose: an opaque cursor or an id is
    # schema-valid as any string, yet a made-up one is rightly refused (400 / 404 / 422).
    operator = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    case.call_and_validate(
        base_url=server,
        headers=operator if case.path == "/metrics" else admin_headers,
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
