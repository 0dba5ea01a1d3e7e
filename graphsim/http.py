"""Request/response plumbing shared by Graph handlers, ``$batch`` and the control API.

Handlers are plain functions from a ``Req`` to a ``Resp`` so that ``$batch`` can run the
same code for its inner requests as the HTTP front does for real ones.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from graphsim import ids
from graphsim.state import Tenant


class GraphError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        inner_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.inner_code = inner_code


def not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def outlook_missing(key: str) -> GraphError:
    """What Exchange answers for an id it does not hold: 404 when the id is well formed, 400
    ``ErrorInvalidIdMalformed`` when it cannot be an id at all (truncated, mis-encoded)."""
    if ids.well_formed_outlook_id(key):
        return not_found()
    return GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


@dataclass
class Req:
    method: str
    path: str  # below /v1.0, without query string, percent-decoded
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str
    tenant: Tenant | None = None
    app_id: str = ""
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    params: dict[str, str] = field(default_factory=dict)
    version: str = "v1.0"  # "v1.0" | "beta": the links an answer carries keep it
    inner: bool = False  # a request carried inside a $batch envelope

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise GraphError(
                400, "BadRequest", f"Unable to read JSON request payload: {exc}"
            ) from exc
        if not isinstance(value, dict):
            raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
        return value

    def prefer(self) -> dict[str, str]:
        """Parse ``Prefer`` into lower-case keys: ``odata.maxpagesize=5, IdType="ImmutableId"``."""
        found: dict[str, str] = {}
        for header in self.headers.get("prefer", "").split(","):
            key, _, value = header.strip().partition("=")
            if key:
                found[key.strip().lower()] = value.strip().strip('"')
        return found

    def select(self) -> list[str] | None:
        raw = self.query.get("$select") or self.query.get("select")
        if not raw:
            return None
        return [s.strip() for s in raw.split(",") if s.strip()]

    def expand(self) -> list[str]:
        return split_top(self.query.get("$expand") or self.query.get("expand") or "", ",")

    def expand_options(self) -> dict[str, dict[str, str]]:
        """``$expand`` as lower-case names to their nested options (``select`` -> "a,b")."""
        return parse_expand(self.query.get("$expand") or self.query.get("expand") or "")

    @property
    def graph_base(self) -> str:
        return f"{self.base_url}/{self.version}"


@dataclass
class Resp:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes -> raw; None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[[], AsyncIterator[bytes]] | None = None
    # A raw body too costly to make on the event loop (a message's MIME): ``dispatch`` makes
    # it on the render thread, outside the world lock, so the callable must hold its own
    # copy of what it reads.
    deferred: Callable[[], bytes] | None = None

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        try:
            return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:
            # A string holding a lone surrogate (Exchange keeps text as UTF-16, and a preview
            # or name cut inside a pair keeps half of it): Graph writes it as a \u escape.
            return json.dumps(self.body, separators=(",", ":")).encode()

    @property
    def is_json(self) -> bool:
        return isinstance(self.body, dict | list)


def error_body(err: GraphError, request_id: str, client_request_id: str) -> dict[str, Any]:
    inner: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": client_request_id or request_id,
    }
    if err.inner_code:
        inner = {"code": err.inner_code, **inner}
    return {"error": {"code": err.code, "message": err.message, "innerError": inner}}


Handler = Callable[[Any, Req], Resp]


@dataclass
class Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    service: str  # "exchange" | "sharepoint" | "directory"


class Router:
    """Regex routes over Graph paths; templates double as counter keys."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    @classmethod
    def joined(cls, routers: list[Router]) -> Router:
        """One router trying the routes of ``routers`` in their order."""
        out = cls()
        for router in routers:
            out.routes.extend(router.routes)
        return out

    def add(self, method: str, template: str, service: str) -> Callable[[Handler], Handler]:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template.replace("$", r"\$")) + "$"

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, template, re.compile(regex), handler, service))
            return handler

        return register

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        allowed = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found:
                if route.method == method:
                    return route, found.groupdict()
                allowed = True
        if allowed:
            raise GraphError(
                405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed."
            )
        return None


def split_top(raw: str, sep: str) -> list[str]:
    """Split at ``sep`` outside parentheses and quoted literals."""
    out: list[str] = []
    depth = 0
    quoted = False
    current = ""
    for ch in raw:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            if current.strip():
                out.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        out.append(current.strip())
    return out


def parse_expand(raw: str) -> dict[str, dict[str, str]]:
    """``attachments($select=id,name;$top=5),fields`` -> {"attachments": {"select": ...}}.

    Nested options are separated by ``;`` as OData says; their names lose the ``$``.
    """
    out: dict[str, dict[str, str]] = {}
    for entry in split_top(raw, ","):
        name, _, rest = entry.partition("(")
        options: dict[str, str] = {}
        if rest:
            for part in split_top(rest.rsplit(")", 1)[0], ";"):
                key, _, value = part.partition("=")
                options[key.strip().lstrip("$").lower()] = value.strip()
        out[name.strip().lower()] = options
    return out


def nested_select(options: dict[str, str] | None) -> list[str] | None:
    """The ``$select`` nested in an expansion, as a list (None: not given)."""
    if not options or not options.get("select"):
        return None
    return [s.strip() for s in options["select"].split(",") if s.strip()]


def parse_query(query_string: str) -> dict[str, str]:
    return {k: v for k, v in parse_qsl(query_string, keep_blank_values=True)}


def selected(
    obj: dict[str, Any], select: list[str] | None, always: tuple[str, ...] = ("id",)
) -> dict[str, Any]:
    """Apply ``$select``: keep annotations, the id, and the named properties."""
    if not select:
        return obj
    wanted = {s.lower() for s in select} | {a.lower() for a in always}
    return {k: v for k, v in obj.items() if k.startswith("@") or k.lower() in wanted}
