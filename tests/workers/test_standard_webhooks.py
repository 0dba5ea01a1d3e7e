"""Deliveries verify with the Standard Webhooks reference library, as a partner's code would.

The library (PyPI `standardwebhooks`) is the specification's own; nothing here re-implements
its checks. What is verified is the exact body and headers the worker POSTs (`render`).
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from safekeep.runtime import Runtime
from safekeep.tenants.models import WebhookEndpoint
from safekeep.tenants.webhook import service as webhooks
from tests.factories import create_msp, create_webhook, emit_event


async def rendered_delivery(runtime: Runtime) -> tuple[str, bytes, dict[str, str]]:
    msp = await create_msp(runtime)
    endpoint, secret = await create_webhook(
        runtime, msp.id, "https://partner.example.com/hooks", ["backup.completed"]
    )
    (delivery,), _messages = await emit_event(runtime, msp.id, "backup.completed", {"job_id": "j1"})
    async with runtime.db.session() as session:
        row = await session.get(WebhookEndpoint, endpoint.id)
        assert row is not None
        body, headers = webhooks.render(runtime.settings, row, delivery)
    return secret, body, headers


async def test_the_reference_library_verifies_a_delivery(worker_runtime: Runtime) -> None:
    secret, body, headers = await rendered_delivery(worker_runtime)
    assert secret.startswith("whsec_")
    base64.b64decode(secret.removeprefix("whsec_"), validate=True)  # standard base64
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "backup.completed" and payload["data"] == {"job_id": "j1"}
    assert headers["webhook-id"] == headers["Safekeep-Delivery-Id"]
    assert headers["webhook-signature"].startswith("v1,")
    # The header partners already verify is still sent beside the standard ones.
    assert headers["Safekeep-Signature"].startswith(f"t={headers['webhook-timestamp']},v1=")


async def test_the_reference_library_rejects_what_it_should(worker_runtime: Runtime) -> None:
    secret, body, headers = await rendered_delivery(worker_runtime)
    other_secret = "whsec_" + base64.b64encode(b"o" * 24).decode()
    tampered = json.dumps({**json.loads(body), "type": "backup.failed"}).encode()
    stale = str(int(time.time()) - 3600)
    for _label, key, data, sent in [
        ("another endpoint's secret", other_secret, body, headers),
        ("a changed body", secret, tampered, headers),
        ("another message id", secret, body, {**headers, "webhook-id": str(uuid.uuid4())}),
        ("an old timestamp", secret, body, {**headers, "webhook-timestamp": stale}),
    ]:
        with pytest.raises(WebhookVerificationError):
            Webhook(key).verify(data, sent)


def test_secrets_from_before_the_standard_headers_sign_with_their_decoded_key() -> None:
    """An endpoint made earlier holds an unpadded urlsafe-base64 secret; when its characters are
    common to both alphabets, the reference library verifies it as well."""
    legacy = "whsec_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"
    body = b'{"id":"e1"}'
    timestamp = int(time.time())
    headers = {
        "webhook-id": "d1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhooks.standard_signature(legacy, "d1", timestamp, body),
    }
    assert Webhook(legacy).verify(body, headers) == {"id": "e1"}
