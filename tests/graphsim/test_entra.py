"""Entra ID: msal gets tokens unchanged; errors have Entra's shapes; consent gates access."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import msal
import pytest
import requests

from graphsim import Simulator
from graphsim.entra import admin_upn
from tests.graphsim.conftest import GRAPH_SCOPE, msal_app, token_for

# Safekeep's callback is a GET (response_mode=query), which msal warns about.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post':UserWarning")


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=3, tenants=2, users=2, messages=4, files=2, consented=False) as running:
        yield running


def test_openid_configuration_names_the_tenant_endpoints(sim: Simulator) -> None:
    tenant = sim.tenant()
    resp = httpx.get(
        f"{sim.authority(tenant.id)}/v2.0/.well-known/openid-configuration",
        verify=sim.ssl_context(),
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_endpoint"] == f"{sim.base_url}/{tenant.id}/oauth2/v2.0/token"
    assert body["authorization_endpoint"].endswith("/oauth2/v2.0/authorize")
    assert body["issuer"] == f"{sim.base_url}/{tenant.id}/v2.0"


def test_unconsented_app_is_refused_as_entra_does(sim: Simulator) -> None:
    tenant = sim.tenant()
    result = msal_app(sim, tenant.id).acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert result["error"] == "unauthorized_client"
    assert result["error_codes"] == [700016]
    assert result["error_description"].startswith("AADSTS700016:")


def test_admin_consent_redirects_back_and_enables_tokens(sim: Simulator) -> None:
    tenant = sim.tenant()
    resp = httpx.get(
        f"{sim.base_url}/{tenant.id}/adminconsent",
        params={
            "client_id": sim.app_id,
            "redirect_uri": "https://msp.example/callback?x=1",
            "state": "st-42",
        },
        verify=sim.ssl_context(),
    )
    assert resp.status_code == 302
    location = urlparse(resp.headers["location"])
    query = parse_qs(location.query)
    assert location.netloc == "msp.example"
    assert query == {
        "x": ["1"],
        "admin_consent": ["True"],
        "tenant": [tenant.id],
        "state": ["st-42"],
    }
    result = msal_app(sim, tenant.id).acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert result["token_type"] == "Bearer"
    assert 3000 < result["expires_in"] <= 3599


def test_refused_consent_redirects_with_an_error(sim: Simulator) -> None:
    tenant = list(sim.state.tenants.values())[1]
    sim.deny_consent(tenant.id)
    resp = httpx.get(
        f"{sim.base_url}/{tenant.id}/v2.0/adminconsent",
        params={"client_id": sim.app_id, "redirect_uri": "https://msp.example/cb", "state": "s"},
        verify=sim.ssl_context(),
    )
    query = parse_qs(urlparse(resp.headers["location"]).query)
    assert query["error"] == ["access_denied"]
    assert "admin_consent" not in query
    sim.deny_consent(tenant.id, False)


def test_wrong_secret_is_invalid_client(sim: Simulator) -> None:
    tenant = sim.tenant()
    sim.grant_consent(tenant.id)
    result = msal_app(sim, tenant.id, secret="not-the-secret").acquire_token_for_client(
        scopes=GRAPH_SCOPE
    )
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]


def client_credentials(sim: Simulator, tenant_id: str) -> httpx.Response:
    """The raw token request msal makes (secret in the form), to read Entra's answer as sent."""
    return httpx.post(
        f"{sim.base_url}/{tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": sim.app_id,
            "client_secret": sim.app_secret,
            "scope": GRAPH_SCOPE[0],
            "grant_type": "client_credentials",
        },
        verify=sim.ssl_context(),
    )


def test_unknown_tenant(sim: Simulator) -> None:
    unknown = "00000000-1111-2222-3333-444444444444"
    token = client_credentials(sim, unknown)
    assert token.status_code == 400
    assert token.json()["error"] == "invalid_request"
    assert token.json()["error_codes"] == [90002]
    discovery = httpx.get(
        f"{sim.base_url}/{unknown}/v2.0/.well-known/openid-configuration", verify=sim.ssl_context()
    )
    assert discovery.status_code == 400
    assert discovery.json()["error"] == "invalid_tenant"
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        msal_app(sim, unknown)


