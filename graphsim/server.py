"""The HTTP front: authentication, routing, throttling, ``$batch``, downloads and uploads."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any
from urllib.parse import unquote

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from graphsim import (
    control_http,
    entra,
    properties,
    routes_beta,
    routes_calendar,
    routes_directory,
    routes_drive,
    routes_mail,
    routes_sites,
    routes_teams,
    shapes,
    subscriptions,
    teams_control,
)
from graphsim.calendar import zone_named
from graphsim.core import Engine, engine_of
from graphsim.http import GraphError, Req, Resp, Router, error_body, parse_query
from graphsim.http import Route as GraphRoute
from graphsim.mail import parse_graph_datetime
from graphsim.state import Tenant

GRAPH_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
OUTLOOK_BATCH_CONCURRENCY = 4
# Outlook refuses a request whose body passes 4 MB (a message created with its attachments
# counts them all): 400 "The maximum request length supported is 4MB."
OUTLOOK_REQUEST_MAX = 4 * 1024 * 1024


# -- path normalisation ------------------------------------------------------------------------

_ALIASES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"^(/users/[^/]+)/mailFolders/[^/]+/childFolders/([^/]+)(/.*)?$"),
        r"\1/mailFolders/\2\3",
    ),
    (
        re.compile(r"^(/users/[^/]+)/mailFolders/[^/]+/messages/(?!delta(?:/|$|\())([^/]+)(/.*)?$"),
        r"\1/messages/\2\3",
    ),
    (
        re.compile(r"^(/users/[^/]+)/contactFolders/[^/]+/childFolders/([^/]+)(/.*)?$"),
        r"\1/contactFolders/\2\3",
    ),
    (
        re.compile(
            r"^(/users/[^/]+)/contactFolders/[^/]+/contacts/(?!delta(?:/|$|\())([^/]+)(/.*)?$"
        ),
        r"\1/contacts/\2\3",
    ),
    (re.compile(r"^(/users/[^/]+)/calendar(/.*)?$"), r"\1/calendars/calendar\2"),
    (
        re.compile(r"^(/users/[^/]+)/calendars/[^/]+/events/(?!delta(?:/|$|\())([^/]+)(/.*)?$"),
        r"\1/events/\2\3",
    ),
]
_DELTA_FN = re.compile(r"/delta\(token='([^']*)'\)$")
_CALL = re.compile(r"^(?:microsoft\.graph\.)?([A-Za-z_]\w*)\(\)$")
_ITEMS_ROOT = re.compile(r"^(/drives/[^/]+)/items/root(?=[/:]|$)")


def _strip_calls(path: str) -> tuple[str, bool]:
    """``delta()``, ``microsoft.graph.delta()``, ``getAllMessages()``... -> the bare name.

    Graph treats a parameterless function call and its bare name alike (OData allows both);
    the SDKs' request builders send the call form. Names inside a ``:/path:`` address are
    file names and stay as they are. Only a colon that opens or closes such an address (before
    a ``/`` or at the end) counts: Teams ids (``19:...@thread.tacv2``) carry colons too.
    """
    parts = re.split(r":(?=/|$)", path)
    called = False
    for index in range(0, len(parts), 2):
        segments = parts[index].split("/")
        for pos, segment in enumerate(segments):
            found = _CALL.match(segment)
            if found:
                segments[pos] = found.group(1)
                called = True
        parts[index] = "/".join(segments)
    return ":".join(parts), called


_SITE_PATH = re.compile(r"^/sites/([^/:,]+):(/[^:]*?)(?::(/.*)?)?$")
_DRIVE_PATH = re.compile(r"^/drives/([^/]+)/(root|items/[^/:]+):(/?[^:]*)(?::(/.*)?)?$")


def normalise(engine: Engine, req: Req) -> None:
    path = req.path.rstrip("/") or "/"
    if path == "/me" or path.startswith("/me/"):
        raise GraphError(
            400, "BadRequest", "/me request is only valid with delegated authentication flow."
        )
    found = _DELTA_FN.search(path)
    if found:
        req.query.setdefault("token", found.group(1))
        path = path[: found.start()] + "/delta"
    path, called = _strip_calls(path)
    if called:
        req.params["_call"] = "1"
    tenant = req.tenant
    assert tenant is not None
    changed = True
    while changed:
        changed = False
        for pattern, repl in _ALIASES:
            new = pattern.sub(repl, path)
            if new != path:
                path, changed = new.rstrip("/"), True
    m = re.match(r"^/users/([^/]+)/drive(/.*)?$", path)
    if m and m.group(2):
        user = tenant.user(unquote(m.group(1)))
        if user is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{m.group(1)}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )
        if not user.drive_id or user.drive_id not in tenant.drives:
            raise GraphError(404, "ResourceNotFound", "User's mysite not found.")
        path = f"/drives/{user.drive_id}{m.group(2)}"
        req.params["_owner"] = user.id
    m = _SITE_PATH.match(path)
    if m:
        wanted = f"https://{m.group(1)}{m.group(2).rstrip('/')}".lower()
        site = next((s for s in tenant.sites.values() if s.web_url.lower() == wanted), None)
        if site is None:
            raise GraphError(404, "itemNotFound", "Requested site could not be found")
        path = f"/sites/{site.id}{m.group(3) or ''}"
    m = re.match(r"^/sites/([^/]+)/drive(/.*)?$", path)
    if m and m.group(2):
        site = tenant.sites.get(unquote(m.group(1)))
        if site is None or not site.drive_ids:
            raise GraphError(404, "itemNotFound", "Requested site could not be found")
        path = f"/drives/{site.drive_ids[0]}{m.group(2)}"
    m = re.match(r"^/sites/([^/]+)/lists/([^/]+)/drive(/.*)?$", path)
    if m and m.group(3):
        site = tenant.sites.get(unquote(m.group(1)))
        key = unquote(m.group(2))
        lists = [tenant.lists[i] for i in (site.list_ids if site else []) if i in tenant.lists]
        library = next(
            (
                lst
                for lst in lists
                if key in (lst.id, lst.name) or key.lower() == lst.display_name.lower()
            ),
            None,
        )
        if library is None or not library.drive_id:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        path = f"/drives/{library.drive_id}{m.group(3)}"
    # ``items/root`` is Graph's alias of the root item, like ``root``.
    path = _ITEMS_ROOT.sub(r"\1/root", path)
    m = _DRIVE_PATH.match(path)
    if m:
        path = _resolve_drive_path(req, tenant, m)
    m = re.match(r"^/drives/([^/]+)/root(/.*)?$", path)
    if m:
        drive = tenant.drives.get(m.group(1))
        if drive is None:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        path = f"/drives/{drive.id}/items/{drive.root_id}{m.group(2) or ''}"
    req.path = path


def _resolve_drive_path(req: Req, tenant: Tenant, m: re.Match[str]) -> str:
    drive = tenant.drives.get(m.group(1))
    if drive is None:
        raise GraphError(404, "itemNotFound", "The resource could not be found.")
    anchor = m.group(2)
    start_id = drive.root_id if anchor == "root" else anchor.split("/", 1)[1]
    start = drive.items.get(start_id)
    if start is None or start.deleted:
        raise GraphError(404, "itemNotFound", "The resource could not be found.")
    names = [n for n in m.group(3).split("/") if n]
    rest = m.group(4) or ""
    current = start
    for index, name in enumerate(names):
        child = drive.child_named(current.id, name)
        if child is None or child.deleted:
            if rest in ("/content", "/createUploadSession") and names:
                # Uploads by path create the missing folders, as OneDrive does.
                missing = "/".join(names[index:-1])
                if missing:
                    req.params["_mkdirs"] = missing
                return f"/drives/{drive.id}/items/{current.id}/children/{names[-1]}{rest}"
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        current = child
    return f"/drives/{drive.id}/items/{current.id}{rest}"


# -- dispatch ---------------------------------------------------------------------------------


def _sharepoint_cost(req: Req, template: str) -> int:
    if "permissions" in template:
        return 5
    if req.method != "GET":
        return 2
    if template.endswith("/children"):
        return 2
    if template.endswith("/delta"):
        return 1 if req.query.get("token") else 2
    return 1


def _mailbox_for(engine: Engine, req: Req, service: str, params: dict[str, str]) -> str | None:
    tenant = req.tenant
    assert tenant is not None
    if "user" in params:
        user = tenant.user(unquote(params["user"]))
        return user.upn if user else None
    owner = req.params.get("_owner")
    if owner is None and "drive" in params:
        drive = tenant.drives.get(params["drive"])
        if drive is not None and drive.owner_kind == "user":
            owner = drive.owner_id
    if owner:
        user = tenant.users.get(owner)
        return user.upn if user else None
    return None


# Where deferred bodies are made (``Resp.deferred``): one thread, so that rendering MIME,
# which costs milliseconds of CPU a message, no longer holds the event loop that every other
# mailbox's requests, timers and answers wait on (Exchange renders one mailbox's message
# without delaying another's). One thread rather than several: the loop then competes for
# the interpreter with one renderer, and gets it back within the switch interval.
_RENDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="graphsim-render")


async def dispatch(engine: Engine, req: Req) -> tuple[Resp, str]:
    """Run one Graph request (from HTTP or from ``$batch``) through routing and throttling."""
    template = f"{req.method} unmatched"
    mailbox: str | None = None
    slot = None
    in_flight: str | None = None
    status = 500
    try:
        with engine.world.lock:
            normalise(engine, req)
            matched = _match(engine, req)
        if matched is None:
            segment = unknown_segment(engine.router, req.path, req.version)
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
        route, params = matched
        template = f"{route.method} {route.template}"
        if req.version == "beta" and not route.template.startswith("/beta/"):
            template = f"{route.method} /beta{route.template}"
        req.params.update({k: unquote(v) for k, v in params.items()})
        tenant = req.tenant
        assert tenant is not None
        mailbox = _mailbox_for(engine, req, route.service, req.params)
        if route.template == "/$batch":
            resp = await run_batch(engine, req)
            status = resp.status
            return resp, template
        if route.service == "exchange" and req.prefer().get("idtype", "").lower() != "immutableid":
            engine.throttler.record_mutable_ids(template)
        if route.service == "exchange" and mailbox:
            # Outlook's limit is per mailbox: how many requests a client keeps in flight.
            in_flight = engine.in_flight.begin(f"{tenant.id}|{mailbox}")
        slot = engine.throttler.admit(
            service=route.service,
            app=req.app_id,
            tenant=tenant.id,
            mailbox=mailbox,
            licences=max(tenant.licensed_seats, 1),
            cost=_sharepoint_cost(req, route.template),
        )
        delay = engine.throttler.latency_s()
        if delay:
            await asyncio.sleep(delay)
        # Before its body is read. (An inner request of a $batch is not measured: its body
        # was re-encoded from the envelope's JSON.)
        if route.service == "exchange" and not req.inner and len(req.body) > OUTLOOK_REQUEST_MAX:
            raise GraphError(400, "BadRequest", "The maximum request length supported is 4MB.")
        # A written JSON body is read once for the checks that run before the handler.
        body = req.json() if req.method in ("POST", "PATCH") and _is_json(req) else None
        if route.service == "exchange":
            properties.check(req, route.template, body)
        written = _SHAPES.get(route.service)
        if written and body is not None:
            shapes.check(body, written)
        with engine.world.lock:
            resp = route.handler(engine, req)
        if resp.deferred is not None:
            resp.body = await asyncio.get_running_loop().run_in_executor(_RENDER, resp.deferred)
            resp.deferred = None
        if route.service == "exchange":
            in_time_zone(req, resp)
        if route.service == "sharepoint":
            resp.headers.update(
                engine.throttler.rate_limit_headers(
                    app=req.app_id, tenant=tenant.id, licences=max(tenant.licensed_seats, 1)
                )
            )
        status = resp.status
        return resp, template
    except GraphError as err:
        status = err.status
        body = error_body(err, req.request_id, req.headers.get("client-request-id", ""))
        return Resp(err.status, body, dict(err.headers)), template
    finally:
        engine.in_flight.end(in_flight)
        engine.throttler.release(slot)
        engine.throttler.record(
            template, mailbox, req.tenant.id if req.tenant else None, status, inner=req.inner
        )


# What a write to each service's items is read against before its handler runs.
_SHAPES = {"exchange": shapes.OUTLOOK, "sharepoint": shapes.DRIVE}


def _is_json(req: Req) -> bool:
    """A JSON body (not a message's MIME, a file's bytes or an empty POST)."""
    kind = req.headers.get("content-type", "").split(";")[0].strip().lower()
    return bool(req.body) and kind in ("application/json", "")


def _match(engine: Engine, req: Req) -> tuple[GraphRoute, dict[str, str]] | None:
    """v1.0 routes; on beta, its own routes first (``/beta/...`` templates), then the v1.0
    ones, whose answers beta mirrors for everything graphsim serves."""
    if req.version == "beta":
        try:
            own = engine.router.match(req.method, "/beta" + req.path)
        except GraphError:
            own = None  # another method of a beta route: the v1.0 routes may still serve it
        if own is not None:
            return own
    elif req.path.startswith("/beta/"):
        return None  # beta's own templates are not v1.0 paths
    return engine.router.match(req.method, req.path)


def unknown_segment(router: Router, path: str, version: str = "v1.0") -> str:
    """The first segment no route of the surface knows, as Graph names it in "Resource not
    found for the segment '...'" (not the last one: ``/users/x/nope/y`` names ``nope``)."""
    segments = [unquote(s) for s in path.strip("/").split("/")] or [""]
    templates = [r.template for r in router.routes if not r.template.startswith("/beta/")]
    if version == "beta":
        templates += [r.template[5:] for r in router.routes if r.template.startswith("/beta/")]
    known = 0
    for template in templates:
        parts = template.strip("/").split("/")
        depth = 0
        for have, want in zip(segments, parts, strict=False):
            if want.startswith("{") or want == have:
                depth += 1
            else:
                break
        known = max(known, depth)
    return segments[min(known, len(segments) - 1)]


