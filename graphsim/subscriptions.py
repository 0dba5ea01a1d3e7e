"""Change notifications: the ``/subscriptions`` API and the webhook calls Graph makes.

A subscription is created only after its ``notificationUrl`` (and ``lifecycleNotificationUrl``)
echoed a validation token as ``text/plain`` within 10 seconds, as Graph requires. Changes are
found the way delta finds them, by change number: a pump on the server's event loop notices a
tenant whose ``seq`` moved, lists what changed since it last looked, and posts one batch
(``{"value": [...]}``) per notification URL. Nothing hooks the state code, so a change made
through Graph, the control API or the Python API is notified alike.

Lifecycle events go to ``lifecycleNotificationUrl``: ``reauthorizationRequired`` shortly before
expiry, ``subscriptionRemoved`` when the app loses consent, and any of the three on demand
(``POST /_sim/subscriptions/{id}/lifecycle``). ``PUT /_sim/notifications`` drops or delays
notifications so that a receiver's safety net (its scheduled backups) can be tested.

Handlers here are Starlette routes rather than ``Router`` handlers because creating a
subscription awaits the validation call, which a synchronous handler under the world lock
must not do.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from graphsim import control, ops
from graphsim.core import Engine, engine_of
from graphsim.http import GraphError, Req, Resp, error_body, parse_query
from graphsim.mail import parse_graph_datetime
from graphsim.state import Tenant, User, utcnow

# Longest lifetimes Graph grants, in minutes (subscription resource type, "Subscription
# lifetime"): Outlook items under 7 days, drive items and SharePoint lists under 30 days.
MAX_MINUTES = {"message": 10080, "event": 10080, "contact": 10080, "drive": 42300, "list": 42300}
VALIDATION_TIMEOUT_S = 10.0
DELIVERY_TIMEOUT_S = 10.0
DELIVERY_ATTEMPTS = 4
REAUTHORIZE_BEFORE = timedelta(minutes=10)
ODATA_TYPES = {
    "message": ("#Microsoft.Graph.Message", "Messages"),
    "event": ("#Microsoft.Graph.Event", "Events"),
    "contact": ("#Microsoft.Graph.Contact", "Contacts"),
}
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


@dataclass
class Subscription:
    id: str
    tenant_id: str
    app_id: str
    resource: str
    kind: str  # message | event | contact | drive | list
    owner: str  # user id (Outlook), drive id or list id
    folder: str | None
    change_types: list[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime
    created: datetime = field(default_factory=utcnow)
    reauthorization_sent: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.subscription",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": iso_ms(self.expires),
            "creatorId": self.app_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "notificationQueryOptions": None,
            "notificationUrlAppId": None,
        }


def iso_ms(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Delivery:
    url: str
    value: list[dict[str, Any]]


@dataclass
class Hub:
    """The subscriptions of one simulator and what has been notified (never persisted)."""

    engine: Engine
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    cursors: dict[str, int] = field(default_factory=dict)  # tenant id -> last seq notified
    drop_rate: float = 0.0
    delay_ms: float = 0.0
    poll_ms: float = 50.0
    stats: dict[str, int] = field(
        default_factory=lambda: {
            "notifications": 0,
            "batches": 0,
            "dropped": 0,
            "failed": 0,
            "lifecycle": 0,
            "validations": 0,
        }
    )
    rng: random.Random = field(default_factory=lambda: random.Random(15))
    task: asyncio.Task[None] | None = None
    client: httpx.AsyncClient | None = None

    def http(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_S, follow_redirects=False)
        return self.client

    def ensure_pump(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._pump())

    def settings(self) -> dict[str, Any]:
        return {
            "drop": self.drop_rate,
            "delay_ms": self.delay_ms,
            "poll_ms": self.poll_ms,
            "subscriptions": len(self.subscriptions),
            **self.stats,
        }

    # -- finding changes ----------------------------------------------------------------

    def collect(self, now: datetime) -> list[Delivery]:
        """What to send now; call under the world lock."""
        out: dict[str, list[dict[str, Any]]] = {}
        by_tenant: dict[str, list[Subscription]] = {}
        for sub in list(self.subscriptions.values()):
            tenant = self.engine.world.tenants.get(sub.tenant_id)
            if tenant is None or sub.expires <= now:
                # Graph stops notifying an expired subscription and deletes it.
                self.subscriptions.pop(sub.id, None)
                continue
            if sub.app_id not in tenant.consented_apps:
                self.subscriptions.pop(sub.id, None)
                self._lifecycle(out, sub, "subscriptionRemoved")
                continue
            if (
                sub.lifecycle_url
                and not sub.reauthorization_sent
                and sub.expires - now <= REAUTHORIZE_BEFORE
            ):
                sub.reauthorization_sent = True
                self._lifecycle(out, sub, "reauthorizationRequired")
            by_tenant.setdefault(sub.tenant_id, []).append(sub)
        for tenant_id, subs in by_tenant.items():
            tenant = self.engine.world.tenants[tenant_id]
            since = self.cursors.get(tenant_id, tenant.seq)
            if tenant.seq > since:
                for sub, note in changes(tenant, subs, since):
                    out.setdefault(sub.notification_url, []).append(note)
            self.cursors[tenant_id] = tenant.seq
        return [Delivery(url, value) for url, value in out.items()]

    def _lifecycle(
        self, out: dict[str, list[dict[str, Any]]], sub: Subscription, event: str
    ) -> None:
        if not sub.lifecycle_url:
            return
        self.stats["lifecycle"] += 1
        out.setdefault(sub.lifecycle_url, []).append(
            {
                "lifecycleEvent": event,
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": iso_ms(sub.expires),
                "clientState": sub.client_state,
                "tenantId": sub.tenant_id,
                "resource": sub.resource,
            }
        )

    def lifecycle_now(self, sub_id: str, event: str) -> list[Delivery]:
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise control.ControlError(404, f"unknown subscription {sub_id!r}")
        if event not in LIFECYCLE_EVENTS:
            raise control.ControlError(400, f"lifecycle event must be one of {LIFECYCLE_EVENTS}")
        if not sub.lifecycle_url:
            raise control.ControlError(409, "the subscription has no lifecycleNotificationUrl")
        if event == "subscriptionRemoved":
            self.subscriptions.pop(sub_id, None)
        out: dict[str, list[dict[str, Any]]] = {}
        self._lifecycle(out, sub, event)
        return [Delivery(url, value) for url, value in out.items()]

    # -- delivery -----------------------------------------------------------------------

    async def _pump(self) -> None:
        while self.subscriptions:
            with self.engine.world.lock:
                batches = self.collect(utcnow())
            for batch in batches:
                self.send(batch)
            await asyncio.sleep(self.poll_ms / 1000)

    def send(self, batch: Delivery) -> None:
        asyncio.get_running_loop().create_task(self._deliver(batch))

    async def _deliver(self, batch: Delivery) -> None:
        is_change = "changeType" in batch.value[0]
        if is_change and self.drop_rate and self.rng.random() < self.drop_rate:
            self.stats["dropped"] += len(batch.value)
            return
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        wait = 0.5
        for attempt in range(DELIVERY_ATTEMPTS):
            try:
                resp = await self.http().post(batch.url, json={"value": batch.value})
                if 200 <= resp.status_code < 300:
                    if is_change:
                        self.stats["notifications"] += len(batch.value)
                    self.stats["batches"] += 1
                    return
            except httpx.HTTPError:
                pass
            if attempt + 1 < DELIVERY_ATTEMPTS:
                await asyncio.sleep(wait)
                wait *= 2
        self.stats["failed"] += len(batch.value)


def changes(
    tenant: Tenant, subs: list[Subscription], since: int
) -> list[tuple[Subscription, dict[str, Any]]]:
    """Each change after change number ``since`` that a subscription covers, once."""
    found: list[tuple[str, str, str, str, str]] = []  # kind, owner, folder, id, change
    kinds = {s.kind for s in subs}
    outlook = kinds & set(ODATA_TYPES)
    if outlook:
        for item in tenant.items.values():
            if item.seq > since and item.kind in outlook:
                change = (
                    "deleted" if item.deleted else "created" if item.joined > since else "updated"
                )
                found.append((item.kind, item.user_id, item.folder_id, item.id, change))
        for collection, tombs in tenant.tombs.items():
            folder = tenant.folders.get(collection)
            if folder is None:
                continue
            kind = {"mail": "message", "calendar": "event", "contact": "contact"}.get(folder.kind)
            if kind not in outlook:
                continue
            for item_id, seq in tombs.items():
                if seq > since and item_id not in tenant.items:
                    found.append((kind, folder.user_id, folder.id, item_id, "deleted"))
    drives = {s.owner for s in subs if s.kind == "drive"}
    changed_drives = [
        d
        for d in drives
        if d in tenant.drives and any(i.seq > since for i in tenant.drives[d].items.values())
    ]
    lists = {s.owner for s in subs if s.kind == "list"}
    changed_lists = {
        list_id
        for list_id in lists
        if list_id in tenant.lists
        and any(i.seq > since for i in tenant.lists[list_id].items.values())
    }
    out: list[tuple[Subscription, dict[str, Any]]] = []
    for sub in subs:
        base = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": iso_ms(sub.expires),
            "clientState": sub.client_state,
            "tenantId": tenant.id,
        }
        if sub.kind == "drive":
            # OneDrive for Business: one "updated" on the root, no resource data.
            if sub.owner in changed_drives:
                out.append((sub, {**base, "changeType": "updated", "resource": sub.resource}))
            continue
        if sub.kind == "list":
            # SharePoint lists: "updated" on the list itself; the receiver runs the delta.
            if sub.owner in changed_lists:
                out.append((sub, {**base, "changeType": "updated", "resource": sub.resource}))
            continue
        odata_type, segment = ODATA_TYPES[sub.kind]
        for kind, owner, folder_id, item_id, change in found:
            if kind != sub.kind or owner != sub.owner or change not in sub.change_types:
                continue
            if sub.folder is not None and folder_id != sub.folder:
                continue
            resource = f"Users/{owner}/{segment}/{item_id}"
            out.append(
                (
                    sub,
                    {
                        **base,
                        "changeType": change,
                        "resource": resource,
                        "resourceData": {
                            "@odata.type": odata_type,
                            "@odata.id": resource,
                            "id": item_id,
                        },
                    },
                )
            )
    return out


def hub(engine: Engine) -> Hub:
    found = engine.caches.get("subscriptions")
    if not isinstance(found, Hub):
        found = Hub(engine)
        engine.caches["subscriptions"] = found
    return found


# -- parsing a subscription request ----------------------------------------------------------


def parse_resource(tenant: Tenant, resource: str) -> tuple[str, str, str | None]:
    """``users/{id}/messages``, ``users/{id}/mailFolders('inbox')/messages``, ``.../events``,
    ``.../contacts``, ``drives/{id}/root``, ``users/{id}/drive/root``,
    ``sites/{id}/lists/{id}`` -> kind, owner, folder."""
    parts = [unquote(p) for p in resource.strip().strip("/").split("/")]
    lower = [p.lower() for p in parts]
    if len(parts) == 4 and lower[0] == "sites" and lower[2] == "lists":
        site = tenant.sites.get(parts[1])
        if site is None:
            raise GraphError(404, "itemNotFound", "Requested site could not be found")
        if parts[3] not in site.list_ids or parts[3] not in tenant.lists:
            raise GraphError(404, "itemNotFound", "The specified list was not found")
        return "list", parts[3], None
    if len(parts) >= 3 and lower[0] == "drives" and lower[2] == "root" and len(parts) == 3:
        if parts[1] not in tenant.drives:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        return "drive", parts[1], None
    if len(parts) < 3 or lower[0] != "users":
        raise _bad_resource(resource)
    user = tenant.user(parts[1])
    if user is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{parts[1]}' does not exist or one of its queried reference-property "
            "objects are not present.",
        )
    rest = lower[2:]
    if rest == ["drive", "root"]:
        if not user.drive_id or user.drive_id not in tenant.drives:
            raise GraphError(404, "ResourceNotFound", "User's mysite not found.")
        return "drive", user.drive_id, None
    if not user.mailbox_enabled:
        raise GraphError(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    if rest == ["messages"]:
        return "message", user.id, None
    if rest == ["events"]:
        return "event", user.id, None
    if rest == ["contacts"]:
        return "contact", user.id, None
    if len(parts) == 4 and rest[1] == "messages" and rest[0].startswith("mailfolders("):
        key = parts[2][len("mailFolders(") : -1].strip("'\"")
        folder = user.well_known.get(key.lower()) or key
        if folder not in tenant.folders or tenant.folders[folder].user_id != user.id:
            raise GraphError(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        return "message", user.id, folder
    raise _bad_resource(resource)


def _bad_resource(resource: str) -> GraphError:
    return GraphError(
        400,
        "InvalidRequest",
        f"Resource '{resource}' is not supported for change notifications by this simulator.",
    )


def _expiry(kind: str, raw: Any, now: datetime) -> datetime:
    if not isinstance(raw, str) or not raw:
        raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
    try:
        when = parse_graph_datetime(raw)
    except (ValueError, TypeError) as exc:
        raise GraphError(400, "InvalidRequest", f"Invalid expirationDateTime '{raw}'.") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when <= now:
        raise GraphError(
            400,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: BadRequest; Reason: Subscription "
            "expiration date time must be in the future.]",
        )
    limit = MAX_MINUTES[kind]
    if when > now + timedelta(minutes=limit):
        raise GraphError(
            400,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: BadRequest; Reason: Subscription "
            f"expiration can only be {limit} minutes in the future.]",
        )
    return when


def _url(raw: Any, name: str, required: bool) -> str | None:
    if raw is None and not required:
        return None
    if not isinstance(raw, str) or not raw.lower().startswith(("https://", "http://")):
        # Graph takes https only; plain http is let through so a test receiver can listen
        # on loopback without certificates.
        raise GraphError(400, "InvalidRequest", f"{name} must be an https URL.")
    return raw


async def validate(url: str) -> None:
    """Graph's reachability check: the endpoint must echo the token, as text/plain, in 10 s."""
    token = (
        "Validation: Testing client application reachability for subscription "
        f"Request-Id: {uuid.uuid4()}"
    )
    try:
        async with httpx.AsyncClient(timeout=VALIDATION_TIMEOUT_S) as client:
            resp = await client.post(
                url, params={"validationToken": token}, headers={"Content-Type": "text/plain"}
            )
    except httpx.HTTPError as exc:
        raise GraphError(
            400,
            "ValidationError",
            f"Subscription validation request failed. Notification endpoint must respond with "
            f"200 OK to validation request. ({type(exc).__name__})",
        ) from exc
    if resp.status_code != 200:
        raise GraphError(
            400,
            "ValidationError",
            "Subscription validation request failed. Notification endpoint must respond with "
            f"200 OK to validation request. (HTTP {resp.status_code})",
        )
    if resp.text != token or not resp.headers.get("content-type", "").startswith("text/plain"):
        raise GraphError(
            400,
            "ValidationError",
            "Subscription validation request failed. Response must exactly match "
            "validationToken query parameter, as text/plain.",
        )


