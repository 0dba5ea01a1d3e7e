"""Which Graph resources continuous protection subscribes to for a site: Graph has no
subscription on a whole site, so each document library is watched through its drive root and
each list on its own (registry.py declares this function as the sharepoint resolver)."""

from __future__ import annotations

from safekeep.backup.drive.collect import q
from safekeep.backup.services.sharepoint.collect import all_pages
from safekeep.backup.services.sharepoint.lists import SKIPPED_TEMPLATES, template_of
from safekeep.graph.client import GraphClient
from safekeep.tenants.models import Account


async def subscription_resources(graph: GraphClient, account: Account) -> list[str]:
    """``drives/{id}/root`` for every library, ``sites/{id}/lists/{id}`` for every list the
    backup collects (libraries are lists too, but are already watched through their drive)."""
    site = account.graph_id
    drives = await all_pages(graph, f"/sites/{q(site)}/drives", {"$select": "id"}, site)
    lists = await all_pages(graph, f"/sites/{q(site)}/lists", {"$select": "id,list"}, site)
    resources = [f"drives/{d['id']}/root" for d in drives]
    resources += [
        f"sites/{site}/lists/{lst['id']}"
        for lst in lists
        if template_of(lst) not in SKIPPED_TEMPLATES
    ]
    return sorted(set(resources))