def in_time_zone(req: Req, resp: Resp) -> None:
    """``Prefer: outlook.timezone="..."``: every dateTimeTimeZone in the answer (event start
    and end, instances, reminders...) in that zone, formatted as Outlook formats it, and the
    preference echoed in ``Preference-Applied``. An unknown zone leaves the times in UTC."""
    wanted = req.prefer().get("outlook.timezone")
    if not wanted or not resp.is_json or resp.status >= 300:
        return
    zone = zone_named(wanted)
    if zone is None:
        return

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"dateTime", "timeZone"} and value["timeZone"] == "UTC":
                moment = parse_graph_datetime(str(value["dateTime"]))
                local = moment.astimezone(zone)
                return {
                    "dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.0000000"),
                    "timeZone": wanted,
                }
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    resp.body = convert(resp.body)
    applied = resp.headers.get("Preference-Applied")
    echo = f'outlook.timezone="{wanted}"'
    resp.headers["Preference-Applied"] = f"{applied}, {echo}" if applied else echo


def authenticate(engine: Engine, req: Req) -> None:
    header = req.headers.get("authorization", "")
    if not header.lower().startswith("bearer ") or not header[7:].strip():
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
    try:
        claims = entra.verify_token(engine, header[7:].strip())
    except jwt.ExpiredSignatureError as exc:
        raise GraphError(
            401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."
        ) from exc
    except jwt.PyJWTError as exc:
        raise GraphError(
            401, "InvalidAuthenticationToken", "Access token validation failure."
        ) from exc
    tenant = engine.world.tenants.get(str(claims["tid"]))
    if tenant is None or str(claims["appid"]) not in tenant.consented_apps:
        raise GraphError(
            403,
            "Authorization_IdentityNotFound",
            "The identity of the calling application could not be established.",
        )
    req.tenant = tenant
    req.app_id = str(claims["appid"])