def test_basic_auth_client_secret_is_accepted(sim: Simulator) -> None:
    tenant = sim.tenant()
    sim.grant_consent(tenant.id)
    resp = httpx.post(
        f"{sim.base_url}/{tenant.id}/oauth2/v2.0/token",
        data={"scope": GRAPH_SCOPE[0], "grant_type": "client_credentials"},
        auth=(sim.app_id, sim.app_secret),
        verify=sim.ssl_context(),
    )
    assert resp.status_code == 200
    assert resp.json()["access_token"]


def test_graph_rejects_missing_expired_and_revoked_tokens(sim: Simulator) -> None:
    tenant = sim.tenant()
    sim.grant_consent(tenant.id)
    url = f"{sim.graph_url}/users"
    missing = httpx.get(url, verify=sim.ssl_context())
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert set(missing.json()["error"]["innerError"]) >= {"date", "request-id", "client-request-id"}

    token = token_for(sim, tenant.id)
    assert (
        httpx.get(
            url, headers={"Authorization": f"Bearer {token}"}, verify=sim.ssl_context()
        ).status_code
        == 200
    )
    sim.revoke_consent(tenant.id)
    revoked = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, verify=sim.ssl_context())
    assert revoked.status_code == 403
    sim.grant_consent(tenant.id)


def test_tokens_expire() -> None:
    with Simulator(
        seed=3, users=1, messages=1, files=1, consented=True, token_lifetime_s=1
    ) as short:
        resp = client_credentials(short, short.tenant().id)
        token = resp.json()["access_token"]
        assert resp.json()["expires_in"] == 1
        time.sleep(2.1)
        expired = httpx.get(
            f"{short.graph_url}/users",
            headers={"Authorization": f"Bearer {token}"},
            verify=short.ssl_context(),
        )
        assert expired.status_code == 401
        assert "expired" in expired.json()["error"]["message"]


# -- the OpenID Connect authorization-code flow ---------------------------------------------

REDIRECT = "https://msp.example/v1/consent/callback"


def _browser(sim: Simulator, url: str) -> dict[str, str]:
    """Follow the authorize URL as the admin's browser would, to the redirect's query."""
    resp = httpx.get(url, verify=sim.ssl_context(), follow_redirects=False)
    assert resp.status_code == 302, resp.text
    location = urlparse(resp.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def _org_app(sim: Simulator, **kwargs: Any) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        kwargs.pop("client_id", sim.app_id),
        client_credential=kwargs.pop("secret", sim.app_secret),
        authority=kwargs.pop("authority", f"{sim.base_url}/organizations"),
        instance_discovery=False,
        azure_region=None,
        verify=str(sim.ca_path),
        **kwargs,
    )


@pytest.fixture
def fresh() -> Iterator[Simulator]:
    with Simulator(seed=5, tenants=2, users=2, messages=1, files=1, consented=False) as running:
        yield running


