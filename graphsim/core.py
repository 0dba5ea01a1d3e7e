"""The engine behind the HTTP front: world, settings, paging and delta tokens.

Delta and paging links are opaque to clients but carry everything needed to continue: the
collection, the change number the round started from and stops at, the last item returned,
the query options and the sync epoch. They are signed so a tampered token is refused, and
checked against the epoch and their age so that expired tokens answer 410 the way Exchange
and OneDrive do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

from starlette.requests import Request

from graphsim.http import GraphError, Req, Resp, Router, split_top
from graphsim.inflight import InFlight
from graphsim.state import Tenant, User, World
from graphsim.throttle import Throttler

ONEDRIVE_RESYNC_MESSAGE = (
    "Resync required. Replace any local items with the server's version (including deletes) "
    "if you're sure that the service was up to date with your local changes when you last "
    "sync'd. Upload any local changes that the server doesn't know about."
)


@dataclass
class SimConfig:
    app_id: str
    app_secret: str
    app_name: str = "Safekeep Backup"
    token_lifetime_s: int = 3599
    delta_token_max_age_s: float = 30 * 24 * 3600
    download_url_lifetime_s: float = 3600
    upload_session_lifetime_s: float = 3 * 24 * 3600
    consent_auto_approve: bool = True


@dataclass
class Engine:
    world: World
    config: SimConfig
    throttler: Throttler
    spill_dir: Path
    signing_key: bytes
    router: Router = field(default_factory=Router)
    base_url: str = ""
    upload_sessions: dict[str, Any] = field(default_factory=dict)
    caches: dict[str, Any] = field(default_factory=dict)  # per simulator, never persisted
    in_flight: InFlight = field(default_factory=InFlight)  # per mailbox, over time

    # -- signed opaque tokens ---------------------------------------------------------------

    def sign(self, payload: dict[str, Any]) -> str:
        raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        mac = hmac.new(self.signing_key, body.encode(), hashlib.sha256).digest()[:12]
        return body + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def unsign(self, token: str) -> dict[str, Any] | None:
        body, _, mac = token.strip().partition(".")
        if not body or not mac:
            return None
        expected = hmac.new(self.signing_key, body.encode(), hashlib.sha256).digest()[:12]
        try:
            given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
            if not hmac.compare_digest(given, expected):
                return None
            value = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, TypeError):
            return None
        return value if isinstance(value, dict) else None


def engine_of(request: Request) -> Engine:
    """The simulator's state, reached through the request: ``server.build_app`` puts it on
    the Starlette app, so handlers are plain module-level functions."""
    engine = request.app.state.engine
    assert isinstance(engine, Engine)
    return engine


# -- request helpers -------------------------------------------------------------------------


def tenant_of(req: Req) -> Tenant:
    assert req.tenant is not None
    return req.tenant


def user_of(req: Req, key: str | None = None) -> User:
    tenant = tenant_of(req)
    key = key if key is not None else req.params.get("user", "")
    user = tenant.user(key)
    if user is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried reference-property objects "
            "are not present.",
        )
    return user


def mailbox_of(req: Req, key: str | None = None) -> User:
    """The user whose mailbox an Outlook route addresses. Exchange, not the directory,
    answers those routes: a user it does not know is 404 ``ErrorInvalidUser`` there (where
    directory routes say ``Request_ResourceNotFound``)."""
    tenant = tenant_of(req)
    key = key if key is not None else req.params.get("user", "")
    user = tenant.user(key)
    if user is None:
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")
    if not user.mailbox_enabled:
        raise GraphError(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    if user.app_access_denied:  # what Exchange answers, per "Limiting application permissions"
        raise GraphError(
            403,
            "ErrorAccessDenied",
            "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly "
            "AccessPolicy settings.",
        )
    return user


def page_size(req: Req, default: int, maximum: int) -> int:
    size = default
    prefer = req.prefer().get("odata.maxpagesize")
    top = req.query.get("$top") or req.query.get("top")
    for value in (prefer, top):
        if value:
            try:
                size = int(value)
            except ValueError as exc:
                raise GraphError(400, "BadRequest", f"Invalid page size '{value}'.") from exc
    if size < 1:
        raise GraphError(400, "BadRequest", "The page size must be positive.")
    return min(size, maximum)


def skip_of(req: Req) -> int:
    """``$skip``: a non-negative integer, as OData's URI parser requires (0 when absent)."""
    skip = req.query.get("$skip")
    if skip is None:
        return 0
    if not (skip.isascii() and skip.isdigit()):
        raise GraphError(
            400,
            "BadRequest",
            f"Invalid value '{skip}' for $skip query option found. "
            "The $skip query option requires a non-negative integer value.",
        )
    return int(skip)


