"""One error hierarchy for the whole application.

Services raise these; the API renders them as RFC 9457 problem+json and workers record their
``type`` on jobs. ``type`` values are stable: clients may switch on them.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

PROBLEM_BASE = "https://safekeep.dev/problems/"

T = TypeVar("T")


class AppError(Exception):
    status_code: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init_subclass__(
        cls, *, status: int | None = None, slug: str | None = None, title: str | None = None
    ) -> None:
        """A problem is its status, slug and title: subclasses state them in the class line, and
        one left out is inherited (``InvalidCursor`` stays a 400 like ``BadRequest``)."""
        super().__init_subclass__()
        for name, value in (("status_code", status), ("slug", slug), ("title", title)):
            if value is not None:
                setattr(cls, name, value)

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


class BadRequest(AppError, status=400, slug="bad-request", title="Bad request"):
    pass


class InvalidCursor(BadRequest, slug="invalid-cursor", title="The pagination cursor is not valid"):
    pass


class Unauthorized(AppError, status=401, slug="unauthorized", title="Missing or invalid API key"):
    pass


class MetricsUnauthorized(Unauthorized, title="Missing or invalid metrics token"):
    pass


class Forbidden(
    AppError, status=403, slug="forbidden", title="The API key lacks the scope this needs"
):
    pass


class NotFound(AppError, status=404, slug="not-found", title="Not found"):
    pass


class MethodNotAllowed(AppError, status=405, slug="method-not-allowed", title="Method not allowed"):
    pass


class Conflict(AppError, status=409, slug="conflict", title="Conflict with the current state"):
    pass


class Gone(AppError, status=410, slug="gone", title="No longer available"):
    pass


class PreconditionFailed(
    AppError, status=412, slug="precondition-failed", title="The resource has changed"
):
    pass


class RangeNotSatisfiable(
    AppError, status=416, slug="range-not-satisfiable", title="Requested range not satisfiable"
):
    pass


class UnprocessableEntity(
    AppError, status=422, slug="validation-error", title="The request is not valid"
):
    pass


class IdempotencyKeyReused(
    UnprocessableEntity,
    slug="idempotency-key-reused",
    title="This Idempotency-Key was used for a different request",
):
    pass


class PaymentRequired(
    AppError,
    status=402,
    slug="account-suspended",
    title="The MSP account is suspended for non-payment",
):
    pass


class TooManyRequests(AppError, status=429, slug="rate-limited", title="Too many requests"):
    pass


class ServiceUnavailable(
    AppError, status=503, slug="unavailable", title="A dependency is unavailable"
):
    pass


def or_404(value: T | None, detail: str) -> T:
    """A scoped lookup that found nothing answers 404 (never 403), so another MSP's resource
    and a missing one read the same; services pass their lookups through this one rule."""
    if value is None:
        raise NotFound(detail)
    return value