def test_msal_auth_code_flow_signs_the_admin_in_and_records_admin_consent(
    fresh: Simulator,
) -> None:
    tenant = list(fresh.state.tenants.values())[1]
    app = _org_app(fresh)
    flow = app.initiate_auth_code_flow(
        [GRAPH_SCOPE[0]], redirect_uri=REDIRECT, prompt="consent", login_hint=admin_upn(tenant)
    )
    auth_uri = urlparse(flow["auth_uri"])
    assert auth_uri.path == "/organizations/oauth2/v2.0/authorize"
    assert parse_qs(auth_uri.query)["code_challenge_method"] == ["S256"]
    answer = _browser(fresh, flow["auth_uri"])
    assert answer["state"] == flow["state"] and answer["code"]
    result = app.acquire_token_by_auth_code_flow(flow, answer)
    assert "error" not in result, result
    claims = result["id_token_claims"]
    assert claims["tid"] == tenant.id and claims["preferred_username"] == admin_upn(tenant)
    assert claims["aud"] == fresh.app_id
    assert claims["iss"] == f"{fresh.base_url}/{tenant.id}/v2.0"

    # The ID token is RS256-signed with a key published at the discovery document's jwks_uri.
    config = httpx.get(
        f"{fresh.base_url}/organizations/v2.0/.well-known/openid-configuration",
        verify=fresh.ssl_context(),
    ).json()
    assert config["issuer"] == f"{fresh.base_url}/{{tenantid}}/v2.0"
    keys = httpx.get(config["jwks_uri"], verify=fresh.ssl_context()).json()["keys"]
    header = jwt.get_unverified_header(result["id_token"])
    assert header["alg"] == "RS256" and header["kid"] in {k["kid"] for k in keys}
    key = jwt.PyJWK({k["kid"]: k for k in keys}[header["kid"]])
    verified = jwt.decode(
        result["id_token"],
        key.key,
        algorithms=["RS256"],
        audience=fresh.app_id,
        issuer=f"{fresh.base_url}/{tenant.id}/v2.0",
        options={"require": ["exp", "iat", "nbf", "nonce", "tid", "oid"]},
    )
    assert verified["nonce"] == claims["nonce"] and verified["oid"] == claims["oid"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            result["id_token"][:-4]
            + ("AAAA" if not result["id_token"].endswith("AAAA") else "BBBB"),
            key.key,
            algorithms=["RS256"],
            audience=fresh.app_id,
        )

    # Admin consent was recorded in the admin's home tenant only: app tokens now work there.
    assert "access_token" in msal_app(fresh, tenant.id).acquire_token_for_client(GRAPH_SCOPE)
    other = fresh.tenant()
    assert msal_app(fresh, other.id).acquire_token_for_client(GRAPH_SCOPE)["error_codes"] == [
        700016
    ]

    # A code is redeemed once: a second redemption is AADSTS54005.
    replay = _redeem(fresh, "organizations", answer["code"], flow["code_verifier"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant" and replay.json()["error_codes"] == [54005]


def _redeem(
    sim: Simulator,
    tenant_key: str,
    code: str,
    verifier: str,
    *,
    redirect_uri: str = REDIRECT,
    client_id: str | None = None,
    secret: str | None = None,
) -> httpx.Response:
    return httpx.post(
        f"{sim.base_url}/{tenant_key}/oauth2/v2.0/token",
        data={
            "grant_type": "authorization_code",
            "client_id": client_id or sim.app_id,
            "client_secret": secret or sim.app_secret,
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "scope": "openid profile",
        },
        verify=sim.ssl_context(),
    )


def _fresh_code(sim: Simulator, tenant_key: str = "organizations", **extra: str) -> tuple[str, str]:
    flow = _org_app(sim).initiate_auth_code_flow([GRAPH_SCOPE[0]], redirect_uri=REDIRECT, **extra)
    url = flow["auth_uri"].replace("/organizations/", f"/{tenant_key}/")
    return _browser(sim, url)["code"], flow["code_verifier"]


def test_code_redemption_fails_as_entra_does(fresh: Simulator) -> None:
    first, second = list(fresh.state.tenants.values())
    code, verifier = _fresh_code(fresh, login_hint=admin_upn(first))
    wrong = _redeem(fresh, "organizations", code, verifier[:-2] + "xx")
    assert (wrong.status_code, wrong.json()["error_codes"]) == (400, [501481])
    assert wrong.json()["error_description"].startswith("AADSTS501481:")
    # the failed attempt burnt the code
    assert _redeem(fresh, "organizations", code, verifier).json()["error_codes"] == [54005]

    code, verifier = _fresh_code(fresh, login_hint=admin_upn(first))
    moved = _redeem(fresh, "organizations", code, verifier, redirect_uri="https://evil.example/cb")
    assert moved.json()["error_codes"] == [50011]

    code, verifier = _fresh_code(fresh, login_hint=admin_upn(first))
    elsewhere = _redeem(fresh, second.id, code, verifier)  # a code of one directory at another
    assert elsewhere.json()["error"] == "invalid_grant" and elsewhere.json()["error_codes"] == [
        70000
    ]

    code, verifier = _fresh_code(fresh, login_hint=admin_upn(first))
    bad_secret = _redeem(fresh, "organizations", code, verifier, secret="nope")
    assert (bad_secret.status_code, bad_secret.json()["error_codes"]) == (401, [7000215])

    unknown = _redeem(fresh, "organizations", "not-a-code", verifier)
    assert unknown.json()["error_codes"] == [9002313]

    ctl = httpx.post(
        f"{fresh.base_url}/_sim/entra/settings",
        json={"codeLifetimeSeconds": 0},
        verify=fresh.ssl_context(),
    )
    assert ctl.status_code == 200
    code, verifier = _fresh_code(fresh, login_hint=admin_upn(first))
    time.sleep(0.01)
    expired = _redeem(fresh, "organizations", code, verifier)
    assert expired.json()["error"] == "invalid_grant" and expired.json()["error_codes"] == [70008]


def test_authorize_refusals_and_error_pages(fresh: Simulator) -> None:
    first, second = list(fresh.state.tenants.values())
    app = _org_app(fresh)
    flow = app.initiate_auth_code_flow([GRAPH_SCOPE[0]], redirect_uri=REDIRECT)

    # The admin refuses (chosen through /_sim/entra/signin): redirect with error and state.
    chosen = httpx.post(
        f"{fresh.base_url}/_sim/entra/signin",
        json={"user": admin_upn(second), "refuse": True},
        verify=fresh.ssl_context(),
    )
    assert chosen.json() == {"user": admin_upn(second), "refuse": True}
    answer = _browser(fresh, flow["auth_uri"])
    assert answer["error"] == "access_denied" and answer["state"] == flow["state"]
    assert answer["error_description"].startswith("AADSTS65004:") and "code" not in answer
    assert fresh.app_id not in second.consented_apps

    # A user who is not an administrator cannot grant admin consent.
    user = sorted(first.users.values(), key=lambda u: u.upn)[0]
    httpx.post(
        f"{fresh.base_url}/_sim/entra/signin", json={"user": user.upn}, verify=fresh.ssl_context()
    )
    answer = _browser(fresh, flow["auth_uri"])
    assert answer["error"] == "access_denied"
    assert answer["error_description"].startswith("AADSTS90094:")
    httpx.delete(f"{fresh.base_url}/_sim/entra/signin", verify=fresh.ssl_context())

    # An admin of one directory at another directory's endpoint: Entra's error page.
    resp = httpx.get(
        flow["auth_uri"].replace("/organizations/", f"/{second.id}/")
        + "&login_hint="
        + admin_upn(first),
        verify=fresh.ssl_context(),
    )
    assert resp.status_code == 400 and resp.json()["error_codes"] == [50020]

    # Unknown app, and a redirect URI the app does not list.
    unknown = httpx.get(
        f"{fresh.base_url}/organizations/oauth2/v2.0/authorize",
        params={
            "client_id": "nobody",
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "openid",
        },
        verify=fresh.ssl_context(),
    )
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [700016]
    registered = httpx.post(
        f"{fresh.base_url}/_sim/entra/apps",
        json={"redirectUris": ["https://msp-b.example/cb"]},
        verify=fresh.ssl_context(),
    ).json()
    own = _org_app(fresh, client_id=registered["appId"], secret=registered["secret"])
    flow = own.initiate_auth_code_flow([GRAPH_SCOPE[0]], redirect_uri=REDIRECT)
    mismatch = httpx.get(flow["auth_uri"], verify=fresh.ssl_context())
    assert mismatch.status_code == 400 and mismatch.json()["error_codes"] == [50011]

    # An MSP's own app goes through the same flow with its own credentials.
    flow = own.initiate_auth_code_flow(
        [GRAPH_SCOPE[0]], redirect_uri="https://msp-b.example/cb", login_hint=admin_upn(second)
    )
    resp = httpx.get(flow["auth_uri"], verify=fresh.ssl_context())
    back = {k: v[0] for k, v in parse_qs(urlparse(resp.headers["location"]).query).items()}
    result = own.acquire_token_by_auth_code_flow(flow, back)
    assert result["id_token_claims"]["aud"] == registered["appId"], result
    assert registered["appId"] in second.consented_apps


def test_get_on_the_token_endpoint_is_entras_json_error(fresh: Simulator) -> None:
    for path in ("organizations/oauth2/v2.0/token", f"{fresh.tenant().id}/oauth2/v2.0/token"):
        resp = httpx.get(f"{fresh.base_url}/{path}", verify=fresh.ssl_context())
        assert resp.status_code == 400
        assert resp.headers["content-type"].startswith("application/json")
        body = resp.json()
        assert body["error"] == "invalid_request" and body["error_codes"] == [900561]
        assert body["error_description"].startswith("AADSTS900561:")
        assert {"timestamp", "trace_id", "correlation_id"} <= set(body)


def test_instance_discovery_answers_like_entra(fresh: Simulator) -> None:
    tenant = fresh.tenant()
    resp = httpx.get(
        f"{fresh.base_url}/common/discovery/instance",
        params={
            "api-version": "1.1",
            "authorization_endpoint": f"{fresh.base_url}/{tenant.id}/oauth2/v2.0/authorize",
        },
        verify=fresh.ssl_context(),
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["api-version"] == "1.1"
    assert body["tenant_discovery_endpoint"] == (
        f"{fresh.base_url}/{tenant.id}/v2.0/.well-known/openid-configuration"
    )
    own = urlparse(fresh.base_url).netloc
    assert {"preferred_network": own, "preferred_cache": own, "aliases": [own]} in body["metadata"]
    assert any("login.microsoftonline.com" in m["aliases"] for m in body["metadata"])
    unknown = httpx.get(
        f"{fresh.base_url}/common/discovery/instance",
        params={"api-version": "1.1", "authorization_endpoint": "https://evil.example/x/oauth2"},
        verify=fresh.ssl_context(),
    )
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_instance"
    assert unknown.json()["error_codes"] == [50049]


class _ToSim(requests.Session):
    """What DNS does for a client pointed at graphsim by Microsoft's public host name."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__()
        self.sim = sim
        self.seen: list[str] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.seen.append(url)
        url = url.replace("https://login.microsoftonline.com", self.sim.base_url)
        kwargs["verify"] = str(self.sim.ca_path)
        return super().request(method, url, *args, **kwargs)


def test_msal_with_its_default_instance_discovery(fresh: Simulator) -> None:
    tenant = fresh.tenant()
    fresh.grant_consent(tenant.id)
    session = _ToSim(fresh)
    app = msal.ConfidentialClientApplication(
        fresh.app_id,
        client_credential=fresh.app_secret,
        authority=fresh.authority(tenant.id),
        http_client=session,
    )
    result = app.acquire_token_for_client(GRAPH_SCOPE)
    assert "access_token" in result, result
    assert any(
        u.startswith("https://login.microsoftonline.com/common/discovery/instance")
        for u in session.seen
    )
    again = app.acquire_token_for_client(GRAPH_SCOPE)
    assert again["token_source"] == "cache"
    # and the authorization-code flow through the same discovery
    flow = app.initiate_auth_code_flow(
        [GRAPH_SCOPE[0]], redirect_uri=REDIRECT, login_hint=admin_upn(tenant)
    )
    signed_in = app.acquire_token_by_auth_code_flow(flow, _browser(fresh, flow["auth_uri"]))
    assert signed_in["id_token_claims"]["tid"] == tenant.id, signed_in
