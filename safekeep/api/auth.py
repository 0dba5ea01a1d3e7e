"""Typed auth dependencies. A route declares what it needs in its signature:

    async def handler(principal: ReadPrincipal, ...)

and never checks permissions in its body. A route is public only by having none of these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from safekeep.api.deps import SessionDep
from safekeep.api.rates import RequestRates
from safekeep.errors import Forbidden, PaymentRequired, TooManyRequests, Unauthorized
from safekeep.tenants.api_key import service as api_key_service
from safekeep.tenants.models import MspStatus
from safekeep.tenants.scope import Principal, Scope

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An MSP API key: `Authorization: Bearer sk_...`",
)

_WWW_AUTH = {"WWW-Authenticate": 'Bearer realm="safekeep"'}


async def authenticate(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`", headers=_WWW_AUTH)
    grant = await api_key_service.authenticate(session, credentials.credentials)
    if grant is None:
        raise Unauthorized("The API key is unknown, revoked or expired", headers=_WWW_AUTH)
    principal = grant.principal
    assert principal.api_key_id is not None
    rates: RequestRates = request.app.state.request_rates
    refused = rates.admit(principal.api_key_id, principal.msp_id)
    if refused is not None:
        raise TooManyRequests(refused.detail, headers={"Retry-After": str(refused.seconds)})
    request.state.principal = principal
    request.state.msp_status = grant.msp_status
    return principal


def require(
    scope: Scope, *, unlimited: bool = False, writes: bool = False
) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits a key holding ``scope`` (admin holds all). ``unlimited``
    refuses keys limited to some tenants (MSP-wide actions such as key management);
    ``writes`` refuses MSPs suspended for non-payment (reading their data stays possible)."""

    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(authenticate)]
    ) -> Principal:
        if not principal.has(scope):
            raise Forbidden(f"This needs an API key with the '{scope}' scope")
        if unlimited and principal.tenant_ids is not None:
            raise Forbidden("This needs an API key that is not limited to some tenants")
        if writes and request.state.msp_status == MspStatus.suspended:
            raise PaymentRequired("The MSP account is suspended; backups and changes are paused")
        return principal

    return dependency


ReadPrincipal = Annotated[Principal, Depends(require(Scope.read))]
AdminPrincipal = Annotated[Principal, Depends(require(Scope.admin, writes=True))]
MspAdminPrincipal = Annotated[Principal, Depends(require(Scope.admin, unlimited=True))]
BackupPrincipal = Annotated[Principal, Depends(require(Scope.backup, writes=True))]
RestorePrincipal = Annotated[Principal, Depends(require(Scope.restore, writes=True))]
ExportPrincipal = Annotated[Principal, Depends(require(Scope.export))]