# -- HTTP -----------------------------------------------------------------------------------


async def api(request: Request) -> Response:
    """``/subscriptions`` and ``/subscriptions/{id}``: authenticated as Graph requests are,
    counted under their templates."""
    from graphsim.server import authenticate, to_response

    engine = engine_of(request)
    version = request.url.path.lstrip("/").split("/", 1)[0]
    req = Req(
        method=request.method,
        path=request.url.path[len(version) + 1 :],
        query=parse_query(request.url.query),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=await request.body(),
        base_url=engine.base_url,
        version=version,
    )
    sub_id = request.path_params.get("sid")
    template = f"{req.method} /subscriptions" + ("/{id}" if sub_id else "")
    try:
        authenticate(engine, req)
        if sub_id is None and req.method == "GET":
            resp = list_subscriptions(engine, req)
        elif sub_id is None:
            resp = await create(engine, req)
        else:
            resp = one(engine, req, sub_id)
    except GraphError as err:
        resp = Resp(err.status, error_body(err, req.request_id, ""), dict(err.headers))
    engine.throttler.record(template, None, req.tenant.id if req.tenant else None, resp.status)
    return to_response(resp, req.request_id)


def list_subscriptions(engine: Engine, req: Req) -> Resp:
    tenant = req.tenant
    assert tenant is not None
    with engine.world.lock:
        mine = [
            s.as_json()
            for s in hub(engine).subscriptions.values()
            if s.tenant_id == tenant.id and s.app_id == req.app_id
        ]
    return Resp(200, {"@odata.context": f"{req.graph_base}/$metadata#subscriptions", "value": mine})


