"""Downloads and uploads: constant-memory streams, pre-authenticated URLs, upload sessions."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import AsyncIterator
from email import message_from_bytes
from email.message import EmailMessage

import httpx
import pytest

from graphsim import Simulator
from safekeep.backup.drive.quickxor import QuickXorHash, quickxor_b64
from safekeep.graph import Conflict
from safekeep.graph.client import FRAGMENT_UNIT, GraphClient, ssl_context
from tests.fixtures.relay import TcpRelay
from tests.graph.conftest import ClientFactory, recorder_of

MiB = 1024 * 1024


def owner(sim: Simulator) -> tuple[str, str]:
    user = next(u for u in sorted(sim.tenant().users.values(), key=lambda u: u.upn) if u.drive_id)
    assert user.drive_id
    return user.id, user.drive_id


async def drive_root(client: GraphClient, sim: Simulator) -> tuple[str, str]:
    """The first user's drive and its root folder's id, as Graph answers it."""
    _, drive = owner(sim)
    return drive, (await client.get_json(f"/drives/{drive}/root"))["id"]


async def chunks_of(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(client: GraphClient, path: str, **kwargs) -> bytes:
    return b"".join([chunk async for chunk in client.stream(path, **kwargs)])


async def test_a_large_file_streams_in_constant_memory(
    fresh_sim: Simulator, make_client: ClientFactory
):
    client = make_client(fresh_sim)
    user, drive = owner(fresh_sim)
    size = 100 * MiB + 12345
    tenant = fresh_sim.tenant()
    item_id = fresh_sim.add_file(tenant.id, "/Videos/site-tour.mp4", user=user, size=size)
    item = await client.get_json(f"/drives/{drive}/items/{item_id}")
    digest = QuickXorHash()
    received = 0
    tracemalloc.start()
    try:
        async for chunk in client.stream(
            f"/drives/{drive}/items/{item_id}/content", chunk_size=MiB
        ):
            assert len(chunk) <= MiB
            digest.update(chunk)
            received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size == item["size"]
    assert digest.b64digest() == item["file"]["hashes"]["quickXorHash"]
    assert peak < 16 * MiB  # both ends of the transfer (graphsim runs in this process)
    graph, download = recorder_of(client).requests[-2:]
    assert graph.url.path.endswith("/content")
    assert graph.headers["Authorization"].startswith("Bearer ")
    assert "Authorization" not in download.headers  # the URL is pre-authenticated


async def test_a_range_goes_to_the_download_url(fresh_sim: Simulator, make_client: ClientFactory):
    client = make_client(fresh_sim)
    user, drive = owner(fresh_sim)
    data = os.urandom(5000)
    item_id = fresh_sim.add_file(fresh_sim.tenant().id, "/range.bin", user=user, data=data)
    path = f"/drives/{drive}/items/{item_id}/content"
    assert await read_all(client, path, headers={"Range": "bytes=1000-1099"}) == data[1000:1100]
    assert await read_all(client, path, headers={"Range": "bytes=4990-"}) == data[4990:]
    graph, download = recorder_of(client).requests[-2:]
    assert "Range" not in graph.headers
    assert download.headers["Range"] == "bytes=4990-"
    with pytest.raises(ValueError, match="Range"):
        await read_all(client, path, headers={"Range": "bytes=-100"})


async def test_mime_value_streams_the_exact_bytes(fresh_sim: Simulator, make_client: ClientFactory):
    client = make_client(fresh_sim)
    user, _ = owner(fresh_sim)
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message["Subject"] = "Quarterly numbers"
    message.set_content("See attached.")
    message.add_attachment(
        os.urandom(200_000), maintype="application", subtype="octet-stream", filename="numbers.bin"
    )
    message_id = fresh_sim.add_message(fresh_sim.tenant().id, user, bytes(message))
    raw = await read_all(
        client, f"/users/{user}/messages/{message_id}/$value", mailbox=user, chunk_size=64 * 1024
    )
    parsed = message_from_bytes(raw)
    assert parsed["Subject"] == "Quarterly numbers"
    assert client.stats.bytes_downloaded >= len(raw)
    # Exchange answers a ranged $value with the whole message: the range is cut out here.
    part = await read_all(
        client,
        f"/users/{user}/messages/{message_id}/$value",
        headers={"Range": "bytes=100-4195"},
        chunk_size=1000,
    )
    assert part == raw[100:4196]


async def test_small_drive_upload_and_conflict_rules(
    fresh_sim: Simulator, make_client: ClientFactory
):
    client = make_client(fresh_sim)
    drive, root = await drive_root(client, fresh_sim)
    data = b"minutes of the meeting\n" * 40
    item = await client.upload_drive_file(
        drive, root, "Minutes #3 (final).txt", len(data), chunks_of(data, 100)
    )
    assert item["name"] == "Minutes #3 (final).txt"
    assert item["size"] == len(data)
    assert await read_all(client, f"/drives/{drive}/items/{item['id']}/content") == data
    with pytest.raises(Conflict) as clash:
        await client.upload_drive_file(drive, root, item["name"], 3, chunks_of(b"new"))
    assert clash.value.code == "nameAlreadyExists"
    renamed = await client.upload_drive_file(
        drive, root, item["name"], 3, chunks_of(b"new"), conflict="rename"
    )
    assert renamed["id"] != item["id"]
    assert renamed["name"] != item["name"]
    replaced = await client.upload_drive_file(
        drive, root, item["name"], 3, chunks_of(b"new"), conflict="replace"
    )
    assert replaced["id"] == item["id"]
    assert await read_all(client, f"/drives/{drive}/items/{item['id']}/content") == b"new"
    with pytest.raises(ValueError, match="declared"):
        await client.upload_drive_file(drive, root, "short.txt", 10, chunks_of(b"abc"))


async def test_large_drive_upload_goes_through_a_session(
    fresh_sim: Simulator, make_client: ClientFactory
):
    client = make_client(fresh_sim)
    drive, root = await drive_root(client, fresh_sim)
    data = os.urandom(3 * MiB + 12345)
    fragment = 3 * FRAGMENT_UNIT
    item = await client.upload_drive_file(
        drive,
        root,
        "archive.zip",
        len(data),
        chunks_of(data, 77_777),
        small_limit=MiB,
        fragment_size=fragment,
    )
    assert item["size"] == len(data)
    assert item["file"]["hashes"] == {"quickXorHash": quickxor_b64(data)}
    puts = [r for r in recorder_of(client).requests if r.method == "PUT"]
    assert len(puts) == -(-len(data) // fragment)
    assert all("Authorization" not in r.headers for r in puts)
    assert [r.headers["Content-Range"] for r in puts[:2]] == [
        f"bytes 0-{fragment - 1}/{len(data)}",
        f"bytes {fragment}-{2 * fragment - 1}/{len(data)}",
    ]
    assert client.stats.bytes_uploaded == len(data)


async def test_an_interrupted_upload_session_resumes_where_it_stopped(
    fresh_sim: Simulator, make_client: ClientFactory
):
    client = make_client(fresh_sim)
    drive, root = await drive_root(client, fresh_sim)
    data = os.urandom(2 * MiB + 1)
    fragment = 2 * FRAGMENT_UNIT
    url = await client.create_drive_upload_session(drive, root, "resumed.bin")
    # A previous run sent the first fragment, then crashed.
    async with httpx.AsyncClient(verify=ssl_context(str(fresh_sim.ca_path))) as raw:
        first = await raw.put(
            url,
            content=data[:fragment],
            headers={"Content-Range": f"bytes 0-{fragment - 1}/{len(data)}"},
        )
        assert first.status_code == 202
    item = await client.upload_to_drive_session(
        url, len(data), chunks_of(data), fragment_size=fragment
    )
    assert item["size"] == len(data)
    assert item["file"]["hashes"] == {"quickXorHash": quickxor_b64(data)}
    sent = [r.headers["Content-Range"] for r in recorder_of(client).requests if r.method == "PUT"]
    assert sent[0].startswith(f"bytes {fragment}-")  # nothing was sent twice


@pytest.mark.parametrize("size", [150_000, 5 * MiB + 7])
async def test_mail_attachments_small_and_large(
    fresh_sim: Simulator, make_client: ClientFactory, size: int
):
    client = make_client(fresh_sim)
    user, _ = owner(fresh_sim)
    draft = await client.request_json(
        "POST", f"/users/{user}/messages", json={"subject": "with attachment"}
    )
    assert draft is not None
    data = os.urandom(size)
    attachment_id = await client.upload_mail_attachment(
        user, draft["id"], "report.pdf", "application/pdf", chunks_of(data, 500_000), size
    )
    listed = await client.get_json(
        f"/users/{user}/messages/{draft['id']}/attachments", params={"$select": "id,name,size"}
    )
    (found,) = listed["value"]
    assert found["name"] == "report.pdf"
    assert found["size"] >= size  # Exchange counts the MIME overhead too
    assert attachment_id is None or attachment_id == found["id"]
    path = f"/users/{user}/messages/{draft['id']}/attachments/{found['id']}/$value"
    assert await read_all(client, path, mailbox=user) == data
    puts = [r for r in recorder_of(client).requests if r.method == "PUT"]
    if size < 3 * MiB:
        assert puts == []
    else:
        assert len(puts) == 2
        assert all(int(r.headers["Content-Length"]) <= 4 * MiB for r in puts)
        assert all("Authorization" not in r.headers for r in puts)


async def test_a_broken_transfer_resumes_where_it_stopped(
    fresh_sim: Simulator, make_client: ClientFactory
):
    user, _ = owner(fresh_sim)
    message = EmailMessage()
    message["Subject"] = "Big one"
    message.set_content("body")
    message.add_attachment(
        os.urandom(2 * MiB), maintype="application", subtype="zip", filename="big.zip"
    )
    message_id = fresh_sim.add_message(fresh_sim.tenant().id, user, bytes(message))
    proxy = TcpRelay(fresh_sim.port, cut_first_after=1 * MiB)
    port = await proxy.start()
    client = make_client(fresh_sim, graph_url=f"https://127.0.0.1:{port}", backoff_base=0.01)
    try:
        raw = await read_all(
            client, f"/users/{user}/messages/{message_id}/$value", chunk_size=64 * 1024
        )
        assert proxy.connections == 2
        assert client.stats.retries == 1
        assert message_from_bytes(raw)["Subject"] == "Big one"
        whole = await read_all(client, f"/users/{user}/messages/{message_id}/$value")
        assert raw == whole
    finally:
        await proxy.stop()
