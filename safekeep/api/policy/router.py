from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import Response

from safekeep.api.auth import AdminPrincipal, ReadPrincipal
from safekeep.api.conditional import (
    IfMatch,
    IfNoneMatch,
    conditional,
    conditional_responses,
    require_match,
)
from safekeep.api.deps import ClientIp, SessionDep, SettingsDep
from safekeep.api.policy.schemas import PolicyIn, PolicyOut
from safekeep.api.problems import responses
from safekeep.tenants.subscription.service import check_rpo_minutes
from safekeep.tenants.tenant import service

router = APIRouter(prefix="/v1/tenants/{tenant_id}/policy", tags=["Policy"])


@router.get(
    "",
    response_model=PolicyOut,
    responses={**conditional_responses(), **responses(401, 403, 404, 422)},
)
async def get_policy(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The tenant's policy, with an `ETag` (send it as `If-Match` with a PUT)."""
    policy = await service.get_policy(session, principal.scope, tenant_id)
    return conditional(PolicyOut.model_validate(policy), if_none_match)


@router.put(
    "",
    response_model=PolicyOut,
    responses={**conditional_responses(), **responses(401, 402, 403, 404, 412, 422)},
)
async def put_policy(
    tenant_id: uuid.UUID,
    body: PolicyIn,
    principal: AdminPrincipal,
    session: SessionDep,
    ip: ClientIp,
    settings: SettingsDep,
    if_match: IfMatch = None,
) -> Response:
    """Replace the policy. With `If-Match` (the `ETag` of a GET), only while it is unchanged
    since: 412 otherwise, and nothing changes. The answer carries the new `ETag`."""
    check_rpo_minutes(settings, body.rpo_minutes)

    async def unchanged() -> None:  # the policy as GET shows it, under the write's lock
        current = await service.get_policy(session, principal.scope, tenant_id)
        require_match(if_match, PolicyOut.model_validate(current))

    policy = await service.put_policy(
        session,
        principal,
        tenant_id,
        body.model_dump(),
        ip=ip,
        precondition=None if if_match is None else unchanged,
    )
    return conditional(PolicyOut.model_validate(policy), None)