async def create(engine: Engine, req: Req) -> Resp:
    """Check the request as Graph does, validate the URLs, then start notifying."""
    tenant = req.tenant
    assert tenant is not None
    h = hub(engine)
    body = req.json()
    for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
        if not body.get(name):
            raise GraphError(400, "InvalidRequest", f"'{name}' is a required property.")
    with engine.world.lock:
        kind, owner, folder = parse_resource(tenant, str(body["resource"]))
    change_types = [c.strip() for c in str(body["changeType"]).split(",") if c.strip()]
    allowed = ("updated",) if kind in ("drive", "list") else ("created", "updated", "deleted")
    if not change_types or any(c not in allowed for c in change_types):
        raise GraphError(
            400,
            "InvalidRequest",
            f"changeType must be a comma-separated list of {', '.join(allowed)}.",
        )
    client_state = body.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
        raise GraphError(
            400, "InvalidRequest", "clientState is a string of at most 128 characters."
        )
    expires = _expiry(kind, body["expirationDateTime"], utcnow())
    url = _url(body["notificationUrl"], "notificationUrl", True)
    lifecycle = _url(body.get("lifecycleNotificationUrl"), "lifecycleNotificationUrl", False)
    assert url is not None
    for target in sorted({url, lifecycle} - {None}):  # type: ignore[type-var]
        await validate(str(target))
        h.stats["validations"] += 1
    sub = Subscription(
        id=str(uuid.uuid4()),
        tenant_id=tenant.id,
        app_id=req.app_id,
        resource=str(body["resource"]),
        kind=kind,
        owner=owner,
        folder=folder,
        change_types=change_types,
        notification_url=url,
        lifecycle_url=lifecycle,
        client_state=client_state,
        expires=expires,
    )
    with engine.world.lock:
        h.subscriptions[sub.id] = sub
        h.cursors.setdefault(tenant.id, tenant.seq)
    h.ensure_pump()
    answer = sub.as_json()
    answer["@odata.context"] = f"{req.graph_base}/$metadata#subscriptions/$entity"
    return Resp(201, answer)