DIRECTORY_MAX_TOP = 999


def check_directory_paging(req: Req) -> None:
    """The directory's own paging rules (users, groups): ``$top`` from 1 to 999, and no
    ``$skip`` at all (it pages by ``$skiptoken`` only)."""
    top = req.query.get("$top")
    if top is not None and not (
        top.isascii() and top.isdigit() and 1 <= int(top) <= DIRECTORY_MAX_TOP
    ):
        raise GraphError(
            400,
            "Request_UnsupportedQuery",
            f"Invalid page size specified: '{top}'. Must be between 1 and "
            f"{DIRECTORY_MAX_TOP} inclusive.",
        )
    if "$skip" in req.query:
        raise GraphError(400, "Request_BadRequest", "'$skip' is not supported by the service.")


def prefer_applied(req: Req, size: int) -> dict[str, str]:
    applied = []
    if "odata.maxpagesize" in req.prefer():
        applied.append(f"odata.maxpagesize={size}")
    if "idtype" in req.prefer():
        applied.append(f'IdType="{req.prefer()["idtype"]}"')
    if "outlook.body-content-type" in req.prefer():
        applied.append(f'outlook.body-content-type="{req.prefer()["outlook.body-content-type"]}"')
    return {"Preference-Applied": ", ".join(applied)} if applied else {}


def collection(
    req: Req,
    engine: Engine,
    context: str,
    values: Sequence[Any],
    *,
    default: int = 10,
    maximum: int = 1000,
    render: Callable[[Any], dict[str, Any]] | None = None,
    count: bool | None = None,
) -> Resp:
    """One page of a plain (non-delta) collection, with an opaque ``$skiptoken`` nextLink.

    ``render`` turns the objects of the page only into JSON, so that paging through a folder
    of thousands of messages does not serialise all of them for every page.
    """
    offset = 0
    token = req.query.get("$skiptoken")
    if token:
        decoded = engine.unsign(token)
        if decoded is None or decoded.get("k") != "page":
            raise GraphError(400, "BadRequest", "The $skiptoken is invalid.")
        offset = int(decoded["o"])
        size = int(decoded["n"])
    else:
        offset = skip_of(req)
        size = page_size(req, default, maximum)
    chunk = list(values[offset : offset + size])
    if render is not None:
        chunk = [render(v) for v in chunk]
    body: dict[str, Any] = {
        "@odata.context": f"{req.graph_base}/$metadata#{context}",
        "value": chunk,
    }
    if count if count is not None else req.query.get("$count", "").lower() == "true":
        body["@odata.count"] = len(values)
    if offset + size < len(values):
        query = {k: v for k, v in req.query.items() if k not in ("$skiptoken", "$skip", "$top")}
        query["$skiptoken"] = engine.sign({"k": "page", "o": offset + size, "n": size})
        body["@odata.nextLink"] = link(req, req.path, query)
    return Resp(200, body, prefer_applied(req, size))


def link(req: Req, path: str, query: dict[str, str]) -> str:
    """A next/delta link on the request's own surface (v1.0 or beta), in the form it was
    called: a client that asked for ``.../delta()`` gets ``.../delta()?...`` back, as Graph
    echoes the function-call form the SDKs' request builders send."""
    if req.params.get("_call") and path.endswith("/delta"):
        path += "()"
    qs = urlencode(query, quote_via=quote, safe="$,'()=")
    return f"{req.graph_base}{quote(path, safe='/:,!$()=')}" + (f"?{qs}" if qs else "")


# -- delta --------------------------------------------------------------------------------


@dataclass
class DeltaState:
    collection: str
    owner: str  # whose epoch the links carry: a reset of the owner expires them
    style: str  # "outlook" | "onedrive": the service whose errors and link names are spoken
    path: str  # where the links point
    since: int
    upto: int
    after: tuple[int, str] | None
    query: dict[str, Any]
    size: int
    fresh: bool  # no token given: a full enumeration
    last: tuple[int, str] | None = None  # the cursor after the page delta_page chose


