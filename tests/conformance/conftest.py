"""Microsoft's own clients against graphsim: msgraph-sdk (kiota request builders, its
middleware, PageIterator and batch helpers) and msal with its default instance discovery.

They reach the simulator under Graph's and Entra's public names: an httpx transport sends
``graph.microsoft.com`` and ``login.microsoftonline.com`` to graphsim's loopback port, with
those names in the TLS handshake (SNI) and the ``Host`` header, and graphsim's certificate
covers them. Nothing in the clients is patched or told it talks to a simulator, beyond
trusting graphsim's CA.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msal
import pytest
from azure.core.credentials import AccessToken
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph_core import GraphClientFactory

from graphsim import Simulator

# autouse here too: msal, under the SDK's credential, must verify against graphsim's CA.
from tests.graphsim.conftest import _requests_honours_verify  # noqa: F401

GRAPH = "https://graph.microsoft.com"
LOGIN = "https://login.microsoftonline.com"
PUBLIC_HOSTS = {"graph.microsoft.com", "login.microsoftonline.com"}


class _ToSimulator:
    """Rewrite where a request to a public name connects; keep the name for TLS and Host."""

    def __init__(self, sim: Simulator) -> None:
        self.host = sim.host
        self.port = sim.port

    def route(self, request: httpx.Request) -> None:
        name = request.url.host
        if name in PUBLIC_HOSTS:
            request.url = request.url.copy_with(host=self.host, port=self.port)
            request.extensions = {**request.extensions, "sni_hostname": name}


class PublicNames(httpx.AsyncBaseTransport):
    def __init__(self, sim: Simulator, verify: ssl.SSLContext) -> None:
        self.to = _ToSimulator(sim)
        self.inner = httpx.AsyncHTTPTransport(verify=verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.to.route(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class PublicNamesSync(httpx.BaseTransport):
    def __init__(self, sim: Simulator, verify: ssl.SSLContext) -> None:
        self.to = _ToSimulator(sim)
        self.inner = httpx.HTTPTransport(verify=verify)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.to.route(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class MsalCredential:
    """An azure-core TokenCredential over msal's client-credentials flow (what
    azure-identity's ClientSecretCredential does), so the SDK's token requests go through
    msal's cache and its authority discovery."""

    def __init__(self, app: msal.ConfidentialClientApplication) -> None:
        self.app = app
        self.acquired = 0

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        result = self.app.acquire_token_for_client(scopes=list(scopes))
        assert "access_token" in result, result
        if result.get("token_source") == "identity_provider":
            self.acquired += 1
        return AccessToken(
            str(result["access_token"]), int(time.time()) + int(result["expires_in"])
        )


@pytest.fixture(scope="session")
def sim() -> Iterator[Simulator]:
    with Simulator(
        seed=11,
        users=2,
        messages=24,
        files=14,
        events=8,
        contacts=6,
        sites=1,
        list_items=5,
        consented=True,
    ) as running:
        yield running


@pytest.fixture(scope="session")
def tenant_id(sim: Simulator) -> str:
    return sim.tenant().id


@pytest.fixture(scope="session")
def msal_http(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(transport=PublicNamesSync(sim, sim.ssl_context()), timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def credential(sim: Simulator, tenant_id: str, msal_http: httpx.Client) -> MsalCredential:
    app = msal.ConfidentialClientApplication(
        sim.app_id,
        client_credential=sim.app_secret,
        authority=f"{LOGIN}/{tenant_id}",  # default instance discovery, public authority
        http_client=msal_http,
    )
    return MsalCredential(app)


@pytest.fixture(scope="session")
async def http(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=PublicNames(sim, sim.ssl_context()), timeout=60
    ) as client:
        yield client


@pytest.fixture(scope="session")
def graph(credential: MsalCredential, http: httpx.AsyncClient) -> GraphServiceClient:
    """The SDK as an application builds it, with its default middleware (retry, redirect,
    parameters name decoding, telemetry) on our transport."""
    auth = AzureIdentityAuthenticationProvider(credential)
    client = GraphClientFactory.create_with_default_middleware(client=http)
    return GraphServiceClient(request_adapter=GraphRequestAdapter(auth, client=client))


@pytest.fixture(scope="session")
async def raw(sim: Simulator, credential: MsalCredential) -> AsyncIterator[httpx.AsyncClient]:
    """Plain HTTP under the public names, for what the SDK hides (status, headers)."""
    token = credential.get_token(f"{GRAPH}/.default").token
    async with httpx.AsyncClient(
        transport=PublicNames(sim, sim.ssl_context()),
        base_url=f"{GRAPH}/v1.0",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture(scope="session")
def user(sim: Simulator) -> Any:
    """The mailbox with the most messages (every service of the world has data there)."""
    tenant = sim.tenant()
    counts: dict[str, int] = {}
    for item in tenant.items.values():
        if item.kind == "message":
            counts[item.user_id] = counts.get(item.user_id, 0) + 1
    return max(tenant.users.values(), key=lambda u: (counts.get(u.id, 0), u.upn))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The SDK warns about its own deprecated per-builder configuration classes.
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph.*"))
            item.add_marker(
                pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions.*")
            )
