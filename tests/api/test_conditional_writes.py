"""If-Match on the writes whose resource a GET tags: a change made only while the resource is
as the client last read it, so two portal users cannot overwrite each other's change."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from safekeep.runtime import Runtime
from tests.api.conftest import MspWorld, build_world, fingerprint


@pytest.mark.parametrize(
    ("path", "first", "second"),
    [
        ("", {"name": "Renamed once"}, {"name": "Renamed twice"}),
        ("/policy", {"backups_per_day": 2}, {"backups_per_day": 6}),
    ],
)
async def test_a_write_with_a_stale_etag_is_412_and_changes_nothing(
    any_client: httpx.AsyncClient,
    any_runtime: Runtime,
    path: str,
    first: dict[str, object],
    second: dict[str, object],
) -> None:
    client, a = any_client, await build_world(any_runtime, "alpha")
    url = f"/v1/tenants/{a.tenant.id}{path}"
    headers = a.msp.headers
    method = "PATCH" if path == "" else "PUT"
    read = await client.get(url, headers=headers)
    etag = read.headers["ETag"]
    changed = await client.request(method, url, json=first, headers={**headers, "If-Match": etag})
    assert changed.status_code == 200, changed.text
    assert changed.headers["ETag"] != etag  # the answer carries the new tag
    assert (await client.get(url, headers=headers)).headers["ETag"] == changed.headers["ETag"]
    before = await fingerprint(any_runtime)
    for stale in (etag, f"W/{changed.headers['ETag']}", '"not-a-tag"'):
        r = await client.request(method, url, json=second, headers={**headers, "If-Match": stale})
        assert r.status_code == 412, (stale, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/precondition-failed")
    assert await fingerprint(any_runtime) == before
    assert (await client.get(url, headers=headers)).json() == changed.json()
    for tags in (f'"x", {changed.headers["ETag"]}', "*"):
        r = await client.request(method, url, json=first, headers={**headers, "If-Match": tags})
        assert r.status_code == 200, (tags, r.text)
    # Without If-Match, the write is made as before.
    assert (await client.request(method, url, json=second, headers=headers)).status_code == 200


async def test_two_writers_with_one_etag_cannot_both_win(
    any_client: httpx.AsyncClient, any_runtime: Runtime
) -> None:
    a: MspWorld = await build_world(any_runtime, "alpha")
    url = f"/v1/tenants/{a.tenant.id}"
    headers = a.msp.headers
    etag = (await any_client.get(url, headers=headers)).headers["ETag"]
    answers = await asyncio.gather(
        *(
            any_client.patch(
                url, json={"name": f"Writer {n}"}, headers={**headers, "If-Match": etag}
            )
            for n in range(4)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 412, 412, 412]
