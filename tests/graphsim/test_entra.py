"""Entra ID: msal gets tokens unchanged; errors have Entra's shapes; consent gates access."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from graphsim import Simulator
from tests.graphsim.conftest import GRAPH_SCOPE, msal_app, token_for


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


def test_unknown_tenant(sim: Simulator) -> None:
    unknown = "00000000-1111-2222-3333-444444444444"
    token = httpx.post(
        f"{sim.base_url}/{unknown}/oauth2/v2.0/token",
        data={
            "client_id": sim.app_id,
            "client_secret": sim.app_secret,
            "scope": GRAPH_SCOPE[0],
            "grant_type": "client_credentials",
        },
        verify=sim.ssl_context(),
    )
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
        resp = httpx.post(
            f"{short.base_url}/{short.tenant().id}/oauth2/v2.0/token",
            data={
                "client_id": short.app_id,
                "client_secret": short.app_secret,
                "scope": GRAPH_SCOPE[0],
                "grant_type": "client_credentials",
            },
            verify=short.ssl_context(),
        )
        token = resp.json()["access_token"]
        assert resp.json()["expires_in"] == 1
        import time

        time.sleep(2.1)
        expired = httpx.get(
            f"{short.graph_url}/users",
            headers={"Authorization": f"Bearer {token}"},
            verify=short.ssl_context(),
        )
        assert expired.status_code == 401
        assert "expired" in expired.json()["error"]["message"]
