"""Microsoft Graph and Entra ID failures, sorted by what the caller can do about them.

Graph reports a failure as an HTTP status plus a code string in
``{"error": {"code", "message", "innerError": {"code"?, "request-id", ...}}}``; the same
condition can arrive under several codes depending on which backend answered (Exchange,
SharePoint, the directory). Callers should not have to know those spellings: they catch one
class per remedy, and each class carries a short stable ``reason`` an MSP can act on (it ends
up in job errors and webhooks, so it must not change once published).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar


class GraphError(Exception):
    """A request to Microsoft Graph (or Entra ID) that failed for good."""

    reason: ClassVar[str] = "graph_error"

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        retry_after: float | None = None,
        inner_code: str | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.inner_code = inner_code
        self.method = method
        self.url = url

    def __str__(self) -> str:
        where = f" ({self.method} {_loggable(self.url)})" if self.method and self.url else ""
        return f"{self.status} {self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, code={self.code!r}, "
            f"reason={self.reason!r}, request_id={self.request_id!r})"
        )


class BadRequest(GraphError):
    """400: the request itself is wrong; retrying the same request cannot help."""

    reason = "bad_request"


class NotFound(GraphError):
    """The item, folder, drive or user is gone (often deleted between listing and fetching)."""

    reason = "not_found"


class UserNotFound(NotFound):
    """The directory has no such user any more: the account was deleted in Entra ID."""

    reason = "user_not_found"


class MailboxNotEnabled(GraphError):
    """The user exists but has no Exchange Online mailbox reachable over REST.

    Not a ``NotFound``: the user is real, only the service is missing (no licence,
    an on-premises or soft-deleted mailbox), so discovery records it instead of failing.
    """

    reason = "mailbox_not_found"


class Unauthorized(GraphError):
    """401 even with a freshly issued token: the token is refused for this tenant."""

    reason = "token_rejected"


class Forbidden(GraphError):
    """403: the app lacks a permission (the MSP must re-consent with the current scopes)."""

    reason = "permission_missing"


class MailboxAccessDenied(Forbidden):
    """403 from Exchange for one mailbox: the client's application access policy (or RBAC for
    Applications) leaves it out of the app's scope ("Access to OData is disabled"). Other
    mailboxes still answer; the client's Exchange admin must put this one in scope."""

    reason = "mailbox_access_denied"


class Conflict(GraphError):
    """409 name clash when creating (``nameAlreadyExists``, ``ErrorFolderExists``)."""

    reason = "name_conflict"


class ResourceLocked(GraphError):
    """The site or item is locked by an administrator (423 / ``resourceLocked``)."""

    reason = "resource_locked"


class QuotaExceeded(GraphError):
    """The target mailbox or drive is full; restore cannot proceed until space is freed."""

    reason = "quota_exceeded"


class Throttled(GraphError):
    """Still throttled when the request's deadline ran out; the job should retry later."""

    reason = "throttled"


class TransientError(GraphError):
    """5xx or a connection failure that outlasted every retry."""

    reason = "service_unavailable"


