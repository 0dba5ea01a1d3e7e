"""What onboarding and each discovery run read: users, licences, sites, and which services
each user actually has (a user without a mailbox or OneDrive is not an error)."""

from __future__ import annotations

from typing import Any, Unpack

from safekeep.graph.client import GraphClient
from safekeep.graph.errors import (
    BadRequest,
    Forbidden,
    MailboxNotEnabled,
    NotFound,
    UserNotFound,
)
from safekeep.graph.options import ReadFields

USER_FIELDS = "id,userPrincipalName,displayName,mail,accountEnabled,assignedLicenses,userType"
SITE_FIELDS = "id,name,displayName,webUrl,createdDateTime,lastModifiedDateTime,isPersonalSite"


async def list_users(client: GraphClient) -> list[dict[str, Any]]:
    """Every user of the tenant with the fields discovery needs (they must be selected:
    ``accountEnabled``, ``assignedLicenses`` and ``userType`` are not in the default set)."""
    users: list[dict[str, Any]] = []
    async for page in client.paginate("/users", params={"$select": USER_FIELDS, "$top": 999}):
        users.extend(page)
    return users


async def list_subscribed_skus(client: GraphClient) -> list[dict[str, Any]]:
    """The tenant's licences (``skuId``, ``skuPartNumber``, units, service plans)."""
    skus: list[dict[str, Any]] = []
    async for page in client.paginate("/subscribedSkus"):
        skus.extend(page)
    return skus


async def list_sites(client: GraphClient) -> list[dict[str, Any]]:
    """SharePoint sites to protect, without OneDrive personal sites (those are backed up
    through their user). ``/sites/getAllSites`` is the app-only enumeration; tenants where
    it is refused fall back to ``/sites?search=*``."""
    sites: list[dict[str, Any]] = []
    try:
        async for page in client.paginate("/sites/getAllSites", params={"$top": 999}):
            sites.extend(page)
    except (BadRequest, NotFound):
        sites = []
        async for page in client.paginate("/sites", params={"search": "*"}):
            sites.extend(page)
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    for site in sites:
        if _is_personal(site) or site.get("id") in seen:
            continue
        seen.add(str(site.get("id")))
        kept.append(site)
    return kept


async def has_mailbox(client: GraphClient, user_id: str) -> bool:
    """Whether Exchange Online serves a mailbox for the user over REST.

    On this request ``ResourceNotFound`` and ``ErrorItemNotFound`` can only mean the mailbox
    (its inbox always exists), so they count as "no mailbox"; a user missing from the
    directory still raises ``UserNotFound``.
    """
    try:
        return await _found(
            client, f"/users/{user_id}/mailFolders/inbox", params={"$select": "id"}, mailbox=user_id
        )
    except MailboxNotEnabled:
        return False


async def has_drive(client: GraphClient, user_id: str) -> bool:
    """Whether the user has a provisioned OneDrive (404 until first use or without licence)."""
    return await _found(client, f"/users/{user_id}/drive", params={"$select": "id"})


async def _found(client: GraphClient, path: str, **fields: Unpack[ReadFields]) -> bool:
    """Whether ``path`` answers: a 404 means no, except that a user missing from the
    directory still raises ``UserNotFound``: the user is gone, not just the service."""
    try:
        await client.get_json(path, **fields)
    except UserNotFound:
        raise
    except NotFound:
        return False
    return True


async def has_teams(client: GraphClient, user_id: str) -> bool:
    """Whether the user has anything in Teams to back up: a team it belongs to (joinedTeams
    takes no query options, and a user is in few teams) or else a chat (one is enough).

    A user without Teams answers 404; a tenant whose consent predates Teams (the service is
    off until the MSP turns it on and extends consent) answers 403. Both count as "nothing to
    back up" rather than failing the discovery of every user; the next discovery after consent
    finds them.
    """
    try:
        teams = await client.get_json(f"/users/{user_id}/joinedTeams")
        if teams.get("value"):
            return True
        chats = await client.get_json(
            f"/users/{user_id}/chats", params={"$top": "1", "$select": "id"}
        )
    except UserNotFound:
        raise
    except (NotFound, Forbidden):
        return False
    return bool(chats.get("value"))


def _is_personal(site: dict[str, Any]) -> bool:
    if site.get("isPersonalSite") is True:
        return True
    return "/personal/" in str(site.get("webUrl") or "").lower()
