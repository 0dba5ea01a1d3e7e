"""JSON $batch: splitting, order, dependsOn, inner throttling, and mailbox slots."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from graphsim import Simulator, ids
from safekeep.graph import BatchRequest, NotFound
from safekeep.graph.batch import BatchResponse
from safekeep.graph.errors import GraphError
from tests.graph.conftest import ClientFactory, mailbox_budget, recorder_of, start_sim


def users_of(sim: Simulator) -> list[str]:
    return [u.id for u in sorted(sim.tenant().users.values(), key=lambda u: u.upn)]


async def message_ids(client, user: str) -> list[str]:
    ids: list[str] = []
    async for page in client.paginate(f"/users/{user}/messages", params={"$select": "id"}):
        ids.extend(m["id"] for m in page)
    return ids


async def test_large_batches_are_split_by_20_and_answered_in_order(
    sim: Simulator, make_client: ClientFactory
):
    client = make_client(sim)
    user = users_of(sim)[0]
    ids = (await message_ids(client, user))[:15]
    requests = [
        BatchRequest(
            id=f"r{i}",
            method="GET",
            url=f"/users/{user}/messages/{ids[i % len(ids)]}?$select=id,subject",
        )
        for i in range(45)
    ]
    responses = await client.batch(requests)
    assert [r.id for r in responses] == [r.id for r in requests]
    assert all(r.status == 200 and r.ok and r.error is None for r in responses)
    assert [r.body["id"] for r in responses] == [ids[i % len(ids)] for i in range(45)]
    posts = [r for r in recorder_of(client).requests if r.url.path.endswith("/$batch")]
    # The mailbox's window starts at one slot and opens a slot per answer (slow start): one
    # answer so far (the listing), so the first envelope carries 2 of the first 20; once the
    # window is at Microsoft's 4, envelopes carry 20 (Exchange runs 4 of them at a time).
    assert [len(json.loads(p.content)["requests"]) for p in posts] == [2, 18, 20, 5]


async def test_dependencies_stay_together_and_a_failed_one_gives_424(
    sim: Simulator, make_client: ClientFactory
):
    client = make_client(sim)
    user = users_of(sim)[0]
    filler = [BatchRequest(id=f"f{i}", method="GET", url="/organization") for i in range(18)]
    unknown = ids.outlook_id("not", "here")  # well formed, held by nobody: 404
    chain = [
        BatchRequest(id="missing", method="GET", url=f"/users/{user}/messages/{unknown}"),
        BatchRequest(
            id="after", method="GET", url=f"/users/{user}/mailFolders/inbox", depends_on=["missing"]
        ),
        BatchRequest(id="last", method="GET", url="/organization", depends_on=["after"]),
    ]
    responses = {r.id: r for r in await client.batch([*filler, *chain])}
    assert responses["missing"].status == 404
    assert isinstance(responses["missing"].error, NotFound)
    assert responses["after"].status == 424
    assert responses["last"].status == 424
    assert responses["after"].error is not None
    assert responses["after"].error.status == 424
    with pytest.raises(NotFound):
        responses["missing"].raise_for_error()
    posts = [
        json.loads(r.content)["requests"]
        for r in recorder_of(client).requests
        if r.url.path.endswith("/$batch")
    ]
    # 21 requests: the chain of three is not cut in two, so the filler is split instead.
    assert [len(p) for p in posts] == [18, 3]
    assert {
        "id": "after",
        "method": "GET",
        "url": f"/users/{user}/mailFolders/inbox",
        "dependsOn": ["missing"],
    } in posts[1]


async def test_bodies_carry_a_content_type(fresh_sim: Simulator, make_client: ClientFactory):
    client = make_client(fresh_sim)
    user = users_of(fresh_sim)[0]
    (created,) = await client.batch(
        [
            BatchRequest(
                id="1",
                method="POST",
                url=f"/users/{user}/mailFolders",
                body={"displayName": "From a batch"},
            ),
        ]
    )
    assert created.status == 201
    assert created.body["displayName"] == "From a batch"


async def test_inner_429s_are_retried_after_their_own_retry_after(make_client: ClientFactory):
    sim = start_sim(seed=8, messages=20, throttling=mailbox_budget(8, window_s=0.4))
    try:
        client = make_client(sim)
        user = users_of(sim)[0]
        ids = await message_ids(client, user)
        sim.reset_counters()
        requests = [
            BatchRequest(id=str(i), method="GET", url=f"/users/{user}/messages/{mid}")
            for i, mid in enumerate(ids[:20])
        ]
        responses = await client.batch(requests)
        assert [r.status for r in responses] == [200] * 20
        assert [r.body["id"] for r in responses] == ids[:20]
        counters = sim.counters()
        assert counters["throttled"] > 0
        assert client.stats.throttled == counters["throttled"]
        posts = [
            json.loads(r.content)["requests"]
            for r in recorder_of(client).requests
            if r.url.path.endswith("/$batch")
        ]
        assert len(posts) > 1
        assert all(len(p) < 20 for p in posts[1:])  # only the refused ones are sent again
        assert client.stats.retry_after_waited_seconds > 0
    finally:
        sim.stop()


async def test_a_batch_takes_the_mailbox_slots_its_inner_requests_use(
    make_client: ClientFactory,
):
    # Exchange runs 4 requests of a batch at once: with single requests to the same mailbox
    # in flight beside it, holding one slot for the batch would exceed the mailbox's 4.
    sim = start_sim(seed=9, messages=20, throttling={"latency_ms": 4.0})
    try:
        client = make_client(sim)
        user = users_of(sim)[0]
        ids = await message_ids(client, user)
        batch = [
            BatchRequest(id=str(i), method="GET", url=f"/users/{user}/messages/{mid}")
            for i, mid in enumerate(ids[:20])
        ]

        async def single(mid: str) -> None:
            await client.get_json(f"/users/{user}/messages/{mid}", mailbox=user)

        batched = asyncio.create_task(client.batch(batch, mailbox=user))
        await asyncio.gather(*(single(m) for m in ids[:12]))
        assert all(r.status == 200 for r in await batched)
        counters = sim.counters()
        assert counters["throttled"] == 0
        assert max(counters["max_concurrency"].values()) == 4
    finally:
        sim.stop()


async def test_invalid_batches_are_refused_before_sending(
    sim: Simulator, make_client: ClientFactory
):
    client = make_client(sim)
    with pytest.raises(ValueError, match="unique"):
        await client.batch([BatchRequest("a", "GET", "/users"), BatchRequest("a", "GET", "/users")])
    with pytest.raises(ValueError, match="unknown"):
        await client.batch([BatchRequest("a", "GET", "/users", depends_on=["zz"])])
    chain = [BatchRequest("0", "GET", "/users")] + [
        BatchRequest(str(i), "GET", "/users", depends_on=[str(i - 1)]) for i in range(1, 21)
    ]
    with pytest.raises(ValueError, match="exceeds 20"):
        await client.batch(chain)
    # Graph runs linked requests only as one sequence: two depending on one, one depending
    # on two, or a cycle would be refused whole (400), so they are not sent.
    fork = [
        BatchRequest("a", "GET", "/users"),
        BatchRequest("b", "GET", "/users", depends_on=["a"]),
        BatchRequest("c", "GET", "/users", depends_on=["a"]),
    ]
    join = [
        BatchRequest("a", "GET", "/users"),
        BatchRequest("b", "GET", "/users"),
        BatchRequest("c", "GET", "/users", depends_on=["a", "b"]),
    ]
    cycle = [
        BatchRequest("a", "GET", "/users", depends_on=["b"]),
        BatchRequest("b", "GET", "/users", depends_on=["a"]),
    ]
    for shape in (fork, join, cycle, [BatchRequest("a", "GET", "/users", depends_on=["a"])]):
        with pytest.raises(ValueError, match="one sequence"):
            await client.batch(shape)
    assert recorder_of(client).requests == []


async def test_a_chain_goes_in_an_envelope_of_its_own(sim: Simulator, make_client: ClientFactory):
    """Graph refuses an envelope that mixes a dependsOn chain with other requests ("fully
    sequential or fully parallel"): the chain is sent alone, the rest together."""
    client = make_client(sim)
    user = users_of(sim)[0]
    singles = [BatchRequest(f"s{i}", "GET", "/organization") for i in range(3)]
    chain = [
        BatchRequest("c1", "GET", f"/users/{user}/mailFolders/inbox"),
        BatchRequest("c2", "GET", "/organization", depends_on=["c1"]),
    ]
    answers = await client.batch([singles[0], *chain, *singles[1:]])
    assert [a.id for a in answers] == ["s0", "c1", "c2", "s1", "s2"]
    assert all(a.status == 200 for a in answers)
    posts = [
        json.loads(r.content)["requests"]
        for r in recorder_of(client).requests
        if r.url.path.endswith("/$batch")
    ]
    assert sorted(sorted(r["id"] for r in p) for p in posts) == [["c1", "c2"], ["s0", "s1", "s2"]]


def test_a_binary_answer_is_decoded_strictly_then_leniently() -> None:
    data = bytes(range(256)) * 40
    strict = BatchResponse(id="1", status=200, body=base64.b64encode(data).decode())
    assert strict.binary() == data
    # Line breaks are not base64: the SIMD decoder refuses them, the lenient one skips them.
    wrapped = BatchResponse(id="2", status=200, body=base64.encodebytes(data).decode())
    assert wrapped.binary() == data
    with pytest.raises(GraphError, match="base64"):
        BatchResponse(id="3", status=200, body="abc").binary()  # bad padding either way
    with pytest.raises(GraphError, match="base64 string"):
        BatchResponse(id="4", status=200, body={"value": []}).binary()
    with pytest.raises(GraphError) as refused:
        BatchResponse(id="5", status=404, body={"error": {"code": "ErrorItemNotFound"}}).binary()
    assert refused.value.status == 404
