"""Typed auth dependencies. A route declares what it needs in its signature:

    async def handler(principal: ReadPrincipal, ...)

and never checks permissions in its body. A route is public only by having none of these.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from safekeep.api.deps import SessionDep, get_settings
from safekeep.api.rates import RequestRates
from safekeep.errors import (
    Forbidden,
    MetricsUnauthorized,
    NotFound,
    PaymentRequired,
    TooManyRequests,
    Unauthorized,
)
from safekeep.settings import Environment
from safekeep.tenants.api_key import service as api_key_service
from safekeep.tenants.models import MspStatus
from safekeep.tenants.scope import Principal, Scope

_WWW_AUTH = {"WWW-Authenticate": 'Bearer realm="safekeep"'}


class KeyRequired(HTTPBearer):
    """The API key a route needs, checked in one dependency: the bearer key resolved to its
    principal, the request rates it may use, then what the route asks of it. One dependency
    rather than a chain (header, key, scope): FastAPI solves each dependency of a route anew
    on every request, 20-30 us apiece. As an ``HTTPBearer`` it is documented as the
    ``ApiKey`` security scheme of every route that declares it.

    ``scope``: the key must hold it (admin holds all); None: any key, the route (or its
    service) judging the scope by what it acts on. ``unlimited`` refuses keys limited to
    some tenants (MSP-wide actions such as key management); ``writes`` refuses MSPs suspended
    for non-payment (reading their data stays possible)."""

    def __init__(
        self, scope: Scope | None, *, unlimited: bool = False, writes: bool = False
    ) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="ApiKey",
            description="An MSP API key: `Authorization: Bearer sk_...`",
        )
        self.scope, self.unlimited, self.writes = scope, unlimited, writes

    async def __call__(  # type: ignore[override]  # FastAPI solves the session for it
        self, request: Request, session: SessionDep
    ) -> Principal:
        credentials = await super().__call__(request)
        if credentials is None:
            raise Unauthorized(
                "Send an API key as `Authorization: Bearer <key>`", headers=_WWW_AUTH
            )
        grant = await api_key_service.authenticate(session, credentials.credentials)
        if grant is None:
            raise Unauthorized("The API key is unknown, revoked or expired", headers=_WWW_AUTH)
        principal = grant.principal
        assert principal.api_key_id is not None
        rates: RequestRates = request.app.state.request_rates
        refused = rates.admit(principal.api_key_id, principal.msp_id)
        if refused is not None:
            raise TooManyRequests(refused.detail, headers={"Retry-After": str(refused.seconds)})
        if self.scope is not None and not principal.has(self.scope):
            raise Forbidden(f"This needs an API key with the '{self.scope}' scope")
        if self.unlimited and principal.tenant_ids is not None:
            raise Forbidden("This needs an API key that is not limited to some tenants")
        if self.writes and grant.msp_status == MspStatus.suspended:
            raise PaymentRequired("The MSP account is suspended; backups and changes are paused")
        return principal


ReadPrincipal = Annotated[Principal, Depends(KeyRequired(Scope.read))]
AdminPrincipal = Annotated[Principal, Depends(KeyRequired(Scope.admin, writes=True))]
MspAdminPrincipal = Annotated[Principal, Depends(KeyRequired(Scope.admin, unlimited=True))]
# An MSP-wide change that a suspended MSP may not make (adding a client tenant).
MspAdminWriterPrincipal = Annotated[
    Principal, Depends(KeyRequired(Scope.admin, unlimited=True, writes=True))
]
BackupPrincipal = Annotated[Principal, Depends(KeyRequired(Scope.backup, writes=True))]
RestorePrincipal = Annotated[Principal, Depends(KeyRequired(Scope.restore, writes=True))]
ExportPrincipal = Annotated[Principal, Depends(KeyRequired(Scope.export))]
# Any key of an MSP that may write; the service checks the scope what it acts on needs.
AnyWriterPrincipal = Annotated[Principal, Depends(KeyRequired(None, writes=True))]


class MetricsTokenRequired(HTTPBearer):
    """The operator's token (``SAFEKEEP_METRICS_TOKEN``) that ``/metrics`` needs: Prometheus
    presents it; an MSP's API key is not it. Without one configured, ``/metrics`` is open in
    development (``safekeep serve --demo``) and answers 404 in production, where the API's
    port faces the internet."""

    def __init__(self) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="MetricsToken",
            description="The operator's metrics token (`SAFEKEEP_METRICS_TOKEN`): "
            "`Authorization: Bearer <token>`",
        )

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        settings = get_settings(request)
        if settings.metrics_token is None:
            if settings.env is Environment.production:
                raise NotFound("Metrics are off: set SAFEKEEP_METRICS_TOKEN to serve them")
            return
        credentials = await super().__call__(request)
        expected = settings.metrics_token.get_secret_value().encode()
        if credentials is None or not hmac.compare_digest(
            credentials.credentials.encode(), expected
        ):
            raise MetricsUnauthorized(
                "Send the metrics token as `Authorization: Bearer <token>`",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )


MetricsAccess = Depends(MetricsTokenRequired())
