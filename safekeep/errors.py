"""One error hierarchy for the whole application.

Services raise these; the API renders them as RFC 9457 problem+json and workers record their
``type`` on jobs. ``type`` values are stable: clients may switch on them.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://safekeep.dev/problems/"


class AppError(Exception):
    status_code: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


class BadRequest(AppError):
    status_code = 400
    slug = "bad-request"
    title = "Bad request"


class InvalidCursor(BadRequest):
    slug = "invalid-cursor"
    title = "The pagination cursor is not valid"


class Unauthorized(AppError):
    status_code = 401
    slug = "unauthorized"
    title = "Missing or invalid API key"


class Forbidden(AppError):
    status_code = 403
    slug = "forbidden"
    title = "The API key lacks the scope this needs"


class NotFound(AppError):
    status_code = 404
    slug = "not-found"
    title = "Not found"


class MethodNotAllowed(AppError):
    status_code = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class Conflict(AppError):
    status_code = 409
    slug = "conflict"
    title = "Conflict with the current state"


class Gone(AppError):
    status_code = 410
    slug = "gone"
    title = "No longer available"


class RangeNotSatisfiable(AppError):
    status_code = 416
    slug = "range-not-satisfiable"
    title = "Requested range not satisfiable"


class UnprocessableEntity(AppError):
    status_code = 422
    slug = "validation-error"
    title = "The request is not valid"


class IdempotencyKeyReused(UnprocessableEntity):
    slug = "idempotency-key-reused"
    title = "This Idempotency-Key was used for a different request"


class PaymentRequired(AppError):
    status_code = 402
    slug = "account-suspended"
    title = "The MSP account is suspended for non-payment"


class ServiceUnavailable(AppError):
    status_code = 503
    slug = "unavailable"
    title = "A dependency is unavailable"
