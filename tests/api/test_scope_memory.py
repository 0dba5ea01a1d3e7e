"""Search reads the tenants a key's scope reaches from a moment's memory of them
(``SCOPES`` in safekeep/tenants/tenant/repository.py): a tenant created or deleted through
this process counts at once, one changed by another process within REMEMBER_SECONDS, a
tenant missing from the memory is still asked about, and a key limited to some tenants never
sees what an unlimited key of its MSP remembered."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import update

from safekeep.runtime import Runtime
from safekeep.search import SearchDocument
from safekeep.tenants.models import Tenant, TenantStatus
from safekeep.tenants.remembered import REMEMBER_SECONDS, Remembered
from safekeep.tenants.scope import system_principal
from safekeep.tenants.tenant import repository
from tests.api.conftest import World
from tests.clock import Clock
from tests.factories import create_tenant


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A fresh memory of scopes on a clock the test moves."""
    fake = Clock()
    monkeypatch.setattr(repository, "SCOPES", Remembered(clock=fake))
    return fake


async def index_one(runtime: Runtime, tenant: Tenant, word: str) -> None:
    backend = await runtime.search_backend()
    await backend.index(
        [
            SearchDocument(
                version_id=str(uuid.uuid4()),
                msp_id=str(tenant.msp_id),
                tenant_id=str(tenant.id),
                account_id=str(uuid.uuid4()),
                service="mail",
                item_id=str(uuid.uuid4()),
                folder_path="/Inbox",
                kind="message",
                title=f"{word} report",
                valid_from=tenant.created_at,
                date=tenant.created_at,
                size=100,
                body=word,
            )
        ]
    )


async def tenants_found(client: httpx.AsyncClient, headers: dict[str, str], word: str) -> set[str]:
    r = await client.get("/v1/search", params={"q": word}, headers=headers)
    assert r.status_code == 200, r.text
    return {hit["tenant_id"] for hit in r.json()["hits"]}


async def search_status(client: httpx.AsyncClient, headers: dict[str, str], tenant: Tenant) -> int:
    r = await client.get(f"/v1/tenants/{tenant.id}/search", params={"q": "x"}, headers=headers)
    return r.status_code


async def test_tenants_created_and_deleted_here_count_at_once(
    client: httpx.AsyncClient, world: World, clock: Clock
) -> None:
    a = world.a
    await index_one(world.runtime, a.tenant, "zephyr")
    assert await tenants_found(client, a.msp.headers, "zephyr") == {str(a.tenant.id)}
    newcomer = await create_tenant(world.runtime, a.msp, name="Newcomer")
    await index_one(world.runtime, newcomer, "zephyr")
    # the clock has not moved: only forgetting on the commit lets the new tenant in
    assert await tenants_found(client, a.msp.headers, "zephyr") == {
        str(a.tenant.id),
        str(newcomer.id),
    }
    assert await search_status(client, a.msp.headers, newcomer) == 200
    deleted = await client.delete(f"/v1/tenants/{newcomer.id}", headers=a.msp.headers)
    assert deleted.status_code == 204, deleted.text
    assert await search_status(client, a.msp.headers, newcomer) == 404
    # a deleted tenant's data is still kept, and still searched across the MSP
    assert str(newcomer.id) in await tenants_found(client, a.msp.headers, "zephyr")


async def test_changes_made_elsewhere_count_within_the_bound(
    client: httpx.AsyncClient, world: World, clock: Clock
) -> None:
    a = world.a
    assert await search_status(client, a.msp.headers, a.tenant) == 200
    # another process deletes the tenant (a write this process's ORM never sees)
    async with world.runtime.db.session() as session:
        await session.execute(
            update(Tenant).where(Tenant.id == a.tenant.id).values(status=TenantStatus.deleted)
        )
    clock.now += REMEMBER_SECONDS - 0.1
    assert await search_status(client, a.msp.headers, a.tenant) == 200
    clock.now += 0.1
    assert await search_status(client, a.msp.headers, a.tenant) == 404

    # a tenant another process created after this one remembered the scope: searching it
    # by id asks the database, and the MSP-wide search includes it once the memory lapses
    async with world.runtime.db.session() as session:
        before = await repository.in_scope(session, system_principal(a.msp.id).scope)
    newcomer = await create_tenant(world.runtime, a.msp, name="Made elsewhere")
    await index_one(world.runtime, newcomer, "quasar")
    key = (a.msp.id, None)
    repository.SCOPES.put(key, before, repository.SCOPES.generation)  # as that process left it
    assert newcomer.id not in repository.SCOPES.get(key).every  # type: ignore[union-attr]
    assert await search_status(client, a.msp.headers, newcomer) == 200
    assert await tenants_found(client, a.msp.headers, "quasar") == set()
    clock.now += REMEMBER_SECONDS
    assert await tenants_found(client, a.msp.headers, "quasar") == {str(newcomer.id)}


async def test_a_limited_key_never_sees_what_its_msp_remembered(
    client: httpx.AsyncClient, world: World, clock: Clock
) -> None:
    a, b = world.a, world.b
    for tenant in (a.tenant, a.other_tenant, b.tenant):
        await index_one(world.runtime, tenant, "nebula")
    mine = {str(a.tenant.id), str(a.other_tenant.id)}
    assert await tenants_found(client, a.msp.headers, "nebula") == mine
    limited = await world.key(["read"], [a.other_tenant.id])
    assert await tenants_found(client, limited, "nebula") == {str(a.other_tenant.id)}
    assert await search_status(client, limited, a.tenant) == 404
    assert await search_status(client, limited, a.other_tenant) == 200
    assert await tenants_found(client, b.msp.headers, "nebula") == {str(b.tenant.id)}
    assert await search_status(client, b.msp.headers, a.tenant) == 404
