"""Users, licences and the organisation through the SDK, paged with its PageIterator."""

from __future__ import annotations

from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.models.user import User
from msgraph.generated.models.user_collection_response import UserCollectionResponse
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph_core.tasks.page_iterator import PageIterator

from graphsim import Simulator
from tests.conformance.conftest import MsalCredential


async def test_users_page_by_page_with_the_sdk_iterator(
    sim: Simulator, graph: GraphServiceClient
) -> None:
    query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
        select=["id", "userPrincipalName", "displayName", "assignedLicenses", "accountEnabled"],
        top=1,
    )
    first = await graph.users.get(RequestConfiguration(query_parameters=query))
    assert isinstance(first, UserCollectionResponse)
    assert first.odata_next_link and first.odata_next_link.startswith(
        "https://graph.microsoft.com/v1.0/users?"
    )
    seen: list[User] = []

    def keep(user: User) -> bool:
        seen.append(user)
        return True

    pages = PageIterator(first, graph.request_adapter)
    await pages.iterate(keep)
    expected = {u.upn for u in sim.tenant().users.values()}
    assert {u.user_principal_name for u in seen} == expected
    assert len(seen) == len(expected)
    licensed = [u for u in seen if u.assigned_licenses]
    assert licensed and all(str(lic.sku_id) for u in licensed for lic in u.assigned_licenses or [])


async def test_one_user_by_upn_and_by_id(graph: GraphServiceClient, user: Any) -> None:
    by_upn = await graph.users.by_user_id(user.upn).get()
    assert by_upn is not None and by_upn.id == user.id
    by_id = await graph.users.by_user_id(user.id).get()
    assert by_id is not None and by_id.user_principal_name == user.upn
    assert by_id.display_name == user.display_name


async def test_subscribed_skus_and_organization(sim: Simulator, graph: GraphServiceClient) -> None:
    skus = await graph.subscribed_skus.get()
    assert skus is not None and skus.value
    tenant = sim.tenant()
    assert {s.sku_part_number for s in skus.value} == {s.part_number for s in tenant.skus.values()}
    for sku in skus.value:
        assert sku.prepaid_units is not None and sku.prepaid_units.enabled is not None
        assert sku.consumed_units is not None and sku.service_plans
    org = await graph.organization.get()
    assert org is not None and org.value and str(org.value[0].id) == tenant.id


async def test_msal_caches_the_token_across_sdk_calls(
    sim: Simulator, graph: GraphServiceClient, credential: MsalCredential, user: Any
) -> None:
    """msal with its default discovery fetches a token once, then serves it from its cache:
    later SDK calls send no token request (graphsim counts token requests on the wire)."""
    await graph.users.by_user_id(user.id).get()
    before = sim.counters()["by_kind"].get("token", 0)
    acquired = credential.acquired
    for _ in range(5):
        await graph.users.by_user_id(user.id).get()
    assert sim.counters()["by_kind"].get("token", 0) == before
    assert credential.acquired == acquired == 1
