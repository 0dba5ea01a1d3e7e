"""The simulator's HTTP control API under ``/_sim/``: one small handler per action, found in
a table of (methods, path pattern) rows, each calling the ``Simulator`` method of the same
name. The simulator is reached through the request (``request.app.state.simulator``)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from graphsim import control
from graphsim.mail import parse_graph_datetime

if TYPE_CHECKING:
    from graphsim.simulator import Simulator

ANY_METHOD = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Call:
    """One control request: the simulator, the request, the pattern's groups, the body."""

    sim: Simulator
    request: Request
    raw: bytes
    groups: dict[str, str] = field(default_factory=dict)
    tenant: str = ""
    parsed: dict[str, Any] | None = None

    @property
    def body(self) -> dict[str, Any]:
        if self.parsed is None:
            self.parsed = json_object(self.raw)
        return self.parsed

    def query(self, name: str) -> str | None:
        return self.request.query_params.get(name)


Handler = Callable[[Call], Response]


def json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise control.ControlError(400, "body must be a JSON object")
    return value


def ok(value: Any = None, status: int = 200) -> Response:
    return JSONResponse(value if value is not None else {"ok": True}, status)


def when(value: Any) -> datetime | None:
    return parse_graph_datetime(str(value)) if value else None


def decode_content(changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(changes)
    if "contentBase64" in out:
        out["content"] = base64.b64decode(out.pop("contentBase64"))
    out.pop("listId", None)
    return out


def _done(action: Callable[[], Any]) -> Response:
    action()
    return ok()


# -- the whole simulator ------------------------------------------------------------------------


def add_tenant(call: Call) -> Response:
    b = call.body
    summary = call.sim.add_tenant(
        b.get("name"),
        users=int(b.get("users", 0)),
        messages=int(b.get("messages", 0)),
        files=int(b.get("files", 0)),
        consented=bool(b.get("consented", False)),
    )
    return ok(summary, 201)


SIM_ACTIONS: list[tuple[frozenset[str], str, Handler]] = [
    (frozenset({"GET"}), "tenants", lambda c: ok(c.sim.tenants())),
    (frozenset({"POST"}), "tenants", add_tenant),
    (frozenset({"GET"}), "counters", lambda c: ok(c.sim.counters())),
    (frozenset({"POST", "DELETE"}), "counters(/reset)?", lambda c: _done(c.sim.reset_counters)),
    (frozenset({"POST"}), "reset", lambda c: _done(c.sim.reset)),
    (frozenset({"GET"}), "throttling", lambda c: ok(c.sim.throttling())),
    (
        frozenset({"PUT", "POST", "PATCH"}),
        "throttling|latency|errors",
        lambda c: ok(c.sim.set_throttling(**c.body)),
    ),
    (frozenset({"POST"}), "save", lambda c: _done(c.sim.save)),
    (frozenset({"GET"}), "partial-delta-updates", lambda c: ok(c.sim.partial_delta_updates())),
    (
        frozenset({"PUT", "POST", "PATCH"}),
        "partial-delta-updates",
        lambda c: ok(c.sim.set_partial_delta_updates(bool(c.body.get("enabled", True)))),
    ),
]


# -- one tenant ---------------------------------------------------------------------------------


def add_sku(call: Call) -> Response:
    b = call.body
    sku = call.sim.add_sku(
        call.tenant,
        str(b["skuPartNumber"]),
        units=int(b.get("units", 25)),
        plans=tuple(b.get("servicePlans") or ("EXCHANGE_S_STANDARD",)),
    )
    return ok({"skuId": sku}, 201)


def add_user(call: Call) -> Response:
    b = call.body
    user = call.sim.add_user(
        call.tenant,
        str(b["displayName"]),
        licensed=bool(b.get("licensed", True)),
        sku_id=b.get("skuId"),
    )
    return ok(user, 201)


def add_list_item(call: Call) -> Response:
    fields = dict(call.body.get("fields") or call.body)
    return ok({"id": call.sim.add_list_item(call.tenant, call.groups["list"], fields)}, 201)


def edit_item(call: Call) -> Response:
    call.sim.edit_item(
        call.tenant,
        call.groups["item"],
        decode_content(call.body.get("changes", call.body)),
        list_id=call.body.get("listId") or call.query("listId"),
    )
    return ok()


def delete_item(call: Call) -> Response:
    call.sim.delete_item(
        call.tenant,
        call.groups["item"],
        hard=bool(call.body.get("hard", False)),
        list_id=call.body.get("listId") or call.query("listId"),
    )
    return ok()


def remove_licence(call: Call) -> Response:
    call.sim.remove_licence(
        call.tenant,
        call.groups["user"],
        call.groups.get("sku"),
        keep_access=call.query("keepAccess") == "true",
    )
    return ok()


def add_message(call: Call) -> Response:
    mid = call.sim.add_message(
        call.tenant,
        call.groups["user"],
        call.raw,
        call.request.query_params.get("folder", "inbox"),
        received=when(call.query("received")),
        is_read=call.query("isRead") == "true",
    )
    return ok({"id": mid}, 201)


def add_mail_folder(call: Call) -> Response:
    b = call.body
    folder = call.sim.add_mail_folder(
        call.tenant,
        call.groups["user"],
        str(b["displayName"]),
        str(b.get("parent", "msgfolderroot")),
    )
    return ok({"id": folder}, 201)


def add_file(call: Call) -> Response:
    b = call.body
    data = base64.b64decode(b["contentBase64"]) if "contentBase64" in b else None
    file_id = call.sim.add_file(
        call.tenant,
        str(b["path"]),
        user=call.groups.get("user"),
        drive_id=call.groups.get("drive"),
        data=data,
        size=b.get("size"),
    )
    return ok({"id": file_id}, 201)


def add_event(call: Call) -> Response:
    b = call.body
    event = call.sim.add_event(
        call.tenant,
        call.groups["user"],
        subject=str(b["subject"]),
        start=when(b["start"]) or datetime.now(),
        end=when(b["end"]) or datetime.now(),
        recurrence=b.get("recurrence"),
        attendees=b.get("attendees"),
        body=str(b.get("body", "")),
        location=str(b.get("location", "")),
    )
    return ok({"id": event}, 201)


def add_contact(call: Call) -> Response:
    b = call.body
    contact = call.sim.add_contact(
        call.tenant,
        call.groups["user"],
        given_name=str(b["givenName"]),
        surname=str(b["surname"]),
        emails=b.get("emails"),
        folder=str(b.get("folder", "contacts")),
    )
    return ok({"id": contact}, 201)


def ransomware(call: Call) -> Response:
    b = call.body
    items = call.sim.ransomware(
        call.tenant,
        call.groups["user"],
        int(b.get("count", 10)),
        str(b.get("extension", ".locked")),
    )
    return ok({"items": items})


_POST = frozenset({"POST"})
_ITEM = "items/(?P<item>[^/]*)"
_USER = "users/(?P<user>[^/]*)"

# Below ``/_sim/tenants/{tenant}/``; the first row whose methods and pattern fit answers.
TENANT_ACTIONS: list[tuple[frozenset[str], str, Handler]] = [
    (_POST, "skus", add_sku),
    (_POST, "users", add_user),
    (frozenset({"POST", "PUT"}), "consent", lambda c: _done(lambda: c.sim.grant_consent(c.tenant))),
    (
        frozenset({"DELETE", "POST"}),
        "consent(/revoke)?",
        lambda c: _done(lambda: c.sim.revoke_consent(c.tenant)),
    ),
    (
        _POST,
        "consent/deny",
        lambda c: _done(lambda: c.sim.deny_consent(c.tenant, bool(c.body.get("deny", True)))),
    ),
    (
        _POST,
        "expire-delta-tokens",
        lambda c: _done(lambda: c.sim.expire_delta_tokens(c.tenant, c.body.get("owner"))),
    ),
    (_POST, "sites", lambda c: ok({"id": c.sim.add_site(c.tenant, str(c.body["name"]))}, 201)),
    (_POST, "lists/(?P<list>[^/]*)/items", add_list_item),
    (ANY_METHOD, _ITEM + "/edit(/.*)?", edit_item),
    (frozenset({"PATCH"}), _ITEM, edit_item),
    (
        ANY_METHOD,
        _ITEM + "/move(/.*)?",
        lambda c: _done(
            lambda: c.sim.move_item(c.tenant, c.groups["item"], str(c.body["destination"]))
        ),
    ),
    (ANY_METHOD, _ITEM + "/delete(/.*)?", delete_item),
    (frozenset({"DELETE"}), _ITEM, delete_item),
    (
        _POST,
        _USER + "/licenses",
        lambda c: _done(
            lambda: c.sim.assign_licence(c.tenant, c.groups["user"], c.body.get("skuId"))
        ),
    ),
    (frozenset({"DELETE"}), _USER + "/licenses[^/]*(/(?P<sku>[^/]*))?(/.*)?", remove_licence),
    (
        frozenset({"PUT"}),
        _USER + "/app-access",
        lambda c: _done(
            lambda: c.sim.restrict_app_access(
                c.tenant, c.groups["user"], denied=not bool(c.body.get("allowed", True))
            )
        ),
    ),
    (
        frozenset({"PUT", "POST", "PATCH"}),
        "partial-delta-updates",
        lambda c: ok(c.sim.set_partial_delta_updates(bool(c.body.get("enabled", True)), c.tenant)),
    ),
    (_POST, _USER + "/messages", add_message),
    (_POST, _USER + "/mailFolders", add_mail_folder),
    (_POST, _USER + "/files", add_file),
    (_POST, _USER + "/events", add_event),
    (_POST, _USER + "/contacts", add_contact),
    (_POST, _USER + "/ransomware", ransomware),
    (_POST, "drives/(?P<drive>[^/]*)/files(/.*)?", add_file),
]


def _find(
    table: list[tuple[frozenset[str], str, Handler]], method: str, path: str
) -> tuple[Handler, dict[str, str]] | None:
    for methods, pattern, handler in table:
        found = re.fullmatch(pattern, path)
        if found and method in methods:
            return handler, {k: v for k, v in found.groupdict().items() if v is not None}
    return None


async def _answer(request: Request) -> Response:
    sim: Simulator = request.app.state.simulator
    action = request.path_params["action"].strip("/")
    method = request.method
    raw = await request.body()
    call = Call(sim, request, raw)
    found = _find(SIM_ACTIONS, method, action)
    parts = action.split("/")
    if found is None and parts[0] == "tenants" and len(parts) >= 3:
        call.tenant = parts[1]
        rest = "/".join(parts[2:])
        raw_message = parts[2] == "users" and rest.endswith("/messages")
        # Tenant actions read their JSON body up front: a bad one is a 400 whatever the action.
        call.parsed = call.body if method != "GET" and not raw_message else {}
        found = _find(TENANT_ACTIONS, method, rest)
    if found is None:
        raise control.ControlError(404, f"unknown control action {action!r}")
    handler, call.groups = found
    return handler(call)


async def answer(request: Request) -> Response:
    try:
        return await _answer(request)
    except control.ControlError as err:
        return JSONResponse({"error": err.message}, err.status)
    except (ValueError, KeyError, TypeError) as err:
        return JSONResponse({"error": f"bad request: {err}"}, 400)


ROUTES: list[BaseRoute] = [
    Route("/_sim/{action:path}", answer, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
]
