"""A search backend that stops answering for a while must not stall the rest of the API.

Searches wait on OpenSearch; if each held one of the API's database connections meanwhile,
a pause of OpenSearch (its JVM collecting, a merge, a network stall) would use up the pool,
and every other route would queue behind it for a connection. Here OpenSearch sits behind
a proxy that holds the searches' requests while more searches than the pool has
connections wait on it, each having read the database first, and a tenant read must still
answer at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from safekeep.api.app import create_app
from safekeep.db import MAX_CONNECTIONS
from safekeep.tenants.remembered import REMEMBER_SECONDS
from tests.factories import create_msp, create_tenant
from tests.fixtures.app import SentMessages, build_settings, open_runtime
from tests.fixtures.relay import TcpRelay

READ_WITHIN_SECONDS = 5.0  # the pool's checkout timeout is 30 s
SETTLE_SECONDS = 0.5


@pytest.fixture
async def held_opensearch(opensearch_url: str) -> AsyncIterator[tuple[TcpRelay, str]]:
    parts = urlsplit(opensearch_url)
    assert parts.hostname and parts.port, opensearch_url
    relay = TcpRelay(parts.port, host=parts.hostname)
    port = await relay.start()
    yield relay, f"{parts.scheme}://127.0.0.1:{port}"
    await relay.stop()


async def test_searches_waiting_on_a_stalled_backend_leave_the_database_pool_free(
    tmp_path: Path,
    postgres_url: str,
    opensearch_index_prefix: str,
    held_opensearch: tuple[TcpRelay, str],
) -> None:
    relay, relayed_url = held_opensearch
    settings = build_settings(
        tmp_path,
        database_url=postgres_url,
        search_url=relayed_url,
        search_index_prefix=opensearch_index_prefix,
    )
    async with open_runtime(settings, SentMessages()) as runtime:
        msp = await create_msp(runtime)
        tenant = await create_tenant(runtime, msp)
        app = create_app(runtime=runtime)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://safekeep.test", headers=msp.headers
        ) as client:
            first = await client.get("/v1/search", params={"q": "invoice"})
            assert first.status_code == 200, first.text  # the index is there, the proxy passes
            # The tenants a key reaches are remembered for a moment; once that has passed,
            # each search reads them from the database again before it asks OpenSearch.
            await asyncio.sleep(REMEMBER_SECONDS + 0.1)

            relay.hold()
            searches = [
                asyncio.create_task(client.get("/v1/search", params={"q": f"invoice{n}"}))
                for n in range(MAX_CONNECTIONS + 4)
            ]
            # The searches reach OpenSearch's client...
            await asyncio.wait_for(relay.holding.wait(), timeout=READ_WITHIN_SECONDS)
            await asyncio.sleep(SETTLE_SECONDS)  # ...all of them past their own reads
            assert not any(s.done() for s in searches)
            read = await asyncio.wait_for(
                client.get(f"/v1/tenants/{tenant.id}"), timeout=READ_WITHIN_SECONDS
            )
            assert read.status_code == 200, read.text
            assert not any(s.done() for s in searches)  # still waiting: the read did not

            relay.release()
            answers = await asyncio.gather(*searches)
            assert [a.status_code for a in answers] == [200] * len(searches)