class ResyncRequired(GraphError):
    """The delta or sync token is no longer valid: enumerate again from scratch.

    ``location`` is the fresh link Graph offered (OneDrive sends one in ``Location``);
    None means: start again from the original delta path without a token.
    """

    reason = "resync_required"

    def __init__(self, *args: Any, location: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.location = location


# -- Entra ID (token endpoint) ----------------------------------------------------------------


class AuthError(GraphError):
    """Entra ID refused to issue a token for a reason not listed below."""

    reason = "auth_failed"

    def __init__(self, *args: Any, aadsts: tuple[int, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aadsts = aadsts


class ConsentRequired(AuthError):
    """The app is not (or no longer) consented in the client's tenant: ask for admin consent."""

    reason = "consent_revoked"


class InvalidClientSecret(AuthError):
    """Our own app secret is wrong or expired: an operator must rotate it, not the MSP."""

    reason = "client_secret_invalid"


class TenantNotFound(AuthError):
    """The tenant id is unknown to Entra ID (deleted tenant or a typo at onboarding)."""

    reason = "tenant_not_found"


class AuthUnavailable(AuthError):
    """Entra ID itself failed (5xx, network, ``temporarily_unavailable``) after retries."""

    reason = "auth_unavailable"


# Why these AADSTS codes map where they do (login.microsoftonline.com/error?code=N):
#   65001   consent_required: the admin never consented, or consent was withdrawn.
#   700016  unauthorized_client: "application ... was not found in the directory" - the
#           service principal is missing, i.e. never consented or deleted by the admin.
#   7000229 the client app has no service principal in the tenant (same remedy).
#   7000112 the app is disabled in the tenant: the admin must re-enable it, consent again.
#   500011  the resource principal (Graph) is not in the tenant: consent provisions it.
#   7000215 invalid client secret; 7000222 the secret expired; 7000218 none was sent:
#           our configuration, which no tenant admin can fix.
#   90002   tenant not found; 900023 the tenant identifier is not a valid GUID or domain.
#   90033 ("a transient error has occurred") and ``temporarily_unavailable``: try again later.
CONSENT_CODES = frozenset({65001, 700016, 7000229, 7000112, 500011})
SECRET_CODES = frozenset({7000215, 7000222, 7000218})
TENANT_CODES = frozenset({90002, 900023})
TRANSIENT_AUTH_CODES = frozenset({90033})


def auth_error_from_oauth(status: int, body: Mapping[str, Any]) -> AuthError:
    """Pick the remedy from an OAuth error answer (``error``, ``error_codes``, description)."""
    error = str(body.get("error") or "auth_failed")
    description = str(body.get("error_description") or error)
    raw_codes = body.get("error_codes") or []
    codes = tuple(int(c) for c in raw_codes if isinstance(c, int | str) and str(c).isdigit())
    if not codes and description.startswith("AADSTS"):
        head = description[6:].split(":", 1)[0]
        codes = (int(head),) if head.isdigit() else ()
    cls: type[AuthError] = AuthError
    found = set(codes)
    if found & TENANT_CODES or error == "invalid_tenant":
        cls = TenantNotFound
    elif found & CONSENT_CODES or error == "consent_required":
        cls = ConsentRequired
    elif found & SECRET_CODES:
        cls = InvalidClientSecret
    elif found & TRANSIENT_AUTH_CODES or error == "temporarily_unavailable" or status >= 500:
        cls = AuthUnavailable
    return cls(
        status,
        error,
        description,
        request_id=str(body.get("correlation_id") or "") or None,
        aadsts=codes,
    )


# -- Graph answers ----------------------------------------------------------------------------

_NOT_FOUND_CODES = frozenset(
    {
        "ErrorItemNotFound",
        "itemNotFound",
        "ResourceNotFound",
        "ErrorSyncFolderNotFound",
        "Request_ResourceNotFound",
    }
)
# Exchange answers these when the user is real but has no usable mailbox. ``ResourceNotFound``
# and ``ErrorItemNotFound`` are ambiguous (also "no such item"), so they only count as
# "no mailbox" where the caller asked for a mailbox-level resource (see directory.has_mailbox).
_MAILBOX_CODES = frozenset(
    {
        "MailboxNotEnabledForRESTAPI",
        "MailboxNotSupportedForRESTAPI",
        "ErrorMailboxNotEnabled",
        "ErrorNonExistentMailbox",
        "ErrorMailboxMoveInProgress",
    }
)
# The user is not in the directory: what directory routes answer, and what Exchange answers
# on Outlook routes for a user it does not know (a user deleted in Entra ID).
_USER_CODES = frozenset({"Request_ResourceNotFound", "ErrorInvalidUser"})
_RESYNC_CODES = frozenset(
    {
        "resyncRequired",
        "ResyncRequired",
        "SyncStateNotFound",
        "SyncStateInvalid",
        "ErrorInvalidSyncStateData",
        "Directory_ExpiredPageToken",
    }
)
_RESYNC_INNER = frozenset(
    {
        "resyncChangesApplyDifferences",
        "resyncChangesUploadDifferences",
        "resyncApplyDifferences",
        "resyncUploadDifferences",
    }
)
_CONFLICT_CODES = frozenset({"nameAlreadyExists", "ErrorFolderExists"})
_QUOTA_CODES = frozenset({"ErrorQuotaExceeded", "quotaLimitReached", "insufficientStorage"})
_LOCK_CODES = frozenset({"resourceLocked"})
_FORBIDDEN_CODES = frozenset(
    {
        "Authorization_RequestDenied",
        "ErrorAccessDenied",
        "accessDenied",
        "Forbidden",
        "Authorization_IdentityNotFound",
        "AccessDenied",
    }
)


def parse_error_body(content: bytes) -> tuple[str, str, str | None, str | None]:
    """Read ``code``, ``message``, inner code and request id from a Graph error body.

    Graph spells the inner object ``innerError`` or ``innererror`` depending on the backend,
    and some gateways answer HTML; anything unreadable becomes an empty code.
    """
    try:
        data = json.loads(content) if content else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        text = content[:300].decode("utf-8", "replace").strip() if content else ""
        return "", text, None, None
    err = data["error"]
    inner: dict[str, Any] = {}
    for key, value in err.items():
        if key.lower() == "innererror" and isinstance(value, dict):
            inner = value
    request_id = inner.get("request-id") or inner.get("requestId")
    inner_code = inner.get("code")
    return (
        str(err.get("code") or ""),
        str(err.get("message") or ""),
        str(inner_code) if inner_code else None,
        str(request_id) if request_id else None,
    )


_IDENTITY_GONE_CODES = frozenset({"Authorization_IdentityNotFound"})
# How Exchange words a refusal by an application access policy (Graph's "Limiting application
# permissions to specific Exchange Online mailboxes"; RBAC for Applications adds "[RAOP]...").
_ACCESS_POLICY = "Access to OData is disabled"


def classify(
    status: int,
    code: str,
    message: str,
    *,
    inner_code: str | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
    location: str | None = None,
    method: str | None = None,
    url: str | None = None,
) -> GraphError:
    """Turn one final (not to be retried) Graph answer into the matching error class."""
    kwargs: dict[str, Any] = {
        "inner_code": inner_code,
        "request_id": request_id,
        "retry_after": retry_after,
        "method": method,
        "url": url,
    }
    if status == 410 or code in _RESYNC_CODES or (inner_code or "") in _RESYNC_INNER:
        return ResyncRequired(
            status, code or "resyncRequired", message, location=location, **kwargs
        )
    if code in _IDENTITY_GONE_CODES:
        # The app's service principal is gone from the client's tenant: consent was
        # withdrawn (or never given). A token issued before still parses, then Graph says
        # this on every call, as 401 or 403.
        return ConsentRequired(status, code, message, **kwargs)
    if code in _MAILBOX_CODES:
        return MailboxNotEnabled(status, code, message, **kwargs)
    if code in _USER_CODES:
        return UserNotFound(status, code, message, **kwargs)
    if status == 404 or code in _NOT_FOUND_CODES:
        return NotFound(status, code, message, **kwargs)
    if status == 409 or code in _CONFLICT_CODES:
        return Conflict(status, code, message, **kwargs)
    if status == 507 or code in _QUOTA_CODES:
        return QuotaExceeded(status, code, message, **kwargs)
    if status == 423 or code in _LOCK_CODES or (inner_code or "") == "resourceLocked":
        return ResourceLocked(status, code, message, **kwargs)
    if status == 401:
        return Unauthorized(status, code, message, **kwargs)
    if code == "ErrorAccessDenied" and _ACCESS_POLICY in message:
        return MailboxAccessDenied(status, code, message, **kwargs)
    if status == 403 or code in _FORBIDDEN_CODES:
        return Forbidden(status, code, message, **kwargs)
    if status == 429:
        return Throttled(status, code, message, **kwargs)
    if status >= 500:
        return TransientError(status, code, message, **kwargs)
    if status == 400:
        return BadRequest(status, code, message, **kwargs)
    return GraphError(status, code, message, **kwargs)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds (Graph sends fractions
    such as ``2.128``) or an HTTP-date; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / inf
        return None
    return max(0.0, seconds)


def _loggable(url: str | None) -> str:
    """Drop the query: delta and upload URLs carry tokens that must not reach logs."""
    if not url:
        return ""
    return url.split("?", 1)[0]
