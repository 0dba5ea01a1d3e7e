"""A sixth service, small on purpose: each user's directory profile (``GET /users/{id}``), one
item per user. It is the worked example of docs/adding-a-service.md: ``SPEC`` is what a real
service adds to ``DECLARED`` in safekeep/registry.py, ``SERVICE`` what its folder
``safekeep/backup/services/<name>/`` provides. tests/backup/test_registry.py declares it for
one test at a time (``registry.registered(SPEC)``) and checks that discovery, the backup job,
browse, search, export and restore, and (in a fresh process) the API's enums and the policy
schema all pick it up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from safekeep import registry
from safekeep.backup.catalog import ItemRecord, SearchFields
from safekeep.backup.collect import CollectContext
from safekeep.backup.services.base import (
    Content,
    ContentReader,
    ExportContext,
    ExportEntry,
    RestoreContext,
    Selection,
    read_document,
    rendered_content,
)
from safekeep.graph.client import GraphClient
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion

NAME = "profile"
KIND = "profile"  # the catalog kind of its one item
FIELDS = "id,displayName,userPrincipalName,mail,jobTitle,department"

SPEC = registry.ServiceSpec(
    name=NAME,
    title="Directory profile (a test's worked example)",
    kind="user",
    found_key=NAME,
    probe=f"{__name__}:has_profile",
    throttle="tenant",
    graph_path="/users/{id}",
    search_fields=("people",),
    engine=__name__,
)

probed: list[str] = []  # user ids discovery asked about, so the test sees the probe ran


async def has_profile(graph: GraphClient, user_id: str) -> bool:
    """Every user has a profile; the probe records that discovery asked."""
    probed.append(user_id)
    return True


def _fields(profile: dict[str, Any]) -> SearchFields:
    people = [str(profile[key]) for key in ("mail", "userPrincipalName") if profile.get(key)]
    return SearchFields(title=str(profile.get("displayName") or profile["id"]), people=people)


class ProfileService:
    name = NAME
    folder_kinds: frozenset[str] = frozenset()

    async def collect(self, ctx: CollectContext) -> None:
        profile = await ctx.graph.get_json(
            f"/users/{ctx.account.graph_id}", params={"$select": FIELDS}
        )
        body = json.dumps(profile, sort_keys=True).encode()
        async with ctx.run.page() as page:
            await page.record(
                ItemRecord(
                    external_id=str(profile["id"]),
                    kind=KIND,
                    name=str(profile.get("displayName") or profile["id"]),
                    size=len(body),
                    change_key=hashlib.sha256(body).hexdigest(),
                    document=await ctx.repo.put_bytes(body),
                    search=_fields(profile),
                )
            )

    async def search_fields(
        self, version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
    ) -> SearchFields | None:
        return _fields(document) if document else None

    async def content(self, repo: TenantRepository, version: ItemVersion) -> Content:
        async def render() -> AsyncIterator[bytes]:
            yield json.dumps(await read_document(repo, version), sort_keys=True).encode()

        return rendered_content(
            version,
            media_type="application/json",
            filename=f"{version.name}.json",
            suffix="json",
            render=render,
        )

    async def restore(self, ctx: RestoreContext, selection: Selection) -> None:
        # A profile belongs to the directory, which Safekeep does not write: say so per item.
        async for version in selection.items():
            await ctx.report.skipped(version, reason="directory profiles are not restored")

    async def export(self, ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
        async for version in selection.items():
            content = await self.content(ctx.repo, version)
            yield ExportEntry(
                path=content.filename,
                open=partial(content.open, 0, None),
                version=version,
                modified_at=version.modified_at,
            )


SERVICE = ProfileService()
