"""App-only tokens for one client tenant, from Entra ID through MSAL.

MSAL is synchronous (``requests``), so every call that may touch the network runs in a
worker thread; building the application object counts, because MSAL fetches the tenant's
OpenID configuration in its constructor. The token is cached here as well as inside MSAL so
that the hot path (every Graph request) costs no thread hop.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import msal
import requests

from safekeep.graph.errors import (
    AuthError,
    AuthUnavailable,
    TenantNotFound,
    auth_error_from_oauth,
)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@dataclass(frozen=True)
class AppCredentials:
    """The MSP-facing multi-tenant app registration (one for the whole deployment)."""

    client_id: str
    client_secret: str = field(repr=False)


class _Session(requests.Session):
    """The HTTP session MSAL uses, with our CA bundle pinned per request.

    requests lets ``REQUESTS_CA_BUNDLE`` from the environment override a session's
    ``verify`` (psf/requests#3829), which would silently drop the simulator's CA, or a
    customer's private CA; a per-request ``verify`` is the one setting it respects.
    """

    def __init__(self, verify: str | bool, timeout: float) -> None:
        super().__init__()
        self._pinned_verify = verify
        self._timeout = timeout
        adapter = requests.adapters.HTTPAdapter(max_retries=1)
        self.mount("https://", adapter)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["verify"] = self._pinned_verify
        kwargs.setdefault("timeout", self._timeout)
        return super().request(*args, **kwargs)


class TokenProvider:
    """Client-credential tokens for ``tenant``, refreshed before they expire.

    One instance per tenant, shared by every request to that tenant in the process, so that
    a burst of requests triggers one token request, not one each.
    """

    def __init__(
        self,
        *,
        login_url: str,
        tenant: str,
        credentials: AppCredentials,
        ca_bundle: str | None = None,
        scope: str = GRAPH_SCOPE,
        refresh_margin_seconds: float = 300.0,
        timeout: float = 30.0,
        max_attempts: int = 4,
    ) -> None:
        if not login_url.startswith("https://"):
            raise ValueError("login_url must be https:// (MSAL refuses anything else)")
        self.authority = f"{login_url.rstrip('/')}/{tenant}"
        self.tenant = tenant
        self._credentials = credentials
        self._verify: str | bool = ca_bundle or True
        self._scope = scope
        self._margin = refresh_margin_seconds
        self._timeout = timeout
        self._max_attempts = max(1, max_attempts)
        self._app: msal.ConfidentialClientApplication | None = None
        self._session: _Session | None = None
        self._token: str | None = None
        self._refresh_at = 0.0  # monotonic
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self.issued = 0  # tokens obtained from Entra ID (not from a cache)

    async def token(self) -> str:
        """A bearer token for Graph; raises an ``AuthError`` subclass when Entra refuses."""
        token = self._token
        if token is not None and time.monotonic() < self._refresh_at:
            return token
        async with self._loop_lock():
            if self._token is not None and time.monotonic() < self._refresh_at:
                return self._token
            return await self._refresh()

    def _loop_lock(self) -> asyncio.Lock:
        """The lock that makes concurrent callers share one token request.

        An asyncio lock belongs to one event loop; workers that run each task in a fresh
        loop (``asyncio.run`` per message) get a fresh lock rather than an error.
        """
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (Graph answered 401 with it) so the next call fetches a new one.

        MSAL would otherwise hand the same token back from its own cache until it nears
        expiry, and it refuses ``force_refresh`` for the client-credential flow.
        """
        if self._token == token:
            self._token = None
            self._refresh_at = 0.0
        app = self._app
        if app is None:
            return
        cache = app.token_cache
        for entry in list(cache.search(cache.CredentialType.ACCESS_TOKEN)):
            if entry.get("secret") == token:
                cache.remove_at(entry)

    async def _refresh(self) -> str:
        delay = 0.5
        for attempt in range(1, self._max_attempts + 1):
            try:
                token, lifetime = await asyncio.to_thread(self._acquire)
            except AuthUnavailable:
                if attempt == self._max_attempts:
                    raise
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 10.0)
                continue
            margin = min(self._margin, lifetime / 2)
            self._token = token
            self._refresh_at = time.monotonic() + lifetime - margin
            self.issued += 1
            return token
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close MSAL's keep-alive connection to Entra ID (servers wait for it on shutdown)."""
        session, self._session, self._app = self._session, None, None
        if session is not None:
            session.close()

    def _http_session(self) -> _Session:
        if self._session is None:
            self._session = _Session(self._verify, self._timeout)
        return self._session

    def _acquire(self) -> tuple[str, float]:
        """Runs in a thread: build the MSAL app if needed and ask for a token."""
        try:
            app = self._app or self._build_app()
            result: dict[str, Any] = app.acquire_token_for_client(scopes=[self._scope])
        except requests.RequestException as exc:
            self._app = None  # MSAL keeps 5xx answers in its http cache: start clean
            status = exc.response.status_code if exc.response is not None else 0
            raise AuthUnavailable(status, "network_error", f"Entra ID unreachable: {exc}") from exc
        if "access_token" in result:
            return str(result["access_token"]), float(result.get("expires_in") or 3599)
        error = auth_error_from_oauth(
            401 if result.get("error") == "invalid_client" else 400, result
        )
        # MSAL caches a 400 answer for 60 s; a fresh app lets a re-consent take effect at once.
        self._app = None
        raise error

    def _build_app(self) -> msal.ConfidentialClientApplication:
        try:
            app = msal.ConfidentialClientApplication(
                self._credentials.client_id,
                client_credential=self._credentials.client_secret,
                authority=self.authority,
                instance_discovery=False,
                azure_region=False,
                http_client=self._http_session(),
                token_cache=msal.TokenCache(),
            )
        except ValueError as exc:
            # MSAL wraps the discovery answer in a generic message; the original text (with
            # the AADSTS code) is kept on the exception it replaced.
            detail = str(exc.__context__ or exc)
            if "HTTP status: 4" in detail or "AADSTS90002" in detail or "invalid_tenant" in detail:
                raise TenantNotFound(
                    400,
                    "invalid_tenant",
                    f"Tenant {self.tenant!r} not found: {detail}",
                    aadsts=(90002,) if "90002" in detail else (),
                ) from exc
            raise AuthError(0, "invalid_authority", str(exc)) from exc
        self._app = app
        return app