def read_delta_token(
    req: Req,
    engine: Engine,
    *,
    collection: str,
    owner: str,
    style: str,  # "outlook" | "onedrive"
    path: str,
    query: dict[str, Any],
    default_size: int,
    max_size: int,
    token: str | None,
) -> DeltaState:
    """The state a delta request resumes from; it keeps what the token was read for (owner,
    style, path) so the page's links are made for the same without the caller saying it twice."""
    tenant = tenant_of(req)
    size = page_size(req, default_size, max_size)
    state = DeltaState(collection, owner, style, path, 0, tenant.seq, None, query, size, True)
    if not token:
        return state
    decoded = engine.unsign(token)
    if decoded is None or decoded.get("c") != collection:
        if style == "outlook":
            raise GraphError(
                400, "SyncStateInvalid", "The sync state data is corrupt or otherwise invalid."
            )
        raise GraphError(400, "invalidRequest", "Invalid delta token.")
    epoch = tenant.epoch(owner)
    expired = decoded.get("g") != epoch or (
        time.time() - float(decoded.get("t", 0)) > engine.config.delta_token_max_age_s
    )
    if expired:
        if style == "outlook":
            generation = decoded.get("s", 0)
            raise GraphError(
                410,
                "SyncStateNotFound",
                f"The sync state generation is not found; generation={generation};"
                f"[highest={tenant.seq}]",
            )
        # The fresh link is opaque like every other: it starts the enumeration over with the
        # query the expired link was made for ($select, $expand=fields, ...).
        restart = engine.sign(
            {
                "c": collection,
                "g": epoch,
                "t": int(time.time()),
                "q": decoded.get("q") or {},
                "n": decoded.get("n") or size,
                "s": 0,
                "p": 1,
            }
        )
        raise GraphError(
            410,
            "resyncRequired",
            ONEDRIVE_RESYNC_MESSAGE,
            headers={"Location": link(req, path, {"token": restart})},
            inner_code="resyncChangesApplyDifferences",
        )
    after = decoded.get("a")
    state.since = int(decoded["s"])
    state.query = decoded.get("q") or {}
    state.fresh = state.since == 0
    if decoded.get("p"):  # a deltaLink: a new round from its position (0: all over again)
        if "odata.maxpagesize" not in req.prefer():
            state.size = int(decoded.get("n") or size)
        return state
    state.upto = int(decoded["u"])
    state.after = (int(after[0]), str(after[1])) if after else None
    state.size = int(decoded.get("n") or size)
    return state


def outlook_delta_state(
    req: Req,
    engine: Engine,
    *,
    collection: str,
    owner: str,
    path: str,
    first: Callable[[], dict[str, Any]] = dict,
    size: int = 10,
    most: int = 1000,
) -> DeltaState:
    """A delta in Outlook's dialect (messages, events, contacts, folders; channel messages
    too): the token comes back as ``$skiptoken`` or ``$deltatoken``, the request's own options
    (``first``) are read only when a round starts (its links carry them after), and a page is
    ``size`` entries unless Prefer asks for another size, ``most`` at the most."""
    token = req.query.get("$deltatoken") or req.query.get("$skiptoken")
    return read_delta_token(
        req,
        engine,
        collection=collection,
        owner=owner,
        style="outlook",
        path=path,
        query={} if token else first(),
        default_size=size,
        max_size=most,
        token=token,
    )


DeltaEntry = tuple[int, str, Any, bool]  # seq, id, object (None when removed), removed


def delta_page(
    state: DeltaState,
    live: Iterable[tuple[int, str, Any]],
    removed: Iterable[tuple[int, str, Any]],
    *,
    order: Callable[[DeltaEntry], tuple[int, str]] | None = None,
    extra: Iterable[DeltaEntry] = (),
) -> tuple[list[DeltaEntry], bool]:
    """Select the next page: entries with ``since < seq <= upto`` after the cursor.

    ``order`` gives another sort key than (seq, id) (``$orderby``); the cursor a link
    carries is then that key of the last entry sent. ``extra`` entries (unchanged items a
    round returns anyway, keyed to sort where they belong) join whatever their number.
    """
    key = order or (lambda e: (e[0], e[1]))
    entries: list[DeltaEntry] = list(extra)
    for seq, item_id, obj in live:
        if state.since < seq <= state.upto:
            entries.append((seq, item_id, obj, False))
    if not state.fresh:
        for seq, item_id, obj in removed:
            if state.since < seq <= state.upto:
                entries.append((seq, item_id, obj, True))
    entries.sort(key=key)
    if state.after is not None:
        cursor = state.after
        entries = [e for e in entries if key(e) > cursor]
    page = entries[: state.size]
    state.last = key(page[-1]) if page else None
    return page, len(entries) > state.size