def one(engine: Engine, req: Req, sub_id: str) -> Resp:
    """GET, PATCH (renew, move the URL), DELETE and ``reauthorize`` of one subscription; a
    subscription of another tenant or app is as unknown as one that never existed."""
    tenant = req.tenant
    assert tenant is not None
    h = hub(engine)
    now = utcnow()
    with engine.world.lock:
        current = h.subscriptions.get(sub_id)
        if current is not None and (current.tenant_id != tenant.id or current.app_id != req.app_id):
            current = None
        if current is None or current.expires <= now:
            raise GraphError(
                404,
                "ResourceNotFound",
                f"The object was not found. Subscription '{sub_id}' does not exist.",
            )
        if req.path.endswith("/reauthorize"):
            current.reauthorization_sent = False
            return Resp(204)
        if req.method == "GET":
            return Resp(200, current.as_json())
        if req.method == "DELETE":
            del h.subscriptions[sub_id]
            return Resp(204)
        body = req.json()
        if "expirationDateTime" in body:
            current.expires = _expiry(current.kind, body["expirationDateTime"], now)
            current.reauthorization_sent = False
        if "notificationUrl" in body:
            new_url = _url(body["notificationUrl"], "notificationUrl", True)
            assert new_url is not None
            current.notification_url = new_url
        return Resp(200, current.as_json())


