"""Large content is generated on read and streamed: a 100 MB file and 25 MB attachments."""

from __future__ import annotations

import time

import httpx

from graphsim import Simulator
from graphsim.content import GEN_BLOCK
from tests.graphsim.conftest import graph_client


def test_large_items_exist_and_stream_by_range() -> None:
    with (
        Simulator(
            seed=2,
            users=1,
            messages=120,
            files=3,
            events=0,
            contacts=0,
            sites=0,
            large_files=True,
            consented=True,
        ) as sim,
        graph_client(sim) as client,
    ):
        user = next(iter(sim.tenant().users.values()))
        video = client.get(f"/users/{user.id}/drive/root:/Videos/All-hands recording.mp4")
        assert video.status_code == 200
        size = video.json()["size"]
        assert size > 100 * 1024 * 1024
        start = time.perf_counter()
        with httpx.Client(verify=sim.ssl_context()) as plain:
            url = client.get(
                f"/drives/{video.json()['parentReference']['driveId']}/items/"
                f"{video.json()['id']}/content"
            ).headers["location"]
            tail = plain.get(url, headers={"Range": f"bytes={size - 4096}-"})
            head = plain.get(url, headers={"Range": "bytes=0-15"})
        assert tail.status_code == 206
        assert len(tail.content) == 4096
        assert head.content[4:12] == b"ftypmp42"
        assert time.perf_counter() - start < 5, "ranges are generated, not read from a 100 MB blob"

        big = [
            (m, a)
            for m in sim.tenant().items.values()
            if m.kind == "message"
            for a in m.attachments
            if a.content is not None and a.content.size > 25 * 1024 * 1024
        ]
        assert len(big) == 2
        message, attachment = big[0]
        listed = client.get(
            f"/users/{user.id}/messages/{message.id}/attachments",
            params={"$select": "id,name,size"},
        ).json()["value"]
        assert any(a["size"] > 25 * 1024 * 1024 for a in listed)
        assert all("contentBytes" not in a for a in listed)
        value = client.get(
            f"/users/{user.id}/messages/{message.id}/attachments/{attachment.id}/$value"
        )
        assert attachment.content is not None
        assert len(value.content) == attachment.content.size
        assert attachment.content.size > GEN_BLOCK * 25
