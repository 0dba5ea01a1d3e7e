"""An item's versions page like every other list, and each version's folder path costs a
read per folder version, not one per item version and folder."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx

from safekeep.runtime import Runtime
from safekeep.tenants.models import Account, Item, utcnow
from safekeep.tenants.pagination import encode_cursor
from tests.api.conftest import add_onedrive_item, add_onedrive_version
from tests.factories import create_account, create_msp, create_tenant
from tests.plans import Recorder

VERSIONS = 60
RENAMED_AT = 31  # the file's folder was renamed in this snapshot


async def _item(
    runtime: Runtime,
    account: Account,
    external_id: str,
    kind: str,
    spans: list[tuple[int, int | None, str, str | None]],  # first, last, name, parent
) -> Item:
    """A OneDrive item with a version for each span of snapshots, a day apart."""
    start = utcnow() - timedelta(days=VERSIONS)
    (first, last, name, parent), *later = spans

    def fields(first: int, last: int | None, name: str, parent: str | None) -> dict[str, Any]:
        return {
            "name": name,
            "parent_external_id": parent,
            "first_seq": first,
            "last_seq": last,
            "valid_from": start + timedelta(days=first),
            "valid_to": None if last is None else start + timedelta(days=last + 1),
            "size": first,
            "meta": {},
        }

    async with runtime.db.session() as session:
        item, _ = await add_onedrive_item(
            session, account, external_id, kind, **fields(first, last, name, parent)
        )
        for span in later:
            add_onedrive_version(session, account, item, **fields(*span))
    return item


async def test_versions_page_newest_first_with_paths_read_once_per_folder_version(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    runtime, client = any_runtime, any_client
    msp = await create_msp(runtime, "Versions MSP")
    tenant = await create_tenant(runtime, msp)
    account = await create_account(runtime, tenant)
    await _item(runtime, account, "docs", "drive_folder", [(1, None, "Documents", None)])
    await _item(
        runtime,
        account,
        "proj",
        "drive_folder",
        [(1, RENAMED_AT - 1, "Projects", "docs"), (RENAMED_AT, None, "Projects 2026", "docs")],
    )
    spans: list[tuple[int, int | None, str, str | None]] = [
        (seq, None if seq == VERSIONS else seq, "report.docx", "proj")
        for seq in range(1, VERSIONS + 1)
    ]
    item = await _item(runtime, account, "file", "file", spans)
    url = f"/v1/tenants/{tenant.id}/accounts/{account.id}/items/{item.id}/versions"

    pages: list[dict] = []
    reads: list[int] = []
    cursor = None
    while True:
        params = {"limit": 25, **({"cursor": cursor} if cursor else {})}
        with Recorder(runtime, keep="item_version") as sent:
            answer = await client.get(url, params=params, headers=msp.headers)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        reads.append(len(sent))
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(p["versions"]) for p in pages] == [25, 25, 10]
    listed = [v for p in pages for v in p["versions"]]
    assert [v["first_seq"] for v in listed] == list(range(VERSIONS, 0, -1))
    assert listed[0]["last_seq"] is None and listed[-1]["last_seq"] == 1
    for v in listed:
        folder = "Projects 2026" if v["first_seq"] >= RENAMED_AT else "Projects"
        assert v["folder_path"] == f"/Documents/{folder}", v
    # the page's versions, then each folder version once: 25 versions in two folders read
    # two ancestors each before (51 reads a page)
    assert max(reads) <= 5, reads

    past_column = (encode_cursor({"s": 2**31}), encode_cursor({"s": 10**30}))
    for bad in (
        "!!!",
        encode_cursor({"s": True}),
        encode_cursor({"s": 0}),
        encode_cursor({}),
        *past_column,
    ):
        answer = await client.get(url, params={"cursor": bad}, headers=msp.headers)
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
    other = await create_msp(runtime, "Other MSP")
    assert (await client.get(url, headers=other.headers)).status_code == 404
    missing = url.replace(str(item.id), str(uuid.uuid4()))
    assert (await client.get(missing, headers=msp.headers)).status_code == 404