def delta_links(
    req: Req, engine: Engine, state: DeltaState, page: list[DeltaEntry], more: bool
) -> dict[str, str]:
    tenant = tenant_of(req)
    path, style = state.path, state.style
    base = {
        "c": state.collection,
        "g": tenant.epoch(state.owner),
        "t": int(time.time()),
        "q": state.query,
        "n": state.size,
    }
    if more:
        last = state.last or (page[-1][0], page[-1][1])
        token = engine.sign({**base, "s": state.since, "u": state.upto, "a": [last[0], last[1]]})
        key = "token" if style == "onedrive" else "$skiptoken"
        return {"@odata.nextLink": link(req, path, {key: token})}
    token = engine.sign({**base, "s": state.upto, "p": 1})
    key = "token" if style == "onedrive" else "$deltatoken"
    return {"@odata.deltaLink": link(req, path, {key: token})}


def delta_resp(
    req: Req,
    engine: Engine,
    state: DeltaState,
    page: list[DeltaEntry],
    more: bool,
    *,
    entity: str,
    values: list[dict[str, Any]],
) -> Resp:
    """One page of a delta (Outlook: messages, events, contacts, folders; OneDrive: drive
    and list items): the values, then the next or delta link, as the service answers it."""
    body: dict[str, Any] = {
        "@odata.context": f"{req.graph_base}/$metadata#Collection({entity})",
        "value": values,
    }
    body.update(delta_links(req, engine, state, page, more))
    return Resp(200, body, prefer_applied(req, state.size))


def removed_entry(entity: str, item_id: str) -> dict[str, Any]:
    """What an Outlook delta reports for a deleted item."""
    return {
        "@odata.type": f"#microsoft.graph.{entity}",
        "id": item_id,
        "@removed": {"reason": "deleted"},
    }


