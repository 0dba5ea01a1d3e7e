"""Admin consent for the multi-tenant Entra app: the URL we send an MSP to, and the signed
``state`` that brings the answer back to the right tenant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from safekeep.errors import BadRequest
from safekeep.settings import Settings
from safekeep.tenants.secrets import derive_key

STATE_MAX_AGE_SECONDS = 7 * 24 * 3600
CALLBACK_PATH = "/v1/consent/callback"


@dataclass(frozen=True)
class ConsentState:
    tenant_id: uuid.UUID
    nonce: str


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    key = derive_key(settings.master_key_bytes, b"safekeep/consent-state/v1")
    return URLSafeTimedSerializer(key, salt="consent")


def sign_state(settings: Settings, tenant_id: uuid.UUID) -> str:
    return _serializer(settings).dumps({"t": str(tenant_id), "n": uuid.uuid4().hex[:12]})


def read_state(settings: Settings, state: str) -> ConsentState:
    try:
        value = _serializer(settings).loads(state, max_age=STATE_MAX_AGE_SECONDS)
        return ConsentState(tenant_id=uuid.UUID(value["t"]), nonce=str(value["n"]))
    except SignatureExpired as exc:
        raise BadRequest("The consent link has expired; request a new one") from exc
    except (BadSignature, KeyError, TypeError, ValueError) as exc:
        raise BadRequest("The consent state is not valid") from exc


def redirect_uri(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + CALLBACK_PATH


def consent_url(
    settings: Settings, *, tenant_id: uuid.UUID, client_id: str, directory: str | None
) -> str:
    """Entra's admin-consent endpoint for the client's directory (a domain or GUID if the MSP
    gave one, else ``organizations``: never ``common``)."""
    query = urlencode(
        {
            "client_id": client_id,
            "state": sign_state(settings, tenant_id),
            "redirect_uri": redirect_uri(settings),
        }
    )
    return f"{settings.login_url.rstrip('/')}/{directory or 'organizations'}/adminconsent?{query}"
