"""Entra ID for the MSP's multi-tenant app: discovery, client-credential tokens, admin consent.

Error answers follow the OAuth 2.0 JSON shape Entra uses (``error``, ``error_description``
starting with the AADSTS code, ``error_codes``, ``timestamp``, ``trace_id``,
``correlation_id``) so that MSAL surfaces them exactly as it would for the real service.
"""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt

from graphsim.core import Engine
from graphsim.state import Tenant

GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
APP_ROLES = [
    "Mail.ReadWrite",
    "Calendars.ReadWrite",
    "Contacts.ReadWrite",
    "Files.ReadWrite.All",
    "Sites.FullControl.All",
    "User.Read.All",
    "Directory.Read.All",
    "MailboxSettings.Read",
]


def oauth_error(status: int, error: str, code: int, description: str) -> tuple[int, dict[str, Any]]:
    now = datetime.now(UTC)
    trace = str(uuid.uuid4())
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: "
        f"{uuid.uuid4()} Timestamp: {now.strftime('%Y-%m-%d %H:%M:%SZ')}",
        "error_codes": [code],
        "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


def unknown_tenant(key: str, *, discovery: bool) -> tuple[int, dict[str, Any]]:
    return oauth_error(
        400,
        "invalid_tenant" if discovery else "invalid_request",
        90002,
        f"Tenant '{key}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud. Check with your subscription administrator, this may "
        "happen if there are no active subscriptions for the tenant.",
    )


def openid_configuration(base_url: str, tenant: Tenant, key: str) -> dict[str, Any]:
    issuer_base = f"{base_url}/{tenant.id}"
    auth_base = f"{base_url}/{key}"
    return {
        "token_endpoint": f"{auth_base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": f"{auth_base}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{issuer_base}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base_url}/oidc/userinfo",
        "authorization_endpoint": f"{auth_base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{auth_base}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{auth_base}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver", "roles"],
        "kerberos_endpoint": f"{auth_base}/kerberos",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def issue_token(
    engine: Engine, tenant_key: str, body: bytes, authorization: str | None
) -> tuple[int, dict[str, Any]]:
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:]).decode()
            basic_id, _, basic_secret = decoded.partition(":")
            form.setdefault("client_id", basic_id)
            form.setdefault("client_secret", basic_secret)
        except (ValueError, UnicodeDecodeError):
            pass
    tenant = engine.world.tenant(tenant_key)
    if tenant is None:
        return unknown_tenant(tenant_key, discovery=False)
    grant = form.get("grant_type", "")
    if grant != "client_credentials":
        return oauth_error(
            400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
        )
    client_id = form.get("client_id", "")
    if not client_id:
        return oauth_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    scope = form.get("scope", "")
    if not scope:
        return oauth_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        )
    if scope.split()[0].rstrip("/") not in (
        GRAPH_SCOPE,
        "00000003-0000-0000-c000-000000000000/.default",
    ):
        return oauth_error(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    if client_id != engine.config.app_id or client_id not in tenant.consented_apps:
        return oauth_error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{tenant.name}'. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant. You may "
            "have sent your authentication request to the wrong tenant.",
        )
    secret = form.get("client_secret")
    if not secret and not form.get("client_assertion"):
        return oauth_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )
    if secret != engine.config.app_secret:
        return oauth_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the "
            "client secret value, not the client secret ID, for a secret added to app "
            f"'{client_id}'.",
        )
    now = int(time.time())
    lifetime = engine.config.token_lifetime_s
    claims = {
        "aud": GRAPH_AUDIENCE,
        "iss": f"https://sts.windows.net/{tenant.id}/",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "app_displayname": engine.config.app_name,
        "appid": client_id,
        "appidacr": "1",
        "idp": f"https://sts.windows.net/{tenant.id}/",
        "idtyp": "app",
        "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant.id}/{client_id}")),
        "roles": APP_ROLES,
        "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant.id}/{client_id}")),
        "tid": tenant.id,
        "ver": "1.0",
        "uti": uuid.uuid4().hex[:22],
    }
    token = jwt.encode(claims, engine.signing_key, algorithm="HS256", headers={"typ": "JWT"})
    return 200, {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    }


def admin_consent_redirect(
    engine: Engine, tenant_key: str, query: dict[str, str]
) -> tuple[int, str | dict[str, Any]]:
    """Answer an admin-consent visit with the redirect the admin's browser would follow."""
    redirect_uri = query.get("redirect_uri", "")
    client_id = query.get("client_id", "")
    state = query.get("state", "")
    if not redirect_uri:
        return oauth_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'redirect_uri'.",
        )
    if tenant_key.lower() in ("organizations", "common"):
        hint = query.get("login_hint", "").split("@")[-1].lower()
        candidates = [t for t in engine.world.tenants.values() if t.domain.lower() == hint]
        tenant = candidates[0] if candidates else next(iter(engine.world.tenants.values()), None)
    else:
        tenant = engine.world.tenant(tenant_key)
    if tenant is None:
        return unknown_tenant(tenant_key, discovery=False)
    if client_id != engine.config.app_id:
        return oauth_error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{tenant.name}'.",
        )
    sep = "&" if "?" in redirect_uri else "?"
    if tenant.consent_denied or not engine.config.consent_auto_approve:
        params = {
            "error": "access_denied",
            "error_subcode": "cancel",
            "state": state,
            "error_description": "AADSTS65004: User declined to consent to access the app.",
        }
        return 302, redirect_uri + sep + urlencode(params)
    tenant.consented_apps.add(client_id)
    params = {"admin_consent": "True", "tenant": tenant.id, "state": state}
    if "scope" in query:
        params["scope"] = query["scope"]
    return 302, redirect_uri + sep + urlencode(params)


def verify_token(engine: Engine, token: str) -> dict[str, Any]:
    return jwt.decode(
        token,
        engine.signing_key,
        algorithms=["HS256"],
        audience=GRAPH_AUDIENCE,
        options={"require": ["exp", "tid", "appid"]},
    )