# -- $batch -------------------------------------------------------------------------------------


async def run_batch(engine: Engine, req: Req) -> Resp:
    body = req.json()
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise GraphError(
            400, "BadRequest", "Invalid batch payload: 'requests' must be a non-empty array."
        )
    if len(requests) > 20:
        raise GraphError(400, "BadRequest", "The number of batch requests cannot exceed 20.")
    seen: set[str] = set()
    for inner in requests:
        if not isinstance(inner, dict) or not all(k in inner for k in ("id", "method", "url")):
            raise GraphError(400, "BadRequest", "Each batch request needs id, method and url.")
        if str(inner["id"]) in seen:
            raise GraphError(400, "BadRequest", f"Batch request id '{inner['id']}' is not unique.")
        seen.add(str(inner["id"]))
    ids = {str(r["id"]) for r in requests}
    for inner in requests:
        for dep in inner.get("dependsOn") or []:
            if str(dep) not in ids:
                raise GraphError(
                    400, "BadRequest", f"Request '{inner['id']}' depends on an unknown id '{dep}'."
                )
        if inner.get("body") is not None and not any(
            k.lower() == "content-type" for k in (inner.get("headers") or {})
        ):
            raise GraphError(
                400,
                "BadRequest",
                f"Content-Type header is required for request '{inner['id']}' with a body.",
            )
    _check_sequencing(requests)
    results: dict[str, dict[str, Any]] = {}
    done: dict[str, asyncio.Event] = {str(r["id"]): asyncio.Event() for r in requests}
    limiter = asyncio.Semaphore(OUTLOOK_BATCH_CONCURRENCY)

    async def run_one(inner: dict[str, Any]) -> None:
        rid = str(inner["id"])
        try:
            deps = [str(d) for d in inner.get("dependsOn") or []]
            for dep in deps:
                await done[dep].wait()
            if any(results[d]["status"] >= 400 for d in deps):
                results[rid] = {
                    "id": rid,
                    "status": 424,
                    "headers": {"Content-Type": "application/json"},
                    "body": error_body(
                        GraphError(424, "FailedDependency", "A dependent request failed."),
                        req.request_id,
                        "",
                    ),
                }
                return
            async with limiter:
                results[rid] = await _batch_call(engine, req, inner)
        finally:
            done[rid].set()

    await asyncio.gather(*(run_one(r) for r in requests))
    # "Responses to the batched requests might appear in a different order" (JSON batching):
    # each batch's order is shuffled (seeded by its request id, so a run repeats), so that a
    # client pairing answers with requests by position fails here, not against Microsoft.
    responses = [results[str(r["id"])] for r in requests]
    random.Random(req.request_id).shuffle(responses)
    return Resp(200, {"responses": responses}, {"Content-Type": "application/json"})


