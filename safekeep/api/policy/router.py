from __future__ import annotations

import uuid

from fastapi import APIRouter

from safekeep.api.auth import AdminPrincipal, ReadPrincipal
from safekeep.api.deps import ClientIp, SessionDep, SettingsDep
from safekeep.api.policy.schemas import PolicyIn, PolicyOut
from safekeep.api.problems import responses
from safekeep.tenants.subscription.service import check_rpo_minutes
from safekeep.tenants.tenant import service

router = APIRouter(prefix="/v1/tenants/{tenant_id}/policy", tags=["Policy"])


@router.get("", response_model=PolicyOut, responses=responses(401, 403, 404, 422))
async def get_policy(
    tenant_id: uuid.UUID, principal: ReadPrincipal, session: SessionDep
) -> PolicyOut:
    return PolicyOut.model_validate(await service.get_policy(session, principal.scope, tenant_id))


@router.put("", response_model=PolicyOut, responses=responses(401, 402, 403, 404, 422))
async def put_policy(
    tenant_id: uuid.UUID,
    body: PolicyIn,
    principal: AdminPrincipal,
    session: SessionDep,
    ip: ClientIp,
    settings: SettingsDep,
) -> PolicyOut:
    check_rpo_minutes(settings, body.rpo_minutes)
    policy = await service.put_policy(session, principal, tenant_id, body.model_dump(), ip=ip)
    return PolicyOut.model_validate(policy)
