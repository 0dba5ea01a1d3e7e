"""Entra ID for the MSP's multi-tenant app: discovery, client-credential tokens, admin consent,
and the OpenID Connect authorization-code flow an admin signs in through.

Error answers follow the OAuth 2.0 JSON shape Entra uses (``error``, ``error_description``
starting with the AADSTS code, ``error_codes``, ``timestamp``, ``trace_id``,
``correlation_id``) so that MSAL surfaces them exactly as it would for the real service; so
does every other Entra route, including a GET on the token endpoint.

The sign-in is non-interactive: the simulated user is the ``login_hint`` of the request, else
the one chosen through ``POST /_sim/entra/signin``, else the administrator of the directory
named in the path (the first directory for ``organizations`` / ``common``). Each directory has
one simulated Global Administrator, ``admin@<domain>``; only an administrator's sign-in grants
admin consent (``https://graph.microsoft.com/.default`` in the scope, as Entra does).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from graphsim.core import Engine, engine_of
from graphsim.state import Tenant

GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
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
AUTHORITY_ALIASES = ("organizations", "common")
# The hosts Microsoft's instance discovery knows (worldwide cloud), beside graphsim's own.
MICROSOFT_HOSTS = [
    "login.microsoftonline.com",
    "login.windows.net",
    "login.microsoft.com",
    "sts.windows.net",
]
CODE_LIFETIME_S = 600.0  # Entra's authorization codes live about ten minutes
ID_TOKEN_LIFETIME_S = 3600


# -- state kept per simulator (not persisted: keys and codes are per process, like a rotation) --


@dataclass
class App:
    app_id: str
    secret: str
    name: str
    redirect_uris: list[str] = field(default_factory=list)  # empty: any https/http URI


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    tenant_id: str
    oid: str
    upn: str
    name: str
    nonce: str | None
    scope: str
    challenge: str | None
    method: str
    expires: float
    used: bool = False


@dataclass
class Identity:
    tenant: Tenant
    oid: str
    upn: str
    name: str
    admin: bool


@dataclass
class EntraState:
    apps: dict[str, App]
    key: rsa.RSAPrivateKey
    kid: str
    codes: dict[str, AuthCode] = field(default_factory=dict)
    sign_in_as: str | None = None
    refuse: bool = False
    code_lifetime_s: float = CODE_LIFETIME_S


def entra_state(engine: Engine) -> EntraState:
    found = engine.caches.get("entra")
    if isinstance(found, EntraState):
        # The deployment's app may have been reconfigured after the first call.
        config = engine.config
        found.apps.setdefault(config.app_id, App(config.app_id, config.app_secret, config.app_name))
        return found
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    kid = (
        base64.urlsafe_b64encode(
            hashlib.sha256(json.dumps(public, sort_keys=True).encode()).digest()[:20]
        )
        .decode()
        .rstrip("=")
    )
    config = engine.config
    state = EntraState(
        apps={config.app_id: App(config.app_id, config.app_secret, config.app_name)},
        key=key,
        kid=kid,
    )
    engine.caches["entra"] = state
    return state


def register_app(
    engine: Engine,
    *,
    app_id: str | None = None,
    secret: str | None = None,
    name: str = "MSP app",
    redirect_uris: list[str] | None = None,
) -> App:
    """Another multi-tenant app registration (an MSP that brings its own app)."""
    app = App(
        app_id or str(uuid.uuid4()),
        secret or secrets.token_urlsafe(24),
        name,
        list(redirect_uris or []),
    )
    entra_state(engine).apps[app.app_id] = app
    return app


def sign_in_as(engine: Engine, user: str | None, *, refuse: bool = False) -> None:
    """Choose who signs in at the next authorize requests (``None``: the path's admin) and
    whether they refuse the consent prompt."""
    state = entra_state(engine)
    state.sign_in_as = user
    state.refuse = refuse


def admin_upn(tenant: Tenant) -> str:
    return f"admin@{tenant.domain}"


# -- errors ---------------------------------------------------------------------------------


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


def missing(name: str) -> tuple[int, dict[str, Any]]:
    return oauth_error(
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def unknown_app(client_id: str, directory: str) -> tuple[int, dict[str, Any]]:
    return oauth_error(
        400,
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory "
        f"'{directory}'. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You may "
        "have sent your authentication request to the wrong tenant.",
    )


def invalid_grant(code: int, description: str) -> tuple[int, dict[str, Any]]:
    return oauth_error(400, "invalid_grant", code, description)


# -- discovery ------------------------------------------------------------------------------


def openid_configuration(base_url: str, tenant: Tenant | None, key: str) -> dict[str, Any]:
    """The v2.0 OpenID configuration; for ``organizations``/``common`` the issuer carries
    Entra's ``{tenantid}`` placeholder, as Microsoft's does."""
    issuer_base = f"{base_url}/{tenant.id if tenant else '{tenantid}'}"
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
        "claims_supported": [
            "sub",
            "iss",
            "cloud_instance_name",
            "cloud_instance_host_name",
            "cloud_graph_host_name",
            "msgraph_host",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "acr",
            "nonce",
            "preferred_username",
            "name",
            "tid",
            "ver",
            "at_hash",
            "c_hash",
            "email",
        ],
        "kerberos_endpoint": f"{auth_base}/kerberos",
        "tenant_region_scope": "EU" if tenant else None,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def jwks(engine: Engine) -> dict[str, Any]:
    state = entra_state(engine)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(state.key.public_key(), as_dict=True)
    return {
        "keys": [
            {
                **public,
                "kty": "RSA",
                "use": "sig",
                "kid": state.kid,
                "x5t": state.kid,
                "issuer": f"{engine.base_url}/{{tenantid}}/v2.0",
            }
        ]
    }


def instance_discovery(engine: Engine, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """``/common/discovery/instance``: which host serves an authority, and its aliases.

    graphsim's own host is a known instance, as are Microsoft's worldwide hosts (a client
    whose requests are routed to graphsim by name); anything else is ``invalid_instance``.
    """
    endpoint = query.get("authorization_endpoint", "")
    if not query.get("api-version"):
        return oauth_error(
            400, "invalid_request", 90014, "The required field 'api-version' is missing."
        )
    if not endpoint:
        return oauth_error(
            400,
            "invalid_request",
            90014,
            "The required field 'authorization_endpoint' is missing.",
        )
    parts = urlsplit(endpoint)
    own = urlsplit(engine.base_url)
    # msal names the instance by host alone (no port): graphsim's host is graphsim.
    if parts.scheme == "https" and parts.hostname == own.hostname:
        base = engine.base_url
    elif parts.scheme == "https" and parts.netloc in MICROSOFT_HOSTS:
        base = f"https://{parts.netloc}"
    else:
        base = ""
    segments = [s for s in parts.path.split("/") if s]
    if not base or not segments:
        return oauth_error(400, "invalid_instance", 50049, "Unknown or invalid instance.")
    version = "/v2.0" if "v2.0" in segments else ""
    own_host = own.netloc
    return 200, {
        "tenant_discovery_endpoint": (
            f"{base}/{segments[0]}{version}/.well-known/openid-configuration"
        ),
        "api-version": query["api-version"],
        "metadata": [
            {"preferred_network": own_host, "preferred_cache": own_host, "aliases": [own_host]},
            {
                "preferred_network": "login.microsoftonline.com",
                "preferred_cache": "login.windows.net",
                "aliases": MICROSOFT_HOSTS,
            },
        ],
    }


# -- tokens ---------------------------------------------------------------------------------


def _form(body: bytes, authorization: str | None) -> dict[str, str]:
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:]).decode()
            basic_id, _, basic_secret = decoded.partition(":")
            form.setdefault("client_id", basic_id)
            form.setdefault("client_secret", basic_secret)
        except (ValueError, UnicodeDecodeError):
            pass
    return form


def _client_auth(
    engine: Engine, form: dict[str, str], directory: str
) -> tuple[App | None, tuple[int, dict[str, Any]] | None]:
    client_id = form.get("client_id", "")
    if not client_id:
        return None, missing("client_id")
    app = entra_state(engine).apps.get(client_id)
    if app is None:
        return None, unknown_app(client_id, directory)
    secret = form.get("client_secret")
    if not secret and not form.get("client_assertion"):
        return None, oauth_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )
    if secret != app.secret:
        return None, oauth_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the "
            "client secret value, not the client secret ID, for a secret added to app "
            f"'{client_id}'.",
        )
    return app, None


def _access_token(
    engine: Engine, tenant_id: str, client_id: str, extra: dict[str, Any]
) -> tuple[str, int]:
    now = int(time.time())
    lifetime = engine.config.token_lifetime_s
    claims = {
        "aud": GRAPH_AUDIENCE,
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "app_displayname": entra_state(engine).apps[client_id].name,
        "appid": client_id,
        "appidacr": "1",
        "idp": f"https://sts.windows.net/{tenant_id}/",
        "tid": tenant_id,
        "ver": "1.0",
        "uti": uuid.uuid4().hex[:22],
        **extra,
    }
    token = jwt.encode(claims, engine.signing_key, algorithm="HS256", headers={"typ": "JWT"})
    return token, lifetime


def issue_token(
    engine: Engine, tenant_key: str, body: bytes, authorization: str | None
) -> tuple[int, dict[str, Any]]:
    form = _form(body, authorization)
    grant = form.get("grant_type", "")
    if grant == "authorization_code":
        return redeem_code(engine, tenant_key, form)
    tenant = engine.world.tenant(tenant_key)
    if tenant is None:
        return unknown_tenant(tenant_key, discovery=False)
    if grant != "client_credentials":
        return oauth_error(
            400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
        )
    if not form.get("client_id"):
        return missing("client_id")
    scope = form.get("scope", "")
    if not scope:
        return missing("scope")
    if scope.split()[0].rstrip("/") not in (GRAPH_SCOPE, f"{GRAPH_APP_ID}/.default"):
        return oauth_error(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    client_id = form["client_id"]
    if client_id not in entra_state(engine).apps or client_id not in tenant.consented_apps:
        return unknown_app(client_id, tenant.name)
    app, failure = _client_auth(engine, form, tenant.name)
    if failure is not None:
        return failure
    assert app is not None
    service_principal = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant.id}/{client_id}"))
    token, lifetime = _access_token(
        engine,
        tenant.id,
        client_id,
        {"idtyp": "app", "oid": service_principal, "roles": APP_ROLES, "sub": service_principal},
    )
    return 200, {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    }


def _pkce_matches(code: AuthCode, verifier: str) -> bool:
    if code.challenge is None:
        return True
    if not verifier:
        return False
    if code.method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    else:
        computed = verifier
    return secrets.compare_digest(computed, code.challenge)


def _code_failure(
    code: AuthCode | None, app: App, path_tenant: Tenant | None, form: dict[str, str]
) -> tuple[int, dict[str, Any]] | None:
    """Why an authorization code cannot be redeemed (None: it can). Any attempt burns it."""
    if code is None:
        return invalid_grant(9002313, "Invalid request. Request is malformed or invalid.")
    if code.used:
        return invalid_grant(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
            "or use an existing refresh token.",
        )
    code.used = True  # any redemption attempt burns the code, as Entra does
    if time.time() > code.expires:
        return invalid_grant(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. "
            "Send a new interactive authorization request for this user and resource.",
        )
    if code.client_id != app.app_id or (path_tenant and path_tenant.id != code.tenant_id):
        return invalid_grant(
            70000,
            "The provided value for the 'code' parameter is not valid. The code was not issued "
            "for this client or directory.",
        )
    if form["redirect_uri"] != code.redirect_uri:
        return invalid_grant(
            50011,
            f"The redirect URI '{form['redirect_uri']}' specified in the request does not match "
            "the redirect URI used to obtain the authorization code.",
        )
    if not _pkce_matches(code, form.get("code_verifier", "")):
        return invalid_grant(
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization "
            "request.",
        )
    return None


def _id_token(engine: Engine, code: AuthCode, app: App, now: int) -> str:
    """The OpenID Connect ID token of a code's sign-in, signed with the tenant-wide key."""
    state = entra_state(engine)
    tid = code.tenant_id
    id_claims: dict[str, Any] = {
        "aud": app.app_id,
        "iss": f"{engine.base_url}/{tid}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + ID_TOKEN_LIFETIME_S,
        "name": code.name,
        "oid": code.oid,
        "preferred_username": code.upn,
        "sub": base64.urlsafe_b64encode(
            hashlib.sha256(f"{code.oid}:{app.app_id}".encode()).digest()
        )
        .decode()
        .rstrip("="),
        "tid": tid,
        "uti": uuid.uuid4().hex[:22],
        "ver": "2.0",
    }
    if code.nonce is not None:
        id_claims["nonce"] = code.nonce
    return jwt.encode(
        id_claims, state.key, algorithm="RS256", headers={"typ": "JWT", "kid": state.kid}
    )


def redeem_code(
    engine: Engine, tenant_key: str, form: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """The ``authorization_code`` grant: one redemption per code, PKCE, the same redirect URI,
    the same client, at the code's directory (or ``organizations``/``common``)."""
    path_tenant = None
    if tenant_key.lower() not in AUTHORITY_ALIASES:
        path_tenant = engine.world.tenant(tenant_key)
        if path_tenant is None:
            return unknown_tenant(tenant_key, discovery=False)
    app, failure = _client_auth(engine, form, path_tenant.name if path_tenant else tenant_key)
    if failure is not None:
        return failure
    assert app is not None
    value = form.get("code", "")
    if not value:
        return missing("code")
    if not form.get("redirect_uri"):
        return missing("redirect_uri")
    state = entra_state(engine)
    code = state.codes.get(value)
    failure = _code_failure(code, app, path_tenant, form)
    if failure is not None:
        return failure
    assert code is not None
    now = int(time.time())
    tid = code.tenant_id
    access, lifetime = _access_token(
        engine,
        tid,
        app.app_id,
        {
            "idtyp": "user",
            "oid": code.oid,
            "sub": code.oid,
            "upn": code.upn,
            "name": code.name,
            "scp": "openid profile email",
        },
    )
    id_token = _id_token(engine, code, app, now)
    client_info = base64.urlsafe_b64encode(
        json.dumps({"uid": code.oid, "utid": tid}).encode()
    ).decode()
    return 200, {
        "token_type": "Bearer",
        "scope": code.scope,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access,
        "id_token": id_token,
        "client_info": client_info.rstrip("="),
    }


# -- authorization endpoint -----------------------------------------------------------------


def _identity(engine: Engine, hint: str) -> Identity | None:
    lowered = hint.lower()
    for tenant in engine.world.tenants.values():
        if lowered == admin_upn(tenant).lower():
            return Identity(
                tenant,
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant.id}/admin")),
                admin_upn(tenant),
                f"{tenant.name} Administrator",
                admin=True,
            )
        user = tenant.user(hint)
        if user is not None:
            return Identity(tenant, user.id, user.upn, user.display_name, admin=False)
    return None


def _default_identity(engine: Engine, tenant: Tenant | None) -> Identity | None:
    target = tenant or next(iter(engine.world.tenants.values()), None)
    return _identity(engine, admin_upn(target)) if target is not None else None


def _redirect(redirect_uri: str, params: dict[str, str]) -> tuple[int, str]:
    sep = "&" if "?" in redirect_uri else "?"
    return 302, redirect_uri + sep + urlencode(params)


def _sign_in(
    engine: Engine,
    query: dict[str, str],
    app: App,
    path_tenant: Tenant | None,
    refuse: Callable[..., tuple[int, str]],
) -> tuple[int, str | dict[str, Any]]:
    """The user signs in (the login hint, the chosen user or the directory's admin), admin
    consent is recorded when an administrator asks for ``.default``, and a code goes back."""
    state = entra_state(engine)
    client_id = query.get("client_id", "")
    redirect_uri = query.get("redirect_uri", "")
    back = {"state": query["state"]} if "state" in query else {}
    scope = query.get("scope", "")
    challenge = query.get("code_challenge")
    method = query.get("code_challenge_method", "plain" if challenge else "")
    hint = query.get("login_hint") or state.sign_in_as
    who = _identity(engine, hint) if hint else _default_identity(engine, path_tenant)
    if who is None:
        return oauth_error(
            400,
            "invalid_request",
            50034,
            f"The user account {hint} does not exist in the "
            f"{path_tenant.name if path_tenant else 'requested'} directory. To sign into this "
            "application, the account must be added to the directory.",
        )
    if path_tenant is not None and who.tenant.id != path_tenant.id:
        return oauth_error(
            400,
            "invalid_request",
            50020,
            f"User account '{who.upn}' from identity provider "
            f"'https://sts.windows.net/{who.tenant.id}/' does not exist in tenant "
            f"'{path_tenant.name}' and cannot access the application '{client_id}'"
            f"({app.name}) in that tenant.",
        )
    tenant = who.tenant
    if state.refuse or tenant.consent_denied or not engine.config.consent_auto_approve:
        return refuse(
            "access_denied",
            65004,
            "User declined to consent to access the app.",
            error_subcode="cancel",
        )
    scopes = scope.split()
    wants_app_consent = any(
        s.rstrip("/") in (GRAPH_SCOPE, f"{GRAPH_APP_ID}/.default") for s in scopes
    )
    if wants_app_consent and client_id not in tenant.consented_apps:
        if not who.admin:
            return refuse(
                "access_denied",
                90094,
                "The grant requires admin permission.",
            )
        tenant.consented_apps.add(client_id)
    value = secrets.token_urlsafe(48)
    state.codes = {k: c for k, c in state.codes.items() if c.expires > time.time() - 3600}
    state.codes[value] = AuthCode(
        client_id=client_id,
        redirect_uri=redirect_uri,
        tenant_id=tenant.id,
        oid=who.oid,
        upn=who.upn,
        name=who.name,
        nonce=query.get("nonce"),
        scope=" ".join(scopes),
        challenge=challenge,
        method=method or "plain",
        expires=time.time() + state.code_lifetime_s,
    )
    return _redirect(redirect_uri, {"code": value, **back, "session_state": str(uuid.uuid4())})


def authorize(
    engine: Engine, tenant_key: str, query: dict[str, str]
) -> tuple[int, str | dict[str, Any]]:
    """``/{tenant}/oauth2/v2.0/authorize``: sign the chosen user in, record admin consent
    when an administrator is asked for ``.default``, and send the browser back with a code.

    What Entra shows on its own error page (an unknown app, a redirect URI the app does not
    list, an unknown user or directory) answers here as Entra's JSON error; what Entra sends
    back to the app (refusal, bad parameters) is a redirect with ``error``."""
    state = entra_state(engine)
    client_id = query.get("client_id", "")
    redirect_uri = query.get("redirect_uri", "")
    path_tenant = None
    if tenant_key.lower() not in AUTHORITY_ALIASES:
        path_tenant = engine.world.tenant(tenant_key)
        if path_tenant is None:
            return unknown_tenant(tenant_key, discovery=False)
    if not client_id:
        return missing("client_id")
    app = state.apps.get(client_id)
    if app is None:
        return unknown_app(client_id, path_tenant.name if path_tenant else tenant_key)
    if not redirect_uri:
        return missing("redirect_uri")
    if urlsplit(redirect_uri).scheme not in ("http", "https") or (
        app.redirect_uris and redirect_uri not in app.redirect_uris
    ):
        return oauth_error(
            400,
            "invalid_request",
            50011,
            f"The redirect URI '{redirect_uri}' specified in the request does not match the "
            f"redirect URIs configured for the application '{client_id}'. Make sure the redirect "
            "URI sent in the request matches one added to your application in the Azure portal.",
        )
    back = {"state": query["state"]} if "state" in query else {}

    def refuse(error: str, code: int, description: str, **extra: str) -> tuple[int, str]:
        return _redirect(
            redirect_uri,
            {"error": error, "error_description": f"AADSTS{code}: {description}", **extra, **back},
        )

    if query.get("response_type", "") != "code":
        return refuse(
            "unsupported_response_type",
            700054,
            f"response_type '{query.get('response_type', '')}' is not enabled for the application.",
        )
    scope = query.get("scope", "")
    if not scope.strip():
        return refuse(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        )
    challenge = query.get("code_challenge")
    method = query.get("code_challenge_method", "plain" if challenge else "")
    if (method and method not in ("S256", "plain")) or (method and not challenge):
        return refuse(
            "invalid_request",
            501491,
            "Invalid code_challenge_method or missing code_challenge.",
        )
    return _sign_in(engine, query, app, path_tenant, refuse)


def admin_consent_redirect(
    engine: Engine, tenant_key: str, query: dict[str, str]
) -> tuple[int, str | dict[str, Any]]:
    """Answer an admin-consent visit with the redirect the admin's browser would follow."""
    redirect_uri = query.get("redirect_uri", "")
    client_id = query.get("client_id", "")
    state = query.get("state", "")
    if not redirect_uri:
        return missing("redirect_uri")
    if tenant_key.lower() in AUTHORITY_ALIASES:
        hint = query.get("login_hint", "").split("@")[-1].lower()
        candidates = [t for t in engine.world.tenants.values() if t.domain.lower() == hint]
        tenant = candidates[0] if candidates else next(iter(engine.world.tenants.values()), None)
    else:
        tenant = engine.world.tenant(tenant_key)
    if tenant is None:
        return unknown_tenant(tenant_key, discovery=False)
    if client_id not in entra_state(engine).apps:
        return unknown_app(client_id, tenant.name)
    if tenant.consent_denied or not engine.config.consent_auto_approve:
        params = {
            "error": "access_denied",
            "error_subcode": "cancel",
            "state": state,
            "error_description": "AADSTS65004: User declined to consent to access the app.",
        }
        return _redirect(redirect_uri, params)
    tenant.consented_apps.add(client_id)
    params = {"admin_consent": "True", "tenant": tenant.id, "state": state}
    if "scope" in query:
        params["scope"] = query["scope"]
    return _redirect(redirect_uri, params)


def verify_token(engine: Engine, token: str) -> dict[str, Any]:
    return jwt.decode(
        token,
        engine.signing_key,
        algorithms=["HS256"],
        audience=GRAPH_AUDIENCE,
        options={"require": ["exp", "tid", "appid"]},
    )


# -- HTTP -----------------------------------------------------------------------------------

NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


def _json(answer: tuple[int, dict[str, Any]]) -> Response:
    status, body = answer
    return JSONResponse(body, status, headers=NO_STORE)


async def openid(request: Request) -> Response:
    engine = engine_of(request)
    key = request.path_params["tenant"]
    tenant = engine.world.tenant(key)
    if tenant is None and key.lower() not in AUTHORITY_ALIASES:
        return _json(unknown_tenant(key, discovery=True))
    return JSONResponse(openid_configuration(engine.base_url, tenant, key))


async def token(request: Request) -> Response:
    engine = engine_of(request)
    if request.method != "POST":
        return _json(
            oauth_error(
                400,
                "invalid_request",
                900561,
                "The endpoint only accepts POST, OPTIONS requests. Received a "
                f"{request.method} request.",
            )
        )
    body = await request.body()
    with engine.world.lock:
        answer = issue_token(
            engine, request.path_params["tenant"], body, request.headers.get("authorization")
        )
    return _json(answer)


def _redirect_or_error(answer: tuple[int, str | dict[str, Any]]) -> Response:
    status, target = answer
    if status == 302:
        assert isinstance(target, str)
        return RedirectResponse(target, 302, headers=NO_STORE)
    assert isinstance(target, dict)
    return JSONResponse(target, status, headers=NO_STORE)


async def authorize_route(request: Request) -> Response:
    engine = engine_of(request)
    with engine.world.lock:
        return _redirect_or_error(
            authorize(engine, request.path_params["tenant"], dict(request.query_params))
        )


async def consent(request: Request) -> Response:
    engine = engine_of(request)
    with engine.world.lock:
        return _redirect_or_error(
            admin_consent_redirect(
                engine, request.path_params["tenant"], dict(request.query_params)
            )
        )


async def keys(request: Request) -> Response:
    return JSONResponse(jwks(engine_of(request)))


async def discovery(request: Request) -> Response:
    status, body = instance_discovery(engine_of(request), dict(request.query_params))
    return JSONResponse(body, status)


def _signin_control(engine: Engine, method: str, body: dict[str, Any]) -> Response | None:
    state = entra_state(engine)
    if method in ("POST", "PUT"):
        user = body.get("user")
        sign_in_as(engine, str(user) if user else None, refuse=bool(body.get("refuse")))
    elif method == "DELETE":
        sign_in_as(engine, None)
    elif method != "GET":
        return None
    return JSONResponse({"user": state.sign_in_as, "refuse": state.refuse})


def _apps_control(engine: Engine, method: str, body: dict[str, Any]) -> Response | None:
    state = entra_state(engine)
    if method == "GET":
        return JSONResponse([{"appId": a} for a in state.apps])
    if method != "POST":
        return None
    app = register_app(
        engine,
        app_id=body.get("appId"),
        secret=body.get("secret"),
        name=str(body.get("displayName") or "MSP app"),
        redirect_uris=[str(u) for u in body.get("redirectUris") or []],
    )
    return JSONResponse({"appId": app.app_id, "secret": app.secret}, 201)


def _settings_control(engine: Engine, method: str, body: dict[str, Any]) -> Response | None:
    if method not in ("POST", "PUT", "PATCH"):
        return None
    state = entra_state(engine)
    if "codeLifetimeSeconds" in body:
        state.code_lifetime_s = float(body["codeLifetimeSeconds"])
    return JSONResponse({"codeLifetimeSeconds": state.code_lifetime_s})


_CONTROLS = {"signin": _signin_control, "apps": _apps_control, "settings": _settings_control}


async def control(request: Request) -> Response:
    """``/_sim/entra/{signin,apps,settings}``: who signs in, registered apps, code lifetime."""
    engine = engine_of(request)
    action = request.path_params["action"].strip("/")
    try:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        handler = _CONTROLS.get(action)
        if handler is not None:
            with engine.world.lock:
                answer = handler(engine, request.method, body)
            if answer is not None:
                return answer
    except (ValueError, TypeError) as err:
        return JSONResponse({"error": f"bad request: {err}"}, 400)
    return JSONResponse({"error": f"unknown control action 'entra/{action}'"}, 404)


# ``/_sim/entra/`` goes before the simulator's own ``/_sim/`` controls.
CONTROL_ROUTES: list[BaseRoute] = [
    Route("/_sim/entra/{action:path}", control, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
]
ROUTES: list[BaseRoute] = [
    Route("/{tenant}/discovery/instance", discovery, methods=["GET"]),
    Route("/{tenant}/v2.0/.well-known/openid-configuration", openid, methods=["GET"]),
    Route("/{tenant}/.well-known/openid-configuration", openid, methods=["GET"]),
    Route("/{tenant}/oauth2/v2.0/token", token, methods=["GET", "POST", "PUT", "DELETE"]),
    Route("/{tenant}/oauth2/token", token, methods=["GET", "POST", "PUT", "DELETE"]),
    Route("/{tenant}/oauth2/v2.0/authorize", authorize_route, methods=["GET"]),
    Route("/{tenant}/adminconsent", consent, methods=["GET"]),
    Route("/{tenant}/v2.0/adminconsent", consent, methods=["GET"]),
    Route("/{tenant}/discovery/v2.0/keys", keys, methods=["GET"]),
    Route("/{tenant}/discovery/keys", keys, methods=["GET"]),
]