def _check_sequencing(requests: list[dict[str, Any]]) -> None:
    """Graph runs a batch either fully in parallel (no ``dependsOn``) or fully in sequence:
    one chain through every request, each depending on the one before it in the chain. Two
    chains, a request outside the chain, a request depending on two, a cycle (a request
    depending on itself included): 400, before anything runs."""
    depends = {str(r["id"]): [str(d) for d in r.get("dependsOn") or []] for r in requests}
    if not any(depends.values()):
        return
    refused = GraphError(
        400, "BadRequest", "Batch should be either fully sequential or fully parallel."
    )
    starts = [rid for rid, deps in depends.items() if not deps]
    if len(starts) != 1 or any(len(deps) > 1 for deps in depends.values()):
        raise refused
    after = {deps[0]: rid for rid, deps in depends.items() if deps}
    if len(after) != len(depends) - 1:  # two requests depend on the same one
        raise refused
    seen, at = {starts[0]}, starts[0]
    while at in after:
        at = after[at]
        seen.add(at)
    if len(seen) != len(depends):  # the rest form a cycle of their own
        raise refused


async def _batch_call(engine: Engine, outer: Req, inner: dict[str, Any]) -> dict[str, Any]:
    # Inner URLs are relative to the envelope's surface. An absolute one is read as a path
    # like any other, as Graph reads it: its first segment ("https:") names nothing, 400.
    url = str(inner["url"])
    version = outer.version
    if not url.startswith("/"):
        url = "/" + url
    path, _, query = url.partition("?")
    headers = {str(k).lower(): str(v) for k, v in (inner.get("headers") or {}).items()}
    raw_body = inner.get("body")
    if raw_body is None:
        data = b""
    elif isinstance(raw_body, str) and not headers.get("content-type", "").startswith(
        "application/json"
    ):
        data = raw_body.encode()
    else:
        data = json.dumps(raw_body).encode()
    sub = Req(
        method=str(inner["method"]).upper(),
        path=unquote(path),
        query=parse_query(query),
        headers=headers,
        body=data,
        base_url=outer.base_url,
        tenant=outer.tenant,
        app_id=outer.app_id,
        version=version,
        inner=True,
    )
    resp, _ = await dispatch(engine, sub)
    out_headers = dict(resp.headers)
    if resp.is_json:
        out_headers.setdefault("Content-Type", "application/json")
        body: Any = resp.body
    elif isinstance(resp.body, bytes):
        import base64

        body = base64.b64encode(resp.body).decode()
        out_headers.setdefault("Content-Type", "application/octet-stream")
    else:
        body = None
    result: dict[str, Any] = {"id": str(inner["id"]), "status": resp.status, "headers": out_headers}
    if body is not None:
        result["body"] = body
    return result


