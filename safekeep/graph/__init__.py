"""Microsoft Graph client: msal auth, throttling and Retry-After, paging, delta, ``$batch``.

Imports nothing else of Safekeep and takes plain arguments, so it can be tested alone.
"""

from safekeep.graph.auth import AppCredentials, TokenProvider
from safekeep.graph.client import (
    BatchRequest,
    BatchResponse,
    DeltaPage,
    GraphClient,
    GraphResponse,
    GraphStats,
    prefer,
)
from safekeep.graph.errors import (
    AuthError,
    AuthUnavailable,
    BadRequest,
    Conflict,
    ConsentRequired,
    Forbidden,
    GraphError,
    InvalidClientSecret,
    MailboxNotEnabled,
    NotFound,
    QuotaExceeded,
    ResourceLocked,
    ResyncRequired,
    TenantNotFound,
    Throttled,
    TransientError,
    Unauthorized,
    UserNotFound,
)
from safekeep.graph.throttle import InProcessLimiter, Limiter, RedisLimiter

__all__ = [
    "AppCredentials",
    "AuthError",
    "AuthUnavailable",
    "BadRequest",
    "BatchRequest",
    "BatchResponse",
    "Conflict",
    "ConsentRequired",
    "DeltaPage",
    "Forbidden",
    "GraphClient",
    "GraphError",
    "GraphResponse",
    "GraphStats",
    "InProcessLimiter",
    "InvalidClientSecret",
    "Limiter",
    "MailboxNotEnabled",
    "NotFound",
    "QuotaExceeded",
    "RedisLimiter",
    "ResourceLocked",
    "ResyncRequired",
    "TenantNotFound",
    "Throttled",
    "TokenProvider",
    "TransientError",
    "Unauthorized",
    "UserNotFound",
    "prefer",
]
