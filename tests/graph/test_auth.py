"""Tokens from graphsim's Entra ID through MSAL: caching, refresh, and refusals."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from graphsim import Simulator
from safekeep.graph import (
    AppCredentials,
    ConsentRequired,
    InvalidClientSecret,
    TenantNotFound,
    TokenProvider,
    Unauthorized,
)
from tests.graph.conftest import ClientFactory, recorder_of, start_sim, tokens_for

TOKEN_ENDPOINT = "POST /{tenant}/oauth2/v2.0/token"


def token_requests(sim: Simulator) -> int:
    return int(sim.counters()["by_endpoint"].get(TOKEN_ENDPOINT, 0))


async def test_token_is_cached_and_shared_by_concurrent_callers(fresh_sim: Simulator):
    provider = tokens_for(fresh_sim)
    try:
        tokens = await asyncio.gather(*(provider.token() for _ in range(20)))
        assert len(set(tokens)) == 1
        assert await provider.token() == tokens[0]
        assert provider.issued == 1
        assert token_requests(fresh_sim) == 1
    finally:
        await provider.aclose()


async def test_token_is_refreshed_before_it_expires():
    sim = start_sim(token_lifetime_s=2)
    provider = tokens_for(sim)  # refreshes when half of a 2 s lifetime is left
    try:
        first = await provider.token()
        assert await provider.token() == first
        await asyncio.sleep(1.1)
        second = await provider.token()
        assert second != first
        assert provider.issued == 2
    finally:
        await provider.aclose()
        sim.stop()


async def test_graph_401_gets_one_refresh_and_a_retry(make_client: ClientFactory):
    # The JWT's exp is whole seconds after a whole-second iat, so a token lives between
    # lifetime - 1 and lifetime seconds: 2 leaves the first request at least a second.
    sim = start_sim(token_lifetime_s=2)
    try:
        # A negative margin keeps using the token past its expiry, as a skewed clock would.
        provider = tokens_for(sim, refresh_margin_seconds=-60)
        client = make_client(sim, tokens=provider)
        await client.get_json("/users")
        assert client.stats.token_refreshes == 0
        await asyncio.sleep(2.1)  # the JWT's exp is now behind us
        users = await client.get_json("/users")
        assert users["value"]
        assert client.stats.token_refreshes == 1
        assert provider.issued == 2
        statuses = [r.url.path for r in recorder_of(client).requests]
        assert statuses == ["/v1.0/users"] * 3  # the refused one, then its retry
    finally:
        sim.stop()


class RejectedTokens(TokenProvider):
    """A provider whose tokens Graph can never accept (a token minted for another app)."""

    async def token(self) -> str:
        return "eyJhbGciOiJIUzI1NiJ9.e30.not-a-valid-signature"

    def invalidate(self, token: str) -> None:
        self.invalidated = getattr(self, "invalidated", 0) + 1


async def test_a_token_refused_twice_raises_instead_of_looping(
    sim: Simulator, make_client: ClientFactory
):
    provider = RejectedTokens(
        login_url=sim.base_url,
        tenant=sim.tenant().id,
        credentials=AppCredentials(sim.app_id, sim.app_secret),
        ca_bundle=str(sim.ca_path),
    )
    client = make_client(sim, tokens=provider)
    with pytest.raises(Unauthorized) as caught:
        await client.get_json("/users")
    assert caught.value.reason == "token_rejected"
    assert caught.value.code == "InvalidAuthenticationToken"
    assert provider.invalidated == 1
    assert client.stats.requests == 2


async def test_unconsented_tenant_asks_for_consent_and_recovers_at_once():
    sim = start_sim(consented=False)
    provider = tokens_for(sim)
    try:
        with pytest.raises(ConsentRequired) as caught:
            await provider.token()
        assert caught.value.reason == "consent_revoked"
        assert 700016 in caught.value.aadsts
        sim.grant_consent(sim.tenant().id)
        # MSAL would serve its cached 400 for 60 s; the provider starts clean instead.
        assert await provider.token()
        sim.revoke_consent(sim.tenant().id)
        provider.invalidate(await provider.token())
        with pytest.raises(ConsentRequired):
            await provider.token()
    finally:
        await provider.aclose()
        sim.stop()


async def test_wrong_secret_is_ours_to_fix(sim: Simulator):
    provider = TokenProvider(
        login_url=sim.base_url,
        tenant=sim.tenant().id,
        credentials=AppCredentials(sim.app_id, "not-the-secret"),
        ca_bundle=str(sim.ca_path),
    )
    try:
        with pytest.raises(InvalidClientSecret) as caught:
            await provider.token()
        assert caught.value.reason == "client_secret_invalid"
        assert caught.value.aadsts == (7000215,)
        assert "not-the-secret" not in repr(provider.__dict__.get("_credentials"))
    finally:
        await provider.aclose()


async def test_unknown_tenant(sim: Simulator):
    provider = tokens_for(sim, tenant=str(uuid.uuid4()))
    try:
        with pytest.raises(TenantNotFound) as caught:
            await provider.token()
        assert caught.value.reason == "tenant_not_found"
        assert caught.value.aadsts == (90002,)
    finally:
        await provider.aclose()


def test_login_url_must_be_https():
    with pytest.raises(ValueError, match="https"):
        TokenProvider(
            login_url="http://127.0.0.1:1", tenant="t", credentials=AppCredentials("a", "b")
        )
