"""Discovery helpers: users with their licences, SKUs, sites, and who has which service."""

from __future__ import annotations

import pytest

from graphsim import Simulator
from graphsim.teams import new_chat, new_team
from safekeep.graph import UserNotFound, directory
from tests.graph.conftest import ClientFactory


async def test_users_come_with_the_fields_discovery_needs(
    sim: Simulator, make_client: ClientFactory
):
    client = make_client(sim)
    users = await directory.list_users(client)
    assert {u["id"] for u in users} == set(sim.tenant().users)
    for user in users:
        assert set(directory.USER_FIELDS.split(",")) <= set(user)
        assert all("skuId" in licence for licence in user["assignedLicenses"])


async def test_licences(sim: Simulator, make_client: ClientFactory):
    client = make_client(sim)
    skus = await directory.list_subscribed_skus(client)
    assert {s["skuId"] for s in skus} == set(sim.tenant().skus)
    assigned = {
        lic["skuId"] for u in await directory.list_users(client) for lic in u["assignedLicenses"]
    }
    assert assigned <= {s["skuId"] for s in skus}


async def test_sites_leave_out_personal_sites(sim: Simulator, make_client: ClientFactory):
    client = make_client(sim)
    sites = await directory.list_sites(client)
    expected = {s.id for s in sim.tenant().sites.values() if "/personal/" not in s.web_url}
    assert {s["id"] for s in sites} == expected
    assert sites
    assert all("/personal/" not in s["webUrl"] for s in sites)


async def test_services_per_user(fresh_sim: Simulator, make_client: ClientFactory):
    client = make_client(fresh_sim)
    tenant = fresh_sim.tenant()
    licensed, unlicensed = sorted(tenant.users.values(), key=lambda u: u.upn)[:2]
    fresh_sim.remove_licence(tenant.id, unlicensed.id)
    assert await directory.has_mailbox(client, licensed.id) is True
    assert await directory.has_drive(client, licensed.id) is True
    assert await directory.has_mailbox(client, unlicensed.id) is False
    assert await directory.has_drive(client, unlicensed.id) is False
    with pytest.raises(UserNotFound):
        await directory.has_mailbox(client, "00000000-0000-0000-0000-0000000000aa")
    with pytest.raises(UserNotFound):
        await directory.has_drive(client, "00000000-0000-0000-0000-0000000000aa")


async def test_teams_are_found_by_a_team_joined_or_else_a_chat(
    fresh_sim: Simulator, make_client: ClientFactory
):
    client = make_client(fresh_sim)
    tenant = fresh_sim.tenant()
    owner, chatter, loner = sorted(tenant.users, key=lambda u: tenant.users[u].upn)[:3]
    assert not any([await directory.has_teams(client, u) for u in (owner, chatter, loner)])
    with fresh_sim.engine.world.lock:
        new_team(tenant, "Ops", owners=[owner])
    assert await directory.has_teams(client, owner) is True
    assert await directory.has_teams(client, chatter) is False
    with fresh_sim.engine.world.lock:
        new_chat(tenant, "group", [chatter, owner], topic="lunch")
    assert await directory.has_teams(client, chatter) is True
    assert await directory.has_teams(client, loner) is False
    with pytest.raises(UserNotFound):
        await directory.has_teams(client, "00000000-0000-0000-0000-0000000000aa")