# -- Starlette app -----------------------------------------------------------------------------


def to_response(resp: Resp, request_id: str) -> Response:
    headers = {"request-id": request_id, "client-request-id": request_id, **resp.headers}
    if resp.stream is not None:
        return StreamingResponse(resp.stream(), status_code=resp.status, headers=headers)
    if resp.is_json:
        headers.setdefault(
            "Content-Type",
            "application/json;odata.metadata=minimal;"
            "odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
        )
    return Response(resp.encoded(), status_code=resp.status, headers=headers)


async def graph(request: Request) -> Response:
    """``/v1.0/...`` and ``/beta/...``: authenticate, then route as ``$batch`` does too."""
    engine = engine_of(request)
    body = await request.body()
    version, _, path = request.scope["path"].lstrip("/").partition("/")
    headers = {k.lower(): v for k, v in request.headers.items()}
    req = Req(
        method=request.method,
        path="/" + path,
        query=parse_query(request.url.query),
        headers=headers,
        body=body,
        base_url=public_base(engine, request),
        version=version,
    )
    if headers.get("client-request-id"):
        req.request_id = headers["client-request-id"]
    try:
        authenticate(engine, req)
    except GraphError as err:
        engine.throttler.record(f"{req.method} unauthenticated", None, None, err.status)
        return to_response(
            Resp(err.status, error_body(err, req.request_id, ""), err.headers), req.request_id
        )
    resp, _ = await dispatch(engine, req)
    return to_response(resp, req.request_id)


