"""The beta surface's own answers, where beta differs from v1.0 in ways backup clients use.

Everything else under ``/beta`` is answered by the v1.0 routes (``server._match``): for the
resources graphsim serves, beta returns the same properties plus some v1.0 lacks, so the
v1.0 answer is a faithful subset. Templates here start with ``/beta`` so that the counters
tell the two surfaces apart.
"""

from __future__ import annotations

from typing import Any

from graphsim.core import (
    Engine,
    apply_select,
    collection,
    delta_page,
    delta_resp,
    mailbox_of,
    outlook_delta_state,
    removed_entry,
    tenant_of,
)
from graphsim.http import Req, Resp, Router
from graphsim.routes_mail import folder_json, resolve_folder
from graphsim.state import Folder, OItem, Tenant, User


def _all_mail_folders(tenant: Tenant, user: User, hidden: bool) -> list[Folder]:
    """Every folder below Top of Information Store, each parent before its children
    (siblings by name), hidden ones (and their subtrees) only when asked for."""
    children: dict[str, list[Folder]] = {}
    for folder in tenant.user_folders(user.id, "mail"):
        if folder.parent_id:
            children.setdefault(folder.parent_id, []).append(folder)
    out: list[Folder] = []
    stack = sorted(
        children.get(user.msgfolderroot, []), key=lambda f: f.display_name.lower(), reverse=True
    )
    while stack:
        folder = stack.pop()
        if folder.hidden and not hidden:
            continue
        out.append(folder)
        stack.extend(
            sorted(children.get(folder.id, []), key=lambda f: f.display_name.lower(), reverse=True)
        )
    return out


def _event_stub(event: OItem) -> dict[str, Any]:
    """What beta's event delta returns for an event: its id, type, start and end only (the
    client reads the rest with a GET of the event)."""
    return {
        "@odata.type": "#microsoft.graph.event",
        "id": event.id,
        "type": "seriesMaster" if event.props.get("recurrence") else "singleInstance",
        "start": event.props["start"],
        "end": event.props["end"],
    }


router = Router()


@router.add("GET", "/beta/users/{user}/mailFolders", "exchange")
def all_mail_folders(engine: Engine, req: Req) -> Resp:
    """Beta lists every mail folder of the mailbox, nested ones included, where v1.0
    lists the top level only (clients walk ``childFolders`` there)."""
    tenant, user = tenant_of(req), mailbox_of(req)
    hidden = req.query.get("includeHiddenFolders", "").lower() == "true"
    folders = _all_mail_folders(tenant, user, hidden)
    return collection(
        req,
        engine,
        f"users('{user.id}')/mailFolders",
        folders,
        render=lambda f: apply_select(folder_json(tenant, f), req.select()),
        default=10,
    )


def events_delta(engine: Engine, req: Req, user: User, calendar: Folder, path: str) -> Resp:
    """Beta's event delta over a calendar: series masters and single events, no time
    window, each as id/type/start/end; removed and moved-out events as ``@removed``."""
    tenant = tenant_of(req)
    collection = f"events:{calendar.id}"
    state = outlook_delta_state(req, engine, collection=collection, owner=user.id, path=path)
    live = ((e.seq, e.id, e) for e in tenant.folder_items(calendar.id) if not e.deleted)
    removed = ((seq, i, None) for i, seq in tenant.tombs.get(calendar.id, {}).items())
    page, more = delta_page(state, live, removed)
    values = [
        removed_entry("event", i) if gone else _event_stub(obj) for _seq, i, obj, gone in page
    ]
    return delta_resp(req, engine, state, page, more, entity="event", values=values)


@router.add("GET", "/beta/users/{user}/calendars/{calendar}/events/delta", "exchange")
def calendar_events_delta(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    calendar = resolve_folder(tenant, user, req.params["calendar"], "calendar")
    return events_delta(
        engine, req, user, calendar, f"/users/{user.id}/calendars/{calendar.id}/events/delta"
    )


@router.add("GET", "/beta/users/{user}/events/delta", "exchange")
def default_events_delta(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    calendar = tenant.folders[user.default_calendar]
    return events_delta(engine, req, user, calendar, f"/users/{user.id}/events/delta")
