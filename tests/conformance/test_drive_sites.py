"""OneDrive and SharePoint through the SDK: drive delta on the ``items/root`` alias in the
``delta()`` form, parents and paths, download URLs, the ancestors of an incremental round,
sites, libraries, lists and list item delta."""

from __future__ import annotations

from typing import Any

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.drives.item.items.item.delta.delta_request_builder import (
    DeltaRequestBuilder as DriveDelta,
)
from msgraph.generated.models.drive_item import DriveItem
from msgraph.generated.models.list_item import ListItem
from msgraph.generated.sites.item.lists.item.items.items_request_builder import (
    ItemsRequestBuilder,
)

from graphsim import Simulator

DOWNLOAD_URL = "@microsoft.graph.downloadUrl"


async def walk(
    builder: Any, config: RequestConfiguration[Any] | None = None
) -> tuple[list[Any], str]:
    page = await builder.get(config)
    assert page is not None and page.value is not None
    values = list(page.value)
    while page.odata_next_link:
        page = await builder.with_url(page.odata_next_link).get(config)
        assert page is not None and page.value is not None
        values.extend(page.value)
    assert page.odata_delta_link
    return values, str(page.odata_delta_link)


async def test_drive_delta_parents_paths_and_download_urls(
    sim: Simulator, graph: GraphServiceClient, user: Any, http: httpx.AsyncClient
) -> None:
    drive = await graph.users.by_user_id(user.id).drive.get()
    assert drive is not None and drive.id == user.drive_id
    state = sim.tenant().drives[user.drive_id]
    root = graph.drives.by_drive_id(user.drive_id).items.by_drive_item_id("root")
    query = DriveDelta.DeltaRequestBuilderGetQueryParameters(
        select=["id", "name", "parentReference", "file", "folder", "root", "content.downloadUrl"],
        top=5,
    )
    items, link = await walk(root.delta, RequestConfiguration(query_parameters=query))
    assert "/items/root/delta()?token=" in link or "/root/delta()?token=" in link
    live = {i.id for i in state.items.values() if not i.deleted}
    assert [i.id for i in items if True] and {i.id for i in items} == live
    position = {item.id: n for n, item in enumerate(items)}
    for item in items:
        assert isinstance(item, DriveItem)
        if item.root is not None:
            continue
        parent = item.parent_reference
        assert parent is not None and parent.id is not None and parent.id in position
        assert position[parent.id] < position[item.id], "parents before children"
        parent_item = state.items[parent.id]
        where = state.path_of(parent_item) if parent_item.parent_id else ""
        assert parent.path == f"/drives/{user.drive_id}/root:{where}"
        if item.file is not None:
            assert item.additional_data[DOWNLOAD_URL].startswith("https://")
        else:
            assert DOWNLOAD_URL not in item.additional_data

    files = [i for i in items if i.file is not None]
    target = files[0]
    stored = state.items[target.id].content
    assert stored is not None
    # The pre-authenticated URL needs no token; the SDK's /content follows the 302 itself.
    direct = await http.get(target.additional_data[DOWNLOAD_URL])
    assert direct.status_code == 200 and direct.content == stored.read()
    via_sdk = (
        await graph.drives.by_drive_id(user.drive_id)
        .items.by_drive_item_id(target.id or "")
        .content.get()
    )
    assert via_sdk == stored.read()

    # One edit deep in the tree: the round returns it and every folder above it.
    deep = max(files, key=lambda i: len(state.path_of(state.items[i.id])))
    sim.edit_item(sim.tenant().id, deep.id or "")
    chain = []
    parent_id = state.items[deep.id].parent_id
    while parent_id:
        chain.append(parent_id)
        parent_id = state.items[parent_id].parent_id
    delta = graph.drives.by_drive_id(user.drive_id).items.by_drive_item_id("root").delta
    changes, _ = await walk(delta.with_url(link))
    assert [c.id for c in changes] == [*reversed(chain), deep.id]
    assert changes[0].root is not None
    exclude: RequestConfiguration[Any] = RequestConfiguration()
    exclude.headers.add("Prefer", "deltaExcludeParent")
    only, _ = await walk(delta.with_url(link), exclude)
    assert [c.id for c in only] == [deep.id]


async def test_sites_libraries_lists_and_item_delta(
    sim: Simulator, graph: GraphServiceClient
) -> None:
    tenant = sim.tenant()
    sites = await graph.sites.get()
    assert sites is not None and sites.value
    by_id = {s.id: s for s in sites.value}
    team = next(s for s in tenant.sites.values() if s.id in by_id)
    site = await graph.sites.by_site_id(team.id).get()
    assert site is not None and site.web_url == team.web_url
    drives = await graph.sites.by_site_id(team.id).drives.get()
    assert drives is not None and {d.id for d in drives.value or []} == set(team.drive_ids)

    lists = await graph.sites.by_site_id(team.id).lists.get()
    assert lists is not None and lists.value
    generic = [
        lst for lst in lists.value if lst.list_ is not None and lst.list_.template == "genericList"
    ]
    assert generic, "the world has a custom list"
    chosen = generic[0]
    items = graph.sites.by_site_id(team.id).lists.by_list_id(chosen.id or "").items
    listed = await items.get(
        RequestConfiguration(
            query_parameters=ItemsRequestBuilder.ItemsRequestBuilderGetQueryParameters(
                expand=["fields"]
            )
        )
    )
    assert listed is not None and listed.value
    for item in listed.value:
        assert isinstance(item, ListItem)
        assert item.fields is not None and "Title" in item.fields.additional_data

    found, link = await walk(items.delta)
    assert {i.id for i in found} == {i.id for i in listed.value}
    added = sim.add_list_item(tenant.id, chosen.id or "", {"Title": "Conformance"})
    changes, _ = await walk(items.delta.with_url(link))
    assert [c.id for c in changes] == [added]
