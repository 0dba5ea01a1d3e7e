"""Search across everything backed up, within one tenant or across an MSP's tenants."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.api.auth import ReadPrincipal
from safekeep.api.deps import RuntimeDep, SessionDep
from safekeep.api.policy.schemas import Service
from safekeep.api.problems import responses
from safekeep.api.schemas import Schema, Timestamp, plain_response
from safekeep.errors import (
    BadRequest,
    InvalidCursor,
    NotFound,
    ServiceUnavailable,
    UnprocessableEntity,
)
from safekeep.runtime import Runtime
from safekeep.search.errors import InvalidCursor as SearchInvalidCursor
from safekeep.search.errors import InvalidQuery, SearchUnavailable
from safekeep.search.query import MAX_FOLDER_KEY_CHARS, MAX_INT64, SearchHit, SearchQuery
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.scope import Principal
from safekeep.tenants.tenant import repository as tenant_repository

router = APIRouter(tags=["Search"])


class Hit(SearchHit):
    external_id: str | None = Field(
        description="The item's id in Microsoft 365 (the Graph id); null if the item is gone"
    )
    links: dict[str, str]


class SearchResults(Schema):
    hits: list[Hit]
    next_cursor: str | None
    total: int | None


class SearchParams(BaseModel):
    """The query parameters both search routes take: a query-parameter model, so FastAPI
    validates the seventeen of them in one pass (as separate parameters they cost a fifth of
    a search's CPU on the event loop)."""

    q: Annotated[
        str, Query(max_length=1000, description='Words, "phrases", prefix*, -exclusions')
    ] = ""
    account_id: uuid.UUID | None = None
    service: list[Service] | None = None
    folder: Annotated[
        str | None, Query(max_length=MAX_FOLDER_KEY_CHARS, description="Folder path prefix")
    ] = None
    sender: Annotated[str | None, Query(max_length=500)] = None
    recipient: Annotated[str | None, Query(max_length=500)] = None
    date_from: Timestamp | None = None
    date_to: Timestamp | None = None
    size_min: Annotated[int | None, Query(ge=0, le=MAX_INT64, description="Bytes")] = None
    size_max: Annotated[int | None, Query(ge=0, le=MAX_INT64, description="Bytes")] = None
    has_attachments: bool | None = None
    file_type: Annotated[list[str] | None, Query(description="Extensions, e.g. pdf")] = None
    at: Annotated[Timestamp | None, Query(description="Search the state at this time")] = None
    all_versions: Annotated[bool, Query(description="Include older versions")] = False
    sort: Literal["relevance", "date_desc", "date_asc"] = "relevance"
    cursor: Annotated[str | None, Query(max_length=2000)] = None
    limit: Annotated[int, Query(ge=1, le=100)] = 25

    def query(self, tenant_ids: frozenset[uuid.UUID]) -> SearchQuery:
        try:
            return SearchQuery(
                tenant_ids=frozenset(str(t) for t in tenant_ids),
                text=self.q,
                account_ids=frozenset({str(self.account_id)}) if self.account_id else None,
                services=frozenset(self.service) if self.service else None,
                folder=self.folder,
                sender=self.sender,
                recipient=self.recipient,
                date_from=self.date_from,
                date_to=self.date_to,
                size_min=self.size_min,
                size_max=self.size_max,
                has_attachments=self.has_attachments,
                file_types=frozenset(self.file_type) if self.file_type else None,
                at=self.at,
                all_versions=self.all_versions,
                sort=self.sort,
                cursor=self.cursor,
                limit=self.limit,
            )
        except ValidationError as exc:
            raise UnprocessableEntity(
                "The search is not valid",
                errors=[
                    {"loc": ["query", *map(str, e["loc"])], "msg": e["msg"]} for e in exc.errors()
                ],
            ) from exc


async def _search(
    runtime: Runtime,
    session: AsyncSession,
    principal: Principal,
    tenant_ids: frozenset[uuid.UUID],
    params: SearchParams,
) -> Response:
    """The page of hits as ``SearchResults``: written from dicts of the backend's hits (which
    it validated), their Graph ids and links, not from a model per hit."""
    if not tenant_ids:
        return plain_response(SearchResults, {"hits": [], "next_cursor": None, "total": 0})
    query = params.query(tenant_ids)
    # Hand the database connection back while the search backend answers: a search that
    # waits on OpenSearch (a pause of its JVM, a merge) must not hold one of the pool's
    # connections that every other request needs.
    await session.commit()
    try:
        backend = await runtime.search_backend()
        page = await backend.search(query)
    except SearchInvalidCursor as exc:
        raise InvalidCursor(str(exc)) from exc
    except InvalidQuery as exc:
        raise BadRequest(str(exc)) from exc
    except SearchUnavailable as exc:
        raise ServiceUnavailable("Search is unavailable right now; try again shortly") from exc
    item_ids = {uuid.UUID(h.item_id) for h in page.hits}
    found = await catalog.external_ids(session, principal.scope, item_ids)
    graph_ids = {str(item_id): external_id for item_id, external_id in found.items()}
    hits = []
    for hit in page.hits:
        base = f"/v1/tenants/{hit.tenant_id}/accounts/{hit.account_id}/items/{hit.item_id}"
        fields = dict(hit.__dict__)  # a validated model's fields, in the model's order
        fields["external_id"] = graph_ids.get(hit.item_id)
        fields["links"] = {
            "item": base,
            "versions": f"{base}/versions",
            "content": f"{base}/content?version={hit.version_id}",
        }
        hits.append(fields)
    body = {"hits": hits, "next_cursor": page.next_cursor, "total": page.total}
    return plain_response(SearchResults, body)


@router.get(
    "/v1/search", response_model=SearchResults, responses=responses(400, 401, 403, 422, 503)
)
async def search_all(
    principal: ReadPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    params: Annotated[SearchParams, Query()],
    tenant_id: list[uuid.UUID] | None = Query(None, description="Only these tenants"),
) -> Response:
    """Search every tenant the key may see (or some of them)."""
    allowed = (await tenant_repository.in_scope(session, principal.scope)).every
    if tenant_id:
        allowed = allowed & frozenset(tenant_id)
    return await _search(runtime, session, principal, allowed, params)


@router.get(
    "/v1/tenants/{tenant_id}/search",
    response_model=SearchResults,
    responses=responses(400, 401, 403, 404, 422, 503),
)
async def search_tenant(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    params: Annotated[SearchParams, Query()],
) -> Response:
    live = (await tenant_repository.in_scope(session, principal.scope)).live
    if tenant_id not in live and not await tenant_repository.exists(
        session, principal.scope, tenant_id
    ):
        raise NotFound("No such tenant")
    return await _search(runtime, session, principal, frozenset({tenant_id}), params)