def _bare_error(err: GraphError) -> JSONResponse:
    """An error of the pre-authenticated URLs (uploads, downloads): no request ids there."""
    return JSONResponse(error_body(err, "", ""), err.status, headers=err.headers)


async def upload(request: Request) -> Response:
    """An upload session's URL: fragments (PUT), status (GET), cancel (DELETE), commit (POST)."""
    from graphsim.uploads import accept_fragment

    engine = engine_of(request)
    if request.headers.get("authorization"):
        # The URL is pre-authenticated; a bearer token sent to it is refused (Graph: "may
        # result in an HTTP 401"), which also catches a client leaking its token there.
        return _bare_error(
            GraphError(
                401,
                "unauthenticated",
                "Do not send an Authorization header to an upload URL: it is pre-authenticated.",
            )
        )
    session_id = request.path_params["session"]
    session = engine.upload_sessions.get(session_id)
    if session is None or time.time() > session.expires:
        return _bare_error(
            GraphError(404, "itemNotFound", "The upload session was not found or has expired.")
        )
    if request.method == "GET":
        return JSONResponse(session.status_body())
    if request.method == "DELETE":
        engine.upload_sessions.pop(session_id, None)
        session.sink.discard()
        return Response(status_code=204)
    data = await request.body()
    try:
        with engine.world.lock:
            if request.method == "POST":
                if data:
                    raise GraphError(
                        400, "invalidRequest", "The commit request must have an empty body."
                    )
                return to_response(session.complete(), "")
            final = accept_fragment(session, request.headers.get("content-range", ""), data)
    except GraphError as err:
        return _bare_error(err)
    if final is None:
        status = 202 if session.kind == "drive" else 200
        return JSONResponse(session.status_body(), status)
    return to_response(final, "")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` as [start, end); None: unsatisfiable."""
    if not header:
        return 0, size
    m = re.match(r"^bytes=(\d*)-(\d*)$", header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if m.group(1):
        start = int(m.group(1))
        end = min(size, int(m.group(2)) + 1) if m.group(2) else size
    else:
        start, end = max(0, size - int(m.group(2))), size
    if start >= size or start >= end:
        return None
    return start, end


async def download(request: Request) -> Response:
    """A signed, short-lived download URL (``@microsoft.graph.downloadUrl``), with ranges."""
    engine = engine_of(request)
    decoded = engine.unsign(request.path_params["token"])
    if decoded is None or decoded.get("k") != "dl" or time.time() > float(decoded["e"]):
        return _bare_error(GraphError(401, "unauthenticated", "The download URL has expired."))
    with engine.world.lock:
        content = _download_content(engine, decoded)
    if content is None:
        return _bare_error(GraphError(404, "itemNotFound", "Item not found."))
    size = content.size
    wanted = _byte_range(request.headers.get("range"), size)
    if wanted is None:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    start, end = wanted
    headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    status = 200
    if request.headers.get("range"):
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)

    async def stream() -> AsyncIterator[bytes]:
        for block in content.iter_range(start, end):
            yield block
            await asyncio.sleep(0)

    return StreamingResponse(stream(), status_code=status, headers=headers)


async def unknown(request: Request) -> Response:
    """Graph answers a path it does not serve in JSON, never plain text: an unknown
    version is 400 "Invalid version", anything else (Entra included) a 404 in the
    shape of the surface it looks like."""
    first = request.url.path.strip("/").split("/")[0]
    request_id = str(uuid.uuid4())
    if _looks_like_entra(request.url.path):
        return JSONResponse(entra_not_found(request.url.path), 404)
    if first in ("v1.0", "beta"):
        err = GraphError(405, "Request_BadRequest", "The HTTP method is not allowed.")
    elif first and not first.startswith("_"):
        err = GraphError(400, "BadRequest", f"Invalid version: {first}")
    else:
        err = GraphError(404, "NotFound", f"Resource not found for the segment '{first}'.")
    return to_response(Resp(err.status, error_body(err, request_id, "")), request_id)


# -- what the simulator serves -------------------------------------------------------------------


def _batch_marker(engine: Engine, req: Req) -> Resp:
    """``dispatch`` runs ``$batch`` itself (it is async and re-enters routing); the route
    exists so that matching, 405s and the counters know the path."""
    raise AssertionError("dispatch serves $batch")


batch_router = Router()
batch_router.add("POST", "/$batch", "directory")(_batch_marker)

# The Graph surface, one router per area, tried in this order (the first route that
# matches wins). A new area adds its module's ``router`` here.
GRAPH_ROUTERS: list[Router] = [
    routes_beta.router,
    routes_directory.router,
    routes_mail.router,
    routes_drive.router,
    routes_calendar.router,
    routes_sites.router,
    routes_teams.router,
    batch_router,
]


@cache
def graph_router() -> Router:
    """Every Graph route, built once per process and shared by every simulator in it."""
    return Router.joined(GRAPH_ROUTERS)


# Everything else on the wire, as Starlette routes: the Graph front, the pre-authenticated
# upload and download URLs. (Entra's routes and the ``/_sim/`` controls come from their
# modules; see ``build_app`` for the order.)
WIRE_ROUTES: list[BaseRoute] = [
    Route("/_upload/{session}", upload, methods=["PUT", "POST", "GET", "DELETE"]),
    Route("/_download/{token}", download, methods=["GET", "HEAD"]),
    Route("/v1.0/{path:path}", graph, methods=GRAPH_METHODS),
    Route("/beta/{path:path}", graph, methods=GRAPH_METHODS),
]


def build_app(engine: Engine, **state: Any) -> CountingApp:
    """The ASGI app: controls first (so ``/_sim/...`` never reaches Graph or Entra), then
    the wire, Entra, and last a catch-all that keeps every unknown path JSON. Handlers reach
    the ``engine`` (and whatever else ``state`` names) through ``request.app.state``."""
    routes: list[BaseRoute] = [
        *entra.CONTROL_ROUTES,
        *teams_control.ROUTES,  # /_sim/ Teams paths only, so before the generic controls
        *subscriptions.ROUTES,  # change notifications (async handlers) and their /_sim/ controls
        *control_http.ROUTES,
        *WIRE_ROUTES,
        *entra.ROUTES,
        Route("/{path:path}", unknown, methods=ALL_METHODS),
    ]
    app = Starlette(routes=routes)
    app.state.engine = engine
    for name, value in state.items():
        setattr(app.state, name, value)
    return CountingApp(app, engine)


def _looks_like_entra(path: str) -> bool:
    return any(part in path for part in ("/oauth2/", "/discovery/", "/.well-known/", "consent"))


def entra_not_found(path: str) -> dict[str, Any]:
    """Entra's error shape for a path it does not serve (the Entra module's own routes,
    registered first, answer the endpoints it has; this only keeps the rest JSON)."""
    trace = str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return {
        "error": "invalid_request",
        "error_description": f"The endpoint '{path}' is not served for this method.\r\n"
        f"Trace ID: {trace}\r\nCorrelation ID: {trace}\r\nTimestamp: {stamp}",
        "error_codes": [],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": trace,
    }


def public_base(engine: Engine, request: Request) -> str:
    """The origin the client addressed (``https://graph.microsoft.com`` when it reaches the
    simulator under Graph's public name), so the links of an answer lead back the same way
    and an SDK that only sends its token to Graph's hosts keeps sending it."""
    host = request.headers.get("host")
    return f"https://{host}" if host else engine.base_url


def wire_kind(method: str, path: str) -> tuple[str, str] | None:
    """What a wire request is, for the counters, and its endpoint key; None for Graph
    requests (``dispatch`` counts those by route template) and the control API."""
    if path.startswith("/_sim/") or path == "/_sim":
        return None
    first, _, rest = path.lstrip("/").partition("/")
    if first in ("v1.0", "beta"):
        # The Graph front counts what it serves; a method it does not take ends in the
        # catch-all, counted here.
        return None if method in GRAPH_METHODS else ("graph", f"{method} unmatched")
    if first == "_download":
        return "download", f"{method} /_download/{{token}}"
    if first == "_upload":
        return "upload", f"{method} /_upload/{{session}}"
    if rest.startswith("oauth2/") and rest.endswith("token"):
        return "token", f"{method} /{{tenant}}/{rest}"
    if rest and (_looks_like_entra(path) or rest.startswith("v2.0/")):
        return "login", f"{method} /{{tenant}}/{rest}"
    return "other", f"{method} unmatched"


class CountingApp:
    """Counts each wire request once, by kind (graph, batch, token, login, download,
    upload); Graph requests are counted by ``dispatch`` under their route template."""

    def __init__(self, app: Starlette, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = wire_kind(scope["method"], scope["path"])
        if kind is None:
            await self.app(scope, receive, send)
            return
        status = 500

        async def watch(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.engine.throttler.record_wire(kind[0], kind[1], status)


def _download_content(engine: Engine, decoded: dict[str, Any]) -> Any:
    tenant = engine.world.tenants.get(str(decoded["t"]))
    if tenant is None:
        return None
    drive = tenant.drives.get(str(decoded["d"]))
    if drive is None:
        return None
    item = drive.items.get(str(decoded["i"]))
    if item is None or item.deleted:
        return None
    version = decoded.get("v")
    if version:
        for v in item.versions:
            if v.id == version:
                return v.content
        return None
    return item.content
