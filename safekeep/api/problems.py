"""problem+json (RFC 9457) for every error, including the ones FastAPI raises itself.

No input, however malformed, gets a stack trace: unexpected exceptions are logged with a
reference and answered with a bare 500 problem that carries the same reference.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from safekeep.errors import PROBLEM_BASE, AppError
from safekeep.transient import RETRY_AFTER_SECONDS, is_transient

log = structlog.get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str | None = None


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    type: str = Field(examples=[PROBLEM_BASE + "not-found"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ValidationIssue] | None = None


def problem_response(
    status: int,
    slug_or_type: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    type_ = slug_or_type if "://" in slug_or_type else PROBLEM_BASE + slug_or_type
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _jsonable_loc(loc: Any) -> list[str | int]:
    return [p if isinstance(p, int) else str(p) for p in (loc or [])]


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    headers = exc.extra.pop("headers", None)
    return problem_response(
        exc.status_code,
        exc.type,
        exc.title,
        exc.detail,
        instance=request.url.path,
        headers=headers,
        **exc.extra,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": _jsonable_loc(e.get("loc")), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
    return problem_response(
        422,
        "validation-error",
        "The request is not valid",
        f"Invalid input: {fields}" if fields else "Invalid input",
        instance=request.url.path,
        errors=errors,
    )


_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid API key"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Payload too large"),
    414: ("uri-too-long", "URI too long"),
    431: ("request-header-fields-too-large", "Request header fields too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def allowed_methods(request: Request) -> str:
    """Every method any route serves at this path (Starlette's own 405 names only the
    first route that matched the path, not all of them)."""
    table = getattr(request.app.state, "allow_table", None)
    if table is None:
        table = []
        for template, operations in request.app.openapi()["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$")
            table.append((pattern, {m.upper() for m in operations}))
        request.app.state.allow_table = table
    methods: set[str] = set()
    for pattern, verbs in table:
        if pattern.match(request.url.path):
            methods |= verbs
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return problem_response(
        exc.status_code,
        slug,
        title,
        detail,
        instance=request.url.path,
        headers=headers or None,
    )


def dependency_down(exc: BaseException) -> str | None:
    """Which of our dependencies an error says is down ("database", "queue", ...), or None
    when it is not an infrastructure blip. Names match /readyz's checks."""
    if not is_transient(exc):
        return None
    text = " ".join(f"{type(e).__module__}.{type(e).__name__}" for e in _causes(exc)).lower()
    for needle, name in (
        ("sqlalchemy", "database"),
        ("psycopg", "database"),
        ("sqlite", "database"),
        ("redis", "queue"),
        ("dramatiq", "queue"),
        ("pika", "queue"),
        ("storage", "blobstore"),
        ("opensearch", "search"),
    ):
        if needle in text:
            return name
    return "dependency"


def _causes(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    down = dependency_down(exc)
    if down is not None:
        # Our database or queue restarting is not the client's fault nor a bug: say so, and
        # when to come back. /readyz names the dependency too.
        log.warning(
            "dependency_unavailable",
            dependency=down,
            path=request.url.path,
            error=f"{type(exc).__name__}: {exc}"[:300],
        )
        return problem_response(
            503,
            "unavailable",
            "A dependency is unavailable",
            f"The {down} is unavailable for a moment; retry after {RETRY_AFTER_SECONDS} s",
            instance=request.url.path,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            dependency=down,
        )
    reference = uuid.uuid4().hex
    log.error(
        "unhandled_exception",
        reference=reference,
        path=request.url.path,
        method=request.method,
        exc_info=exc,
    )
    return problem_response(
        500,
        "internal-error",
        "Internal error",
        f"Something went wrong on our side (reference {reference})",
        instance=request.url.path,
        reference=reference,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of a route's error answers, all problem+json."""
    described = {
        400: "Bad request",
        401: "Missing or invalid API key",
        402: "The MSP account is suspended",
        403: "The API key lacks the needed scope",
        404: "Not found (or not yours)",
        409: "Conflict with the current state",
        410: "Gone",
        412: "`If-Match` names an ETag the resource no longer has: read it again",
        413: "The request body is larger than the route accepts",
        414: "The query string is too long",
        416: "Range not satisfiable",
        422: "The request is not valid",
        429: "Too many requests from this API key or its MSP: retry after `Retry-After` seconds",
        431: "The request headers are too large",
        503: "A dependency is unavailable",
    }
    # Any request can be malformed (an unparseable body or query): 400 is always possible;
    # and any can be too large for safekeep.api.limits: 413, 414 and 431. Any request with a
    # key can pass the key's rate (safekeep.api.rates): 429 goes with 401.
    limited = {429} if 401 in statuses else set()
    out: dict[int | str, dict[str, Any]] = {
        s: {
            "description": described.get(s, "Error"),
            "model": Problem,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in sorted({400, 413, 414, 431, *statuses, *limited})
    }
    if 429 in out:
        out[429]["headers"] = {
            "Retry-After": {
                "description": "Seconds until the next request can be admitted",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return out
