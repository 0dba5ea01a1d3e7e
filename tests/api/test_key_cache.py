"""The grant cache of authentication: a key is read once per GRANT_CACHE_SECONDS, a revocation
made through this process applies at once (even to a lookup racing with it), one made
elsewhere within the cache's time bound, and expiry is checked on every request."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update

from safekeep.runtime import Runtime
from safekeep.tenants.api_key import repository, service
from safekeep.tenants.models import ApiKey, utcnow
from tests.clock import Clock
from tests.factories import MspHandle, create_msp


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A fresh cache on a clock the test moves."""
    fake = Clock()
    monkeypatch.setattr(service, "GRANTS", service.GrantCache(clock=fake))
    return fake


def count_key_reads(runtime: Runtime) -> list[str]:
    seen: list[str] = []

    def on_execute(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM api_key JOIN msp" in statement:
            seen.append(statement)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", on_execute)
    return seen


@pytest.fixture
async def msp(runtime: Runtime) -> MspHandle:
    """The MSP whose admin key makes the portal keys these tests authenticate with."""
    return await create_msp(runtime)


async def new_key(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    r = await client.post(
        "/v1/api-keys", json={"name": "portal", "scopes": ["read"]}, headers=headers
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], {"Authorization": f"Bearer {r.json()['key']}"}


async def test_a_key_is_read_once_per_ttl(
    client: httpx.AsyncClient, runtime: Runtime, clock: Clock, msp: MspHandle
) -> None:
    _id, headers = await new_key(client, msp.headers)
    reads = count_key_reads(runtime)
    for _ in range(5):
        assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
    assert len(reads) == 1
    clock.now += service.GRANT_CACHE_SECONDS
    assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
    assert len(reads) == 2


async def test_revocation_here_applies_to_the_next_request(
    client: httpx.AsyncClient, clock: Clock, msp: MspHandle
) -> None:
    key_id, headers = await new_key(client, msp.headers)
    assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
    r = await client.delete(f"/v1/api-keys/{key_id}", headers=msp.headers)
    assert r.status_code == 204
    # No time passes: the cached grant must not answer.
    r = await client.get("/v1/tenants", headers=headers)
    assert r.status_code == 401


async def test_a_lookup_racing_a_revocation_does_not_keep_the_key(
    client: httpx.AsyncClient,
    clock: Clock,
    msp: MspHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request reads the key while it is live, then the revocation commits (forgetting
    grants) before that request stores what it read: the store is refused."""
    _key_id, headers = await new_key(client, msp.headers)
    read = repository.get_grant_by_hash

    async def read_then_revocation_commits(*args: Any) -> Any:
        row = await read(*args)
        service.GRANTS.invalidate()
        return row

    monkeypatch.setattr(repository, "get_grant_by_hash", read_then_revocation_commits)
    assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
    assert not service.GRANTS._entries


async def test_revocation_elsewhere_applies_within_the_bound(
    client: httpx.AsyncClient, runtime: Runtime, clock: Clock, msp: MspHandle
) -> None:
    """Another process revoked the key (a direct write here): this process keeps answering
    from memory for at most GRANT_CACHE_SECONDS, then refuses."""
    key_id, headers = await new_key(client, msp.headers)
    assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
    async with runtime.db.session() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=utcnow()))
    clock.now += service.GRANT_CACHE_SECONDS - 0.1
    assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
    clock.now += 0.1
    assert (await client.get("/v1/tenants", headers=headers)).status_code == 401


async def test_expiry_is_checked_on_every_request(
    client: httpx.AsyncClient, clock: Clock, msp: MspHandle
) -> None:
    key_id, headers = await new_key(client, msp.headers)
    assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
    [entry] = [
        e
        for _read_at, e in service.GRANTS._entries.values()
        if str(e.grant.principal.api_key_id) == key_id
    ]
    entry.expires_at = utcnow() - timedelta(seconds=1)  # as if it had expired since
    assert (await client.get("/v1/tenants", headers=headers)).status_code == 401


async def test_unknown_keys_are_not_remembered(
    client: httpx.AsyncClient, runtime: Runtime, clock: Clock, msp: MspHandle
) -> None:
    reads = count_key_reads(runtime)
    bad = {"Authorization": "Bearer sk_" + "x" * 43}
    for _ in range(3):
        assert (await client.get("/v1/tenants", headers=bad)).status_code == 401
    assert len(reads) == 3
    assert not service.GRANTS._entries


def test_the_cache_is_bounded() -> None:
    cache = service.GrantCache(size=2, clock=lambda: 0.0)
    grant = service.Grant(principal=None, msp_status=None)  # type: ignore[arg-type]
    for name in ("a", "b", "c"):
        cache.put(name, service._KnownKey(grant, None, None), cache.generation)
    assert cache.get("a") is None and cache.get("b") and cache.get("c")
