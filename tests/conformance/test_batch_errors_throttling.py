"""``$batch`` with the SDK's batch helpers, Graph's JSON errors on unknown paths (v1.0 and
beta) parsed by the SDK, throttling answers honoured by its retry handler, and how
graphsim counts what clients sent."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, TypeVar

import httpx
import msal
import pytest
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from msgraph import GraphServiceClient
from msgraph.generated.models.drive import Drive
from msgraph.generated.models.mail_folder import MailFolder
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.user import User
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem
from msgraph_core.requests.batch_response_content import BatchResponseContent
from msgraph_core.requests.batch_response_item import BatchResponseItem

from graphsim import Simulator
from tests.conformance.conftest import GRAPH, LOGIN, MsalCredential

T = TypeVar("T")


def batch_of(graph: GraphServiceClient, user: Any) -> tuple[BatchRequestContent, list[str]]:
    mailbox = graph.users.by_user_id(user.id)
    items = [
        BatchRequestItem(mailbox.to_get_request_information()),
        BatchRequestItem(
            mailbox.mail_folders.by_mail_folder_id("inbox").to_get_request_information()
        ),
        BatchRequestItem(mailbox.drive.to_get_request_information()),
    ]
    return BatchRequestContent({i.id: i for i in items}), [i.id for i in items]


async def test_batch_with_the_sdk_helpers(
    graph: GraphServiceClient, user: Any, raw: httpx.AsyncClient
) -> None:
    content, ids = batch_of(graph, user)
    answer = await graph.batch.post(content)
    assert isinstance(answer, BatchResponseContent)
    assert answer.get_response_status_codes() == dict.fromkeys(ids, 200)
    for request_id in ids:
        item = answer.get_response_by_id(request_id)
        assert isinstance(item, BatchResponseItem)
        assert item.content_type == "application/json"
    # msgraph-core 1.5.2 reads an inner body only when it is a base64 string
    # (``get_bytes_value``); Graph, like graphsim, answers JSON bodies as JSON objects, which
    # it leaves as None. So the same envelope the SDK built is also sent raw and each inner
    # body parsed with the SDK's models.
    info = await graph.batch.to_post_request_information(content)
    envelope = await raw.post(
        "/$batch", content=info.content, headers={"Content-Type": "application/json"}
    )
    assert envelope.status_code == 200
    bodies = {r["id"]: r["body"] for r in envelope.json()["responses"]}
    found = parsed(bodies[ids[0]], User)
    assert isinstance(found, User) and found.id == user.id
    inbox = parsed(bodies[ids[1]], MailFolder)
    assert isinstance(inbox, MailFolder) and inbox.id == user.well_known["inbox"]
    drive = parsed(bodies[ids[2]], Drive)
    assert isinstance(drive, Drive) and drive.id == user.drive_id


def parsed(body: dict[str, Any], model: type[T]) -> T:
    node = JsonParseNodeFactory().get_root_parse_node("application/json", json.dumps(body).encode())
    value: T = node.get_object_value(model)  # type: ignore[arg-type]
    return value


@pytest.mark.parametrize("surface", ["v1.0", "beta"])
async def test_unknown_paths_answer_graphs_json_error(
    graph: GraphServiceClient, user: Any, surface: str
) -> None:
    url = f"{GRAPH}/{surface}/users/{user.id}/nothingHere/deeper"
    with pytest.raises(ODataError) as caught:
        await graph.users.by_user_id(user.id).with_url(url).get()
    error = caught.value
    assert error.response_status_code == 400
    assert error.error is not None
    assert error.error.code == "BadRequest"
    assert error.error.message == "Resource not found for the segment 'nothingHere'."
    inner = error.error.inner_error
    assert inner is not None and inner.request_id and inner.date is not None
    assert inner.client_request_id


async def test_unknown_user_and_version_are_json_too(
    graph: GraphServiceClient, raw: httpx.AsyncClient
) -> None:
    with pytest.raises(ODataError) as caught:
        await graph.users.by_user_id("nobody@nowhere.example").get()
    assert caught.value.response_status_code == 404
    assert caught.value.error is not None
    assert caught.value.error.code == "Request_ResourceNotFound"
    for url in (f"{GRAPH}/v2.0/users", f"{GRAPH}/", f"{GRAPH}/beta/nothing"):
        answer = await raw.get(url)
        assert answer.status_code in (400, 404), url
        assert answer.headers["content-type"].startswith("application/json"), url
        body = answer.json()["error"]
        assert body["code"] and body["message"]
        assert set(body["innerError"]) >= {"date", "request-id", "client-request-id"}


async def test_429_retry_after_is_honoured_by_the_sdk_retry_handler(
    sim: Simulator, graph: GraphServiceClient, raw: httpx.AsyncClient
) -> None:
    other = next(u for u in sorted(sim.tenant().users.values(), key=lambda u: u.upn))
    sim.set_throttling(mode="custom", mailbox_requests=2, mailbox_window_s=1.0)
    await asyncio.sleep(1.05)  # earlier tests' requests leave the window
    try:
        # Read raw: 429, Graph's error, Retry-After in whole seconds.
        answers = [await raw.get(f"/users/{other.id}/mailFolders/inbox") for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert int(answers[2].headers["Retry-After"]) == 1
        assert answers[2].json()["error"]["code"] in ("ApplicationThrottled", "TooManyRequests")
        await asyncio.sleep(int(answers[2].headers["Retry-After"]) + 0.1)
        before = sim.counters()
        started = time.monotonic()
        # Through the SDK: its retry handler waits Retry-After and tries again.
        for _ in range(4):
            folder = (
                await graph.users.by_user_id(other.id).mail_folders.by_mail_folder_id("inbox").get()
            )
            assert folder is not None and folder.id == other.well_known["inbox"]
        after = sim.counters()
    finally:
        sim.set_throttling(mode="microsoft", mailbox_requests=10_000, mailbox_window_s=600.0)
    assert after["throttled"] > before["throttled"]
    assert after["retry_after_violations"] == before["retry_after_violations"]
    assert time.monotonic() - started >= 0.9


async def test_counters_count_each_wire_request_once_by_kind(
    sim: Simulator,
    graph: GraphServiceClient,
    user: Any,
    msal_http: httpx.Client,
    tenant_id: str,
) -> None:
    files = [i for i in sim.tenant().drives[user.drive_id].items.values() if i.content is not None]
    await graph.users.by_user_id(user.id).get()  # the SDK's token is cached before we count
    sim.reset_counters()
    content, _ = batch_of(graph, user)
    await graph.batch.post(content)
    data = (
        await graph.drives.by_drive_id(user.drive_id)
        .items.by_drive_item_id(files[0].id)
        .content.get()
    )
    assert data == files[0].content.read()  # type: ignore[union-attr]
    fresh = MsalCredential(
        msal.ConfidentialClientApplication(
            sim.app_id,
            client_credential=sim.app_secret,
            authority=f"{LOGIN}/{tenant_id}",
            http_client=msal_http,
        )
    )
    fresh.get_token(f"{GRAPH}/.default")
    counters = sim.counters()
    kinds = counters["by_kind"]
    assert kinds["batch"] == 1  # the envelope, once
    assert kinds["graph"] == 1  # GET .../content, answered 302
    assert kinds["download"] == 1  # the pre-authenticated URL it redirects to
    assert kinds["token"] == 1
    assert counters["total"] == sum(kinds.values()) == sum(counters["by_endpoint"].values())
    assert counters["by_endpoint"]["POST /$batch"] == 1
    assert counters["by_endpoint"]["POST /{tenant}/oauth2/v2.0/token"] == 1
    assert counters["batch_requests"] == 3
    assert counters["batch_by_endpoint"] == {
        "GET /users/{user}": 1,
        "GET /users/{user}/mailFolders/{folder}": 1,
        "GET /users/{user}/drive": 1,
    }
    assert counters["by_status"]["302"] == 1
