"""Admin consent proven by Microsoft: the OpenID Connect authorization-code flow.

The tenant's consent URL is Entra's authorize endpoint. The client's admin signs in there and
grants admin consent in the same trip (``https://graph.microsoft.com/.default``,
``prompt=consent``); Entra sends the browser back to the callback with a code. Safekeep
redeems the code with msal (PKCE, its nonce) and binds the directory named by ``tid`` in the
ID token, after checking the token's signature against the issuer's published keys and its
audience, issuer, lifetime and nonce. Nothing in the callback's query string is trusted.

The ``state`` is a random single-use value: only its hash is stored, beside the sealed flow
(nonce, PKCE verifier), for an hour. The first answer burns it, grant or error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import ssl
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import jwt
import msal
import requests
from msal.oauth2cli import oidc
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.graph.auth import _Session
from safekeep.settings import Settings
from safekeep.tenants.models import ConsentRequest, utcnow
from safekeep.tenants.secrets import SecretUnsealError, seal, unseal_with_any
from safekeep.tenants.tenant import repository

STATE_LIFETIME = timedelta(hours=1)
CALLBACK_PATH = "/v1/consent/callback"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
SCOPES = ["openid", "profile", "offline_access", GRAPH_SCOPE]
CLOCK_SKEW_SECONDS = 120
KEYS_TTL_SECONDS = 3600.0
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class ConsentRefused(Exception):
    """The answer does not prove a sign-in: the text says why (safe to show the caller)."""


@dataclass(frozen=True)
class BurntRequest:
    """A consent request whose state was just used (so no second answer will find it)."""

    tenant_id: uuid.UUID
    client_id: str
    authority: str
    flow: dict[str, Any]
    expired: bool


@dataclass(frozen=True)
class Proof:
    """What Microsoft signed about the admin who answered."""

    entra_tenant_id: str
    user_oid: str
    username: str | None


def redirect_uri(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + CALLBACK_PATH


def authority_for(settings: Settings, directory: str | None) -> str:
    """``organizations`` unless the MSP named the client's directory: never ``common``
    (a personal Microsoft account has no directory to back up)."""
    return f"{settings.login_url.rstrip('/')}/{directory or 'organizations'}"


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8", "replace")).hexdigest()


def _flow_context(digest: str) -> str:
    return f"consent-flow:{digest}"


async def start(
    session: AsyncSession,
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    client_id: str,
    directory: str | None,
) -> str:
    """A new authorize URL for the tenant's admin; its state is stored (hashed) for an hour."""
    authority = authority_for(settings, directory)
    client = oidc.Client(
        {
            "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
            "token_endpoint": f"{authority}/oauth2/v2.0/token",
        },
        client_id,
    )
    state = secrets.token_urlsafe(32)
    with warnings.catch_warnings():
        # msal prefers form_post; the callback is a GET, and a leaked code is useless
        # without the PKCE verifier and the app's secret.
        warnings.simplefilter("ignore", UserWarning)
        flow: dict[str, Any] = client.initiate_auth_code_flow(
            scope=SCOPES,
            redirect_uri=redirect_uri(settings),
            state=state,
            prompt="consent",
            response_mode="query",
        )
    digest = state_hash(state)
    now = utcnow()
    await repository.add_consent_request(
        session,
        ConsentRequest(
            tenant_id=tenant_id,
            state_hash=digest,
            client_id=client_id,
            authority=authority,
            flow_sealed=seal(
                settings.master_key_bytes, json.dumps(flow), context=_flow_context(digest)
            ),
            created_at=now,
            expires_at=now + STATE_LIFETIME,
        ),
    )
    return str(flow["auth_uri"])


async def burn(session: AsyncSession, settings: Settings, state: str) -> BurntRequest | None:
    """Use the state up. None when it is unknown or was used already."""
    digest = state_hash(state)
    now = utcnow()
    row = await repository.burn_consent_request(session, digest, now)
    if row is None:
        return None
    tenant_id, client_id, authority, sealed, expires_at = row
    try:
        # Any configured master key: a link made just before a key rotation still works.
        flow = json.loads(
            unseal_with_any(settings.master_keys, sealed, context=_flow_context(digest))
        )
    except SecretUnsealError:
        return None
    return BurntRequest(tenant_id, client_id, authority, flow, expired=expires_at <= now)


async def was_issued(session: AsyncSession, state: str) -> bool:
    return await repository.consent_request_exists(session, state_hash(state))


# -- redemption and verification --------------------------------------------------------------