async def sim_notifications(request: Request) -> Response:
    """``GET/PUT /_sim/notifications``: drop a share of change notifications, delay each
    batch; the answer also carries what was sent, dropped and failed."""
    h = hub(engine_of(request))
    if request.method != "GET":
        try:
            body = await request.json() if await request.body() else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            if "drop" in body:
                drop = float(body["drop"])
                if not 0 <= drop <= 1:
                    raise ValueError("drop is a rate between 0 and 1")
                h.drop_rate = drop
            if "delay_ms" in body:
                delay = float(body["delay_ms"])
                if delay < 0:
                    raise ValueError("delay_ms must not be negative")
                h.delay_ms = delay
        except (TypeError, ValueError) as err:
            return JSONResponse({"error": f"bad request: {err}"}, 400)
    return JSONResponse(h.settings())


async def sim_subscriptions(request: Request) -> Response:
    engine = engine_of(request)
    with engine.world.lock:
        listed = [
            s.as_json() | {"tenantId": s.tenant_id} for s in hub(engine).subscriptions.values()
        ]
    return JSONResponse(listed)


async def sim_lifecycle(request: Request) -> Response:
    """``POST /_sim/subscriptions/{id}/lifecycle {event}``: send a lifecycle event now."""
    engine = engine_of(request)
    h = hub(engine)
    try:
        body = await request.json()
        event = str(body.get("event", "")) if isinstance(body, dict) else ""
        with engine.world.lock:
            batches = h.lifecycle_now(request.path_params["sid"], event)
    except control.ControlError as err:
        return JSONResponse({"error": err.message}, err.status)
    except ValueError:
        return JSONResponse({"error": "body must be JSON"}, 400)
    for batch in batches:
        h.send(batch)
    return JSONResponse({"ok": True}, 202)


