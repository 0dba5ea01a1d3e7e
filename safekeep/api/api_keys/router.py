from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, status

from safekeep.api.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from safekeep.api.auth import MspAdminPrincipal
from safekeep.api.deps import ClientIp, SessionDep
from safekeep.api.idempotency import idempotent
from safekeep.api.problems import responses
from safekeep.api.schemas import Page, Paging, extended, page_of
from safekeep.tenants.api_key import service

router = APIRouter(prefix="/v1/api-keys", tags=["API keys"])


@router.get("", response_model=Page[ApiKeyOut], responses=responses(401, 403, 400, 422))
async def list_api_keys(
    principal: MspAdminPrincipal,
    session: SessionDep,
    paging: Paging,
    include_revoked: bool = Query(False),
) -> Page[ApiKeyOut]:
    page = await paging.read(service.list_keys, session, principal, include_revoked=include_revoked)
    return page_of(page, ApiKeyOut.model_validate)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses=responses(401, 403, 409, 422),
)
@idempotent(201, shown_once=("key",))
async def create_api_key(
    body: ApiKeyCreate,
    principal: MspAdminPrincipal,
    session: SessionDep,
    ip: ClientIp,
) -> ApiKeyCreated:
    key, secret = await service.create(session, principal, **body.model_dump(), ip=ip)
    return extended(ApiKeyCreated, ApiKeyOut.model_validate(key), key=secret)


@router.get("/{key_id}", response_model=ApiKeyOut, responses=responses(401, 403, 404, 422))
async def get_api_key(
    key_id: uuid.UUID, principal: MspAdminPrincipal, session: SessionDep
) -> ApiKeyOut:
    """One key (revoked ones too: `revoked_at` says when), its scopes, tenants and last use;
    never its secret."""
    return ApiKeyOut.model_validate(await service.get(session, principal, key_id))


@router.delete(
    "/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(401, 403, 404, 422)
)
async def revoke_api_key(
    key_id: uuid.UUID, principal: MspAdminPrincipal, session: SessionDep, ip: ClientIp
) -> None:
    await service.revoke(session, principal, key_id, ip=ip)