def _redeem(
    settings: Settings,
    request: BurntRequest,
    client_secret: str,
    auth_response: dict[str, str],
) -> dict[str, Any]:
    """Runs in a thread (msal is blocking): the code for tokens, state and nonce checked."""
    session = _Session(str(settings.ca_bundle) if settings.ca_bundle else True, 30.0)
    try:
        app = msal.ConfidentialClientApplication(
            request.client_id,
            client_credential=client_secret,
            authority=request.authority,
            instance_discovery=False,
            azure_region=False,
            http_client=session,
            token_cache=msal.TokenCache(),
        )
        result: dict[str, Any] = app.acquire_token_by_auth_code_flow(
            dict(request.flow), auth_response
        )
        return result
    except RuntimeError as exc:
        # msal compares the ID token's nonce with the flow's (its message quotes both).
        raise ConsentRefused("The ID token's nonce is not this sign-in's") from exc
    except ValueError as exc:
        # msal's state check, or an authority Entra does not know.
        raise ConsentRefused(f"Microsoft's answer did not verify: {str(exc)[:200]}") from exc
    except requests.RequestException as exc:
        raise ConsentRefused("Microsoft's sign-in service could not be reached") from exc
    finally:
        session.close()


_KEYS: dict[str, tuple[float, dict[str, jwt.PyJWK], str]] = {}


async def _issuer_keys(
    settings: Settings, authority: str, *, refresh: bool
) -> tuple[dict[str, jwt.PyJWK], str]:
    """The signing keys at the discovery document's ``jwks_uri`` and its issuer template,
    cached for an hour (fetched again when a token names a key we do not have)."""
    cached = _KEYS.get(authority)
    if cached and not refresh and time.monotonic() < cached[0]:
        return cached[1], cached[2]
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(settings.ca_bundle)) if settings.ca_bundle else True
    )
    async with httpx.AsyncClient(verify=verify, timeout=30.0) as http:
        config = (await http.get(f"{authority}/v2.0/.well-known/openid-configuration")).json()
        keys_doc = (await http.get(str(config["jwks_uri"]))).json()
    keys: dict[str, jwt.PyJWK] = {}
    for jwk in keys_doc.get("keys", []):
        if jwk.get("kid") and jwk.get("kty") == "RSA":
            keys[str(jwk["kid"])] = jwt.PyJWK(jwk, algorithm="RS256")
    issuer = str(config["issuer"])
    _KEYS[authority] = (time.monotonic() + KEYS_TTL_SECONDS, keys, issuer)
    return keys, issuer


async def verify_id_token(
    settings: Settings, request: BurntRequest, id_token: str
) -> dict[str, Any]:
    """Signature (RS256, the issuer's published key), audience, issuer (naming the ``tid``),
    expiry and nonce: the ``tid`` of a token that passes is the directory Microsoft vouches
    for."""
    try:
        kid = jwt.get_unverified_header(id_token).get("kid")
        unverified = jwt.decode(id_token, options={"verify_signature": False})
        keys, issuer = await _issuer_keys(settings, request.authority, refresh=False)
        if kid not in keys:
            keys, issuer = await _issuer_keys(settings, request.authority, refresh=True)
        if kid not in keys:
            raise ConsentRefused("The ID token is not signed by a key Microsoft publishes")
        tid = str(unverified.get("tid", ""))
        if not _GUID.match(tid):
            raise ConsentRefused("The ID token names no directory")
        claims: dict[str, Any] = jwt.decode(
            id_token,
            keys[kid],
            algorithms=["RS256"],
            audience=request.client_id,
            issuer=issuer.replace("{tenantid}", tid),
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "tid", "nonce"]},
        )
    except (jwt.PyJWTError, httpx.HTTPError, KeyError, ValueError) as exc:
        raise ConsentRefused(f"The ID token did not verify: {str(exc)[:200]}") from exc
    expected_nonce = hashlib.sha256(str(request.flow.get("nonce", "")).encode()).hexdigest()
    if not secrets.compare_digest(str(claims["nonce"]), expected_nonce):
        raise ConsentRefused("The ID token's nonce is not this sign-in's")
    if claims["iss"] != f"{settings.login_url.rstrip('/')}/{tid}/v2.0":
        raise ConsentRefused("The ID token's issuer does not name its directory")
    return claims


async def prove(
    settings: Settings,
    request: BurntRequest,
    client_secret: str,
    auth_response: dict[str, str],
) -> Proof:
    result = await asyncio.to_thread(_redeem, settings, request, client_secret, auth_response)
    if "id_token" not in result:
        codes = ",".join(str(c) for c in result.get("error_codes", [])[:3])
        raise ConsentRefused(
            f"Microsoft refused the code: {str(result.get('error', 'no ID token'))[:60]}"
            + (f" (AADSTS{codes})" if codes else "")
        )
    claims = await verify_id_token(settings, request, str(result["id_token"]))
    return Proof(
        entra_tenant_id=str(claims["tid"]),
        user_oid=str(claims.get("oid", "")),
        username=str(claims["preferred_username"]) if "preferred_username" in claims else None,
    )