def json_resp(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Resp:
    return Resp(status, body, headers or {})


def entity_resp(
    req: Req,
    entity_set: str,
    body: dict[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Resp:
    """One entity as Graph answers a read or a create of it: the ``$metadata#<set>/$entity``
    context first, then its properties."""
    context = f"{req.graph_base}/$metadata#{entity_set}/$entity"
    return json_resp({"@odata.context": context, **body}, status, headers)


def apply_select(obj: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if not select:
        return obj
    wanted = {s.lower() for s in select} | {"id"}
    return {k: v for k, v in obj.items() if k.startswith("@") or k.lower() in wanted}


def find(values: Iterable[Any], pred: Callable[[Any], bool]) -> Any:
    for value in values:
        if pred(value):
            return value
    return None


# -- $filter ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|([(),])|([^\s(),']+))")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T")
_COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
_FUNCTIONS = ("startswith", "endswith")

Predicate = Callable[[dict[str, Any]], bool]


class FilterParser:
    """OData ``$filter`` for the forms clients send Graph: comparisons of a property path
    with a literal, ``startswith``/``endswith``, ``and``/``or``/``not`` and parentheses.

    String literals are quoted with ``'`` and a quote inside is doubled (``'O''Brien'``), so
    message ids with ``<``, ``>``, ``@``, ``'`` or spaces come through intact. Anything else
    (``contains``, lambdas, arithmetic) is refused with 400 rather than ignored, so a client
    never mistakes an unfiltered page for a filtered one.
    """

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens: list[tuple[str, str]] = []  # (kind, text): str | punct | word
        pos = 0
        while pos < len(expression):
            found = _TOKEN.match(expression, pos)
            if not found or found.end() == pos:
                if expression[pos:].strip():
                    self.fail()
                break
            pos = found.end()
            if found.group(1) is not None:
                self.tokens.append(("str", found.group(1)))
            elif found.group(2) is not None:
                self.tokens.append(("punct", found.group(2)))
            elif found.group(3) is not None:
                self.tokens.append(("word", found.group(3)))
        self.pos = 0
        self.properties: list[str] = []  # property paths in the order they appear
        # What directory objects serve only as "advanced queries" (ne, not, endsWith, $count).
        self.features: set[str] = set()

    def fail(self) -> NoReturn:
        raise GraphError(400, "BadRequest", f"Invalid filter clause: {self.expression.strip()!r}.")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            self.fail()
        self.pos += 1
        return token

    def keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token is not None and token[0] == "word" and token[1].lower() in words:
            self.pos += 1
            return token[1].lower()
        return None

    def expect(self, punct: str) -> None:
        if self.take() != ("punct", punct):
            self.fail()

    def parse(self) -> Predicate:
        if not self.tokens:
            self.fail()
        predicate = self.disjunction()
        if self.peek() is not None:
            self.fail()
        return predicate

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.keyword("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda obj: any(p(obj) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while self.keyword("and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else (lambda obj: all(p(obj) for p in parts))

    def negation(self) -> Predicate:
        if self.keyword("not"):
            self.features.add("not")
            inner = self.negation()
            return lambda obj: not inner(obj)
        return self.primary()

    def primary(self) -> Predicate:
        token = self.take()
        if token == ("punct", "("):
            inner = self.disjunction()
            self.expect(")")
            return inner
        if token[0] != "word" or not re.fullmatch(r"[A-Za-z_@$][\w/@.$]*", token[1]):
            self.fail()
        if token[1].lower() in _FUNCTIONS and self.peek() == ("punct", "("):
            return self.function(token[1].lower())
        lambda_kind = token[1].rsplit("/", 1)[-1].lower()
        if "/" in token[1] and lambda_kind in ("any", "all") and self.peek() == ("punct", "("):
            return self.lambda_(token[1].rsplit("/", 1)[0].split("/"), lambda_kind)
        path = token[1].split("/")
        self.properties.append(token[1].lower())
        if "$count" in path:
            self.features.add("$count")
        op = self.keyword(*_COMPARISONS)
        if op is None:
            self.fail()
        if op == "ne":
            self.features.add("ne")
        wanted = self.literal()
        return lambda obj: _compare(_lookup(obj, path), op, wanted)

    def lambda_(self, path: list[str], kind: str) -> Predicate:
        """``assignedLicenses/any(x:x/skuId eq <guid>)``: the variable names each element."""
        self.expect("(")
        if self.peek() == ("punct", ")") and kind == "any":
            self.pos += 1
            return lambda obj: bool(_lookup(obj, path))
        token = self.take()
        variable, colon, rest = token[1].partition(":")
        if token[0] != "word" or not colon or not re.fullmatch(r"[A-Za-z_]\w*", variable):
            self.fail()
        if rest:
            self.tokens.insert(self.pos, ("word", rest))
        inner = self.disjunction()
        self.expect(")")

        def test(obj: dict[str, Any]) -> bool:
            items = _lookup(obj, path)
            if not isinstance(items, list):
                return False
            results = (inner({variable: item}) for item in items)
            return any(results) if kind == "any" else all(results)

        return test

    def function(self, name: str) -> Predicate:
        self.expect("(")
        token = self.take()
        if token[0] != "word":
            self.fail()
        path = token[1].split("/")
        self.properties.append(token[1].lower())
        if name == "endswith":
            self.features.add("endsWith")
        self.expect(",")
        wanted = self.literal()
        self.expect(")")
        if not isinstance(wanted, str):
            self.fail()
        prefix = str(wanted).lower()

        def test(obj: dict[str, Any]) -> bool:
            actual = _lookup(obj, path)
            if not isinstance(actual, str):
                return False
            text = actual.lower()
            return text.startswith(prefix) if name == "startswith" else text.endswith(prefix)

        return test

    def literal(self) -> Any:
        kind, raw = self.take()
        if kind == "str":
            return raw[1:-1].replace("''", "'")
        if kind != "word":
            self.fail()
        lowered = raw.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered == "null":
            return None
        if re.fullmatch(r"-?\d+", raw):
            return int(raw)
        if re.fullmatch(r"-?\d+\.\d+(?:[eE][-+]?\d+)?", raw):
            return float(raw)
        if re.fullmatch(r"[-\w:.+]+", raw):
            return raw  # a date-time or GUID literal
        self.fail()


def _lookup(obj: Any, keys: list[str]) -> Any:
    for key in keys:
        if key == "$count" and isinstance(obj, list):
            obj = len(obj)
            continue
        if not isinstance(obj, dict):
            return None
        match = next((k for k in obj if k.lower() == key.lower()), None)
        obj = obj.get(match) if match else None
    return obj


def _comparable(actual: Any, wanted: Any) -> tuple[Any, Any]:
    if isinstance(actual, str) and isinstance(wanted, str):
        if _DATETIME.match(actual) and _DATETIME.match(wanted):
            try:
                return parse_iso(actual), parse_iso(wanted)
            except ValueError:
                pass
        return actual.lower(), wanted.lower()
    return actual, wanted


def parse_iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _compare(actual: Any, op: str, wanted: Any) -> bool:
    actual, wanted = _comparable(actual, wanted)
    if op == "eq":
        return bool(actual == wanted)
    if op == "ne":
        return bool(actual != wanted)
    if actual is None or wanted is None:
        return False
    try:
        return bool(
            {
                "gt": actual > wanted,
                "ge": actual >= wanted,
                "lt": actual < wanted,
                "le": actual <= wanted,
            }[op]
        )
    except TypeError:
        return False


def odata_filter(expression: str | None) -> Predicate | None:
    """A predicate for a ``$filter`` expression (None when there is none)."""
    if not expression or not expression.strip():
        return None
    return FilterParser(expression).parse()


def filtered(
    req: Req,
    items: Sequence[Any],
    to_json: Callable[[Any], dict[str, Any]],
    *,
    outlook_messages: bool = False,
) -> list[Any]:
    """Apply the request's ``$filter`` and ``$orderby`` to items shown as their Graph JSON.

    Outlook refuses a message query whose ``$orderby`` properties do not lead its
    ``$filter`` in the same order (400 ``InefficientFilter``, "Using filter and orderby in
    the same query" in the message list reference); ``outlook_messages`` applies that rule.
    ``$search`` is only understood where the caller handles it first: elsewhere it is a 400.
    """
    if req.query.get("$search") and not outlook_messages:
        raise GraphError(400, "BadRequest", "The query parameter '$search' is not supported.")
    expression = req.query.get("$filter")
    order = order_keys(req.query.get("$orderby"))
    rows = [(item, to_json(item)) for item in items]
    if expression and expression.strip():
        parser = FilterParser(expression)
        predicate = parser.parse()
        if outlook_messages and order:
            ordered_props = ["/".join(path).lower() for path, _ in order]
            # A property named twice (a range: ge ... and le ...) counts once, where it first
            # appears.
            named = list(dict.fromkeys(parser.properties))
            if named[: len(ordered_props)] != ordered_props:
                raise GraphError(
                    400,
                    "InefficientFilter",
                    "The restriction or sort order is too complex for this operation.",
                )
        rows = [row for row in rows if predicate(row[1])]
    return [item for item, _ in _sorted(rows, order)]


def ordered(req: Req, items: Sequence[Any], to_json: Callable[[Any], dict[str, Any]]) -> list[Any]:
    """Apply ``$orderby`` alone (collections without ``$filter`` support)."""
    order = order_keys(req.query.get("$orderby"))
    if not order:
        return list(items)
    return [item for item, _ in _sorted([(i, to_json(i)) for i in items], order)]


def _sorted(
    rows: list[tuple[Any, dict[str, Any]]], order: list[tuple[list[str], bool]]
) -> list[tuple[Any, dict[str, Any]]]:
    for path, descending in reversed(order):  # stable sorts, last key first
        rows.sort(key=lambda row: _sort_key(_lookup(row[1], path)), reverse=descending)
    return rows


def order_keys(raw: str | None) -> list[tuple[list[str], bool]]:
    """``$orderby=a/b desc,c`` -> [(["a", "b"], True), (["c"], False)]."""
    keys: list[tuple[list[str], bool]] = []
    for part in split_top(raw or "", ","):
        found = re.fullmatch(r"([A-Za-z_][\w/]*)(?:\s+(asc|desc))?", part.strip(), re.IGNORECASE)
        if not found:
            raise GraphError(400, "BadRequest", f"Invalid $orderby expression: {part!r}.")
        keys.append((found.group(1).split("/"), (found.group(2) or "").lower() == "desc"))
    return keys


def _sort_key(value: Any) -> tuple[int, Any]:
    """Nulls first (ascending), then numbers and booleans, then text without case."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value.lower())
    return (3, str(value))