async def sim_mass_delete(request: Request) -> Response:
    """``POST /_sim/tenants/{t}/users/{u}/massdelete {count, what}``."""
    engine = engine_of(request)
    try:
        body = await request.json() if await request.body() else {}
        with engine.world.lock:
            tenant = control.need_tenant(engine.world, request.path_params["tenant"])
            user = control.need_user(tenant, request.path_params["user"])
            deleted = mass_delete(
                tenant, user, int(body.get("count", 50)), str(body.get("what", "files"))
            )
    except control.ControlError as err:
        return JSONResponse({"error": err.message}, err.status)
    except (ValueError, TypeError, AttributeError) as err:
        return JSONResponse({"error": f"bad request: {err}"}, 400)
    return JSONResponse({"items": deleted})


# Listed by ``server.build_app`` before the generic Graph front and the ``/_sim/`` controls.
ROUTES: list[BaseRoute] = [
    *(
        route
        for version in ("v1.0", "beta")
        for route in (
            Route(f"/{version}/subscriptions", api, methods=["GET", "POST"]),
            Route(f"/{version}/subscriptions/{{sid}}", api, methods=["GET", "PATCH", "DELETE"]),
            Route(f"/{version}/subscriptions/{{sid}}/reauthorize", api, methods=["POST"]),
        )
    ),
    Route("/_sim/notifications", sim_notifications, methods=["GET", "PUT", "POST", "PATCH"]),
    Route("/_sim/subscriptions", sim_subscriptions, methods=["GET"]),
    Route("/_sim/subscriptions/{sid}/lifecycle", sim_lifecycle, methods=["POST"]),
    Route("/_sim/tenants/{tenant}/users/{user}/massdelete", sim_mass_delete, methods=["POST"]),
]


def mass_delete(tenant: Tenant, user: User, count: int, what: str) -> list[str]:
    """Delete ``count`` of a user's files or messages at once (hard, as a wiper does): the
    mass-change detector's test case, beside ``control.ransomware``."""
    if count < 1:
        raise control.ControlError(400, "count must be positive")
    if what == "files":
        if not user.drive_id or user.drive_id not in tenant.drives:
            raise control.ControlError(404, "the user has no drive")
        drive = tenant.drives[user.drive_id]
        files = sorted(
            (i for i in drive.items.values() if not i.deleted and not i.is_folder),
            key=lambda i: i.id,
        )[:count]
        for item in files:
            ops.delete_drive_item(tenant, drive, item)
        return [i.id for i in files]
    if what == "mail":
        messages = sorted(
            (i for i in tenant.items.values() if i.user_id == user.id and i.kind == "message"),
            key=lambda i: i.id,
        )[:count]
        for message in messages:
            tenant.delete_item(message)
        return [m.id for m in messages]
    raise control.ControlError(400, "what must be 'files' or 'mail'")


__all__ = ["ROUTES", "Hub", "Subscription", "hub", "mass_delete"]
