"""Mail: folders, messages, MIME, attachments, delta, and the writes a restore needs."""

from __future__ import annotations

import base64
import binascii
import copy
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from graphsim import changes, extended, ids, ops
from graphsim.content import BytesContent, Content, ContentSink
from graphsim.core import (
    Engine,
    apply_select,
    collection,
    delta_page,
    delta_resp,
    entity_resp,
    filtered,
    json_resp,
    mailbox_of,
    outlook_delta_state,
    prefer_applied,
    removed_entry,
    tenant_of,
)
from graphsim.http import (
    GraphError,
    Req,
    Resp,
    Router,
    nested_select,
    outlook_missing,
)
from graphsim.mail import (
    MSGFLAG_READ,
    MSGFLAG_UNSENT,
    PR_CLIENT_SUBMIT_TIME,
    PR_MESSAGE_DELIVERY_TIME,
    PR_MESSAGE_FLAGS,
    Addr,
    MailSpec,
    attached_message,
    attachment_json,
    extended_props,
    graph_addrs,
    html_to_text,
    message_json,
    mime_headers,
    parse_graph_datetime,
    parse_mime,
    render_mime,
)
from graphsim.state import Attachment, Folder, OItem, Tenant, User, utcnow
from graphsim.uploads import ATTACHMENT_MAX_SIZE, UploadSession, new_session_id

DIRECT_ATTACHMENT_LIMIT = 3 * 1024 * 1024


# -- lookups -----------------------------------------------------------------------------


def resolve_folder(tenant: Tenant, user: User, key: str, kind: str = "mail") -> Folder:
    folder_id = key
    if kind == "mail":
        folder_id = user.well_known.get(key.lower(), key)
    elif kind == "contact" and key.lower() == "contacts":
        folder_id = user.contacts_root
    elif kind == "calendar" and key.lower() == "calendar":
        folder_id = user.default_calendar
    folder = tenant.folders.get(folder_id)
    if folder is None or folder.user_id != user.id or folder.kind != kind:
        raise outlook_missing(folder_id)
    return folder


# Per folder kind: the route parameter naming a folder, the path segment above it, and the
# mailbox's default folder of that kind (what the route without a folder acts on).
_ADDRESSED: dict[str, tuple[str, str, Callable[[User], str]]] = {
    "mail": ("folder", "mailFolders", lambda u: u.msgfolderroot),
    "calendar": ("calendar", "calendars", lambda u: u.default_calendar),
    "contact": ("folder", "contactFolders", lambda u: u.contacts_root),
}


def addressed_folder(req: Req, kind: str) -> tuple[User, Folder, str]:
    """Graph answers many folder routes twice: under ``/users/{user}`` for the mailbox's
    default folder, and under the folder a route names. Both routes share a handler; this
    says which folder it is, and the path that names it by id (delta links point there)."""
    tenant, user = tenant_of(req), mailbox_of(req)
    param, segment, default = _ADDRESSED[kind]
    if param not in req.params:
        return user, tenant.folders[default(user)], f"/users/{user.id}"
    folder = resolve_folder(tenant, user, req.params[param], kind)
    return user, folder, f"/users/{user.id}/{segment}/{folder.id}"


def get_item(tenant: Tenant, user: User, item_id: str, kind: str) -> OItem:
    item = tenant.items.get(item_id)
    if item is None or item.deleted or item.user_id != user.id or item.kind != kind:
        raise outlook_missing(item_id)
    return item


def mime_source(item: OItem) -> Callable[[], bytes]:
    """What makes the message's MIME, holding copies of what it reads taken now: the call may
    run later, off the event loop and outside the world lock, while a PATCH changes the item."""
    if item.raw_mime is not None:
        raw = item.raw_mime
        return lambda: raw
    spec, attachments = copy.deepcopy(item.spec), list(item.attachments)
    include_bcc = bool(item.props.get("isDraft"))
    return lambda: render_mime(spec, attachments, include_bcc=include_bcc)


def message_mime(item: OItem) -> bytes:
    return mime_source(item)()


def message_entity(
    req: Req, user: User, item: OItem, status: int, headers: dict[str, str] | None = None
) -> Resp:
    return entity_resp(req, f"users('{user.id}')/messages", message_out(req, item), status, headers)


def message_out(req: Req, item: OItem) -> dict[str, Any]:
    text = req.prefer().get("outlook.body-content-type", "").lower() == "text"
    body = message_json(item, "https://outlook.office365.com", text_body=text)
    select = req.select()
    if select and any(s.lower() == "internetmessageheaders" for s in select):
        body["internetMessageHeaders"] = mime_headers(message_mime(item))
    if select and any(s.lower() == "uniquebody" for s in select):
        body["uniqueBody"] = body["body"]
    body["@odata.type"] = "#microsoft.graph.message"
    out = apply_select(body, select)
    # Expanded navigation properties come back whatever $select names.
    expanded = req.expand_options()
    if "attachments" in expanded:
        out["attachments"] = expanded_attachments(req, item.attachments, expanded["attachments"])
    return extended.expand(req, item, out)


def expanded_attachments(
    req: Req, attachments: list[Attachment], options: dict[str, str]
) -> list[dict[str, Any]]:
    """``$expand=attachments(...)``: its nested ``$select`` decides whether the bytes come."""
    select = nested_select(options)
    with_bytes = select is None or "contentbytes" in {s.lower() for s in select}
    beta = req.version == "beta"
    return [
        apply_select(attachment_json(a, with_bytes=with_bytes, beta=beta), select)
        for a in attachments
    ]


# -- $search on messages -------------------------------------------------------------------

SEARCH_LIMIT = 1000
_SEARCH_TERM = re.compile(r"""\s*(?:(\w+):)?('[^']*'|\\"[^"]*\\"|[^\s"]+)""")
SEARCH_DEFAULT = ("from", "subject", "body")
SEARCH_PROPERTIES = {
    "from",
    "to",
    "cc",
    "bcc",
    "participants",
    "subject",
    "body",
    "attachment",
    "hasattachment",
    "importance",
}


def message_query(req: Req, items: list[OItem]) -> list[OItem]:
    """``$search`` (Outlook's KQL subset), else ``$filter`` and ``$orderby``."""
    query = req.query.get("$search")
    if not query:
        return filtered(
            req,
            items,
            lambda m: extended.with_properties(message_json(m, ""), m),
            outlook_messages=True,
        )
    for other in ("$filter", "$orderby"):
        if req.query.get(other):
            raise GraphError(
                400, "BadRequest", f"The query parameter '{other}' is not supported with '$search'."
            )
    groups = _search_groups(query)
    found = [m for m in items if any(all(t(m) for t in group) for group in groups)]
    found.sort(key=lambda m: (m.spec.sent, m.id), reverse=True)
    return found[:SEARCH_LIMIT]


def _search_groups(query: str) -> list[list[Any]]:
    """Terms of a ``$search="..."`` value: ``prop:value`` or bare words (from, subject,
    body), joined by AND (also implicit) and OR; a word matches at the start of a word."""
    text = query.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise GraphError(400, "BadRequest", "The $search value must be enclosed in double quotes.")
    groups: list[list[Any]] = [[]]
    pos, inner = 0, text[1:-1]
    while pos < len(inner) and inner[pos:].strip():
        found = _SEARCH_TERM.match(inner, pos)
        if not found or found.end() == pos:
            raise GraphError(400, "BadRequest", f"Invalid $search value: {query!r}.")
        pos = found.end()
        prop, word = (found.group(1) or "").lower(), found.group(2)
        if word[:1] in "'\\" and len(word) > 1:  # a quoted phrase
            word = word.strip("\\").strip("'\"")
        if not prop and word in ("AND", "OR", "NOT"):
            if word == "OR":
                groups.append([])
            elif word == "NOT":
                raise GraphError(400, "BadRequest", "graphsim does not search with NOT.")
            continue
        if prop and prop not in SEARCH_PROPERTIES:
            raise GraphError(400, "BadRequest", f"graphsim does not search the property '{prop}'.")
        groups[-1].append(_search_term(prop, word))
    if not all(groups):
        raise GraphError(400, "BadRequest", f"Invalid $search value: {query!r}.")
    return groups


def _search_term(prop: str, word: str) -> Any:
    pattern = re.compile(r"(?<!\w)" + re.escape(word), re.IGNORECASE)

    def people(addrs: list[Addr]) -> str:
        return " ".join(f"{a.name} {a.address}" for a in addrs)

    def texts(item: OItem) -> list[str]:
        spec: MailSpec = item.spec
        fields = {
            "from": people([spec.sender]),
            "to": people(spec.to),
            "cc": people(spec.cc),
            "bcc": people(spec.bcc),
            "subject": spec.subject,
            "body": spec.text if spec.text is not None else html_to_text(spec.html or ""),
            "attachment": " ".join(a.name for a in item.attachments),
        }
        fields["participants"] = " ".join(fields[k] for k in ("from", "to", "cc", "bcc"))
        return [fields[k] for k in ((prop,) if prop else SEARCH_DEFAULT)]

    def test(item: OItem) -> bool:
        if prop == "hasattachment":
            visible = any(not a.is_inline for a in item.attachments)
            return visible == (word.lower() == "true")
        if prop == "importance":
            return bool(item.spec.importance == word.lower())
        return any(pattern.search(t) for t in texts(item))

    return test


# -- message delta options ----------------------------------------------------------------

_DELTA_FILTER = re.compile(
    r"^\s*receivedDateTime\s+(ge|gt)\s+(\d{4}-\d{2}-\d{2}(?:T[\d:.]+(?:Z|[+-]\d{2}:\d{2})?)?)\s*$",
    re.IGNORECASE,
)


def delta_query(req: Req) -> dict[str, Any]:
    """The options of a first message delta request, as its links will carry them.

    message: delta supports ``$select``, ``$top`` and ``$expand``; ``$filter`` only as
    ``receivedDateTime ge|gt {value}``, ``$orderby`` only as ``receivedDateTime desc``, the
    ``changeType`` option (created, updated, deleted) and no ``$search``.
    """
    query: dict[str, Any] = {
        "select": req.query.get("$select", ""),
        "expand": req.query.get("$expand", ""),
    }
    raw_filter = req.query.get("$filter")
    if raw_filter:
        found = _DELTA_FILTER.match(raw_filter)
        if not found:
            raise GraphError(
                400,
                "ErrorInvalidUrlQueryFilter",
                "Delta supports only receivedDateTime ge or gt in $filter.",
            )
        try:
            value = parse_graph_datetime(found.group(2))
        except ValueError as exc:
            raise GraphError(400, "ErrorInvalidUrlQueryFilter", str(exc)) from exc
        query["since"] = value.isoformat()
        query["strict"] = found.group(1).lower() == "gt"
    raw_order = req.query.get("$orderby")
    if raw_order:
        if " ".join(raw_order.split()).lower() != "receiveddatetime desc":
            raise GraphError(
                400, "ErrorInvalidUrlQuery", "Delta supports only $orderby=receivedDateTime desc."
            )
        query["orderby"] = True
    if req.query.get("$search"):
        raise GraphError(400, "ErrorInvalidUrlQuery", "Delta does not support $search.")
    change = req.query.get("changeType")
    if change is not None:
        if change.lower() not in ("created", "updated", "deleted"):
            raise GraphError(400, "ErrorInvalidUrlQuery", f"Invalid changeType '{change}'.")
        query["change"] = change.lower()
    return query


def _iso_or_none(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def _newest_first(entry: tuple[int, str, Any, bool]) -> tuple[int, str]:
    """Removals first, then by receivedDateTime, newest first (whole seconds, then id)."""
    obj = entry[2]
    if obj is None:
        return (-(1 << 62), entry[1])
    return (-int(obj.spec.received.timestamp()), entry[1])


def folder_json(tenant: Tenant, folder: Folder) -> dict[str, Any]:
    members = tenant.members.get(folder.id, {})
    children = [f for f in tenant.folders.values() if f.parent_id == folder.id]
    unread = sum(1 for i in members if not tenant.items[i].props.get("isRead"))
    return {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id or folder.id,
        "childFolderCount": len(children),
        "unreadItemCount": unread if folder.kind == "mail" else 0,
        "totalItemCount": len(members),
        "sizeInBytes": 0,
        "isHidden": folder.hidden,
    }


# -- creating messages -------------------------------------------------------------------


def spec_from_json(body: dict[str, Any], user: User, tenant: Tenant) -> MailSpec:
    props = extended_props(body)
    now = utcnow()
    sent = (
        parse_graph_datetime(props[PR_CLIENT_SUBMIT_TIME.lower()])
        if PR_CLIENT_SUBMIT_TIME.lower() in props
        else now
    )
    received = (
        parse_graph_datetime(props[PR_MESSAGE_DELIVERY_TIME.lower()])
        if PR_MESSAGE_DELIVERY_TIME.lower() in props
        else sent
    )
    content = body.get("body") or {}
    ctype = str(content.get("contentType", "text")).lower()
    text_value = str(content.get("content") or "")
    sender = graph_addrs(
        [body.get("from")]
        if body.get("from")
        else [body.get("sender")]
        if body.get("sender")
        else []
    )
    headers = []
    for header in body.get("internetMessageHeaders") or []:
        name = str(header.get("name", ""))
        if not name.lower().startswith("x-"):
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                "The internet message header name should start with 'x-' or 'X-'.",
            )
        headers.append((name, str(header.get("value", ""))))
    key = tenant.new_name("mid")
    return MailSpec(
        subject=str(body.get("subject") or ""),
        sender=sender[0] if sender else Addr(user.display_name, user.upn),
        to=graph_addrs(body.get("toRecipients")),
        cc=graph_addrs(body.get("ccRecipients")),
        bcc=graph_addrs(body.get("bccRecipients")),
        reply_to=graph_addrs(body.get("replyTo")),
        sent=sent,
        received=received,
        message_id=str(body.get("internetMessageId") or f"<{ids.guid(key)}@{tenant.domain}>"),
        text=text_value if ctype == "text" else html_to_text(text_value),
        html=text_value if ctype == "html" else None,
        importance=str(body.get("importance") or "normal").lower(),
        extra_headers=headers,
    )


def _item_attachment(
    body: dict[str, Any], engine: Engine, tenant: Tenant, user: User, *, beta: bool
) -> Attachment:
    """An attached Outlook item: a message is kept as one (its own attachments too), any
    other item type as the JSON it came with."""
    now = utcnow()
    name = str(body.get("name") or "")
    inner = body.get("item") or {}
    inner_type = str(inner.get("@odata.type", "#microsoft.graph.message")).rsplit(".", 1)[-1]
    if inner_type.lower() == "message":
        spec = spec_from_json(inner, user, tenant)
        # An attached message may carry attachments of its own (another message too).
        nested = [
            attachment_from_json(a, engine, tenant, user, beta=beta)
            for a in inner.get("attachments") or []
        ]
        item_id = ids.outlook_id("attitem", tenant.new_name("ai"))
        for index, att in enumerate(nested):
            att.id = att.id or ids.attachment_id(item_id, index)
        return attached_message(
            "",
            name or spec.subject,
            now,
            item_id=item_id,
            change_key=ids.change_key("ai", now),
            spec=spec,
            attachments=nested,
        )
    return Attachment(
        id="",
        kind="item",
        name=name or str(inner.get("subject") or inner_type),
        content_type=None,
        modified=now,
        item=dict(inner),
        item_type=inner_type.lower(),
    )


# What only beta's referenceAttachment has: a link attachment cannot be made on v1.0.
LINK_PROPERTIES = ("sourceUrl", "providerType", "permission", "isFolder")


def attachment_from_json(
    body: dict[str, Any], engine: Engine, tenant: Tenant, user: User, *, beta: bool
) -> Attachment:
    kind = (
        str(body.get("@odata.type", "#microsoft.graph.fileAttachment")).rsplit(".", 1)[-1].lower()
    )
    now = utcnow()
    name = str(body.get("name") or "")
    if kind == "fileattachment":
        try:
            data = base64.b64decode(str(body.get("contentBytes") or ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise GraphError(
                400, "ErrorInvalidRequest", "contentBytes is not valid base64."
            ) from exc
        if len(data) > DIRECT_ATTACHMENT_LIMIT:
            raise GraphError(
                413,
                "ErrorAttachmentSizeLimitExceeded",
                "The attachment is larger than 3 MB; use an upload session.",
            )
        return Attachment(
            id="",
            kind="file",
            name=name or "attachment",
            modified=now,
            content_type=str(body.get("contentType") or ops.guess_mime(name)),
            content=BytesContent.of(data),
            content_id=body.get("contentId"),
            is_inline=bool(body.get("isInline", False)),
        )
    if kind == "itemattachment":
        return _item_attachment(body, engine, tenant, user, beta=beta)
    if kind == "referenceattachment":
        unknown = [p for p in LINK_PROPERTIES if p in body] if not beta else []
        if unknown:
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The property '{unknown[0]}' does not exist on type "
                "'microsoft.graph.referenceAttachment'.",
            )
        if not body.get("sourceUrl"):
            raise GraphError(
                400,
                "ErrorInvalidProperty",
                "The property 'SourceUrl' is required when creating the entity.",
            )
        return Attachment(
            id="",
            kind="reference",
            name=name,
            content_type=None,
            modified=now,
            source_url=body.get("sourceUrl"),
            provider=str(body.get("providerType") or "other"),
            permission=str(body.get("permission") or "other"),
            is_folder=bool(body.get("isFolder", False)),
        )
    raise GraphError(400, "ErrorInvalidRequest", f"Unsupported attachment type '{kind}'.")


def create_from_json(engine: Engine, req: Req, user: User, folder: Folder) -> OItem:
    tenant = tenant_of(req)
    body = req.json()
    for forbidden in ("id", "changeKey"):
        if forbidden in body:
            raise GraphError(
                400, "ErrorInvalidPropertySet", f"The property '{forbidden}' is read-only."
            )
    spec = spec_from_json(body, user, tenant)
    props = extended_props(body)
    flags_raw = props.get(PR_MESSAGE_FLAGS.lower())
    if flags_raw is not None:
        try:
            flags = int(flags_raw, 0) if flags_raw.lower().startswith("0x") else int(flags_raw)
        except ValueError as exc:
            raise GraphError(
                400, "ErrorInvalidExtendedPropertyValue", "Invalid Integer value."
            ) from exc
        is_draft = bool(flags & MSGFLAG_UNSENT)
        is_read = bool(flags & MSGFLAG_READ) or bool(body.get("isRead", False))
    else:
        is_draft = True
        is_read = bool(body.get("isRead", True))
    beta = req.version == "beta"
    attachments = [
        attachment_from_json(a, engine, tenant, user, beta=beta)
        for a in body.get("attachments") or []
    ]
    item = ops.new_item(
        tenant,
        user,
        "message",
        folder.id,
        spec=spec,
        attachments=attachments,
        props={
            "isRead": is_read,
            "isDraft": is_draft,
            "categories": list(body.get("categories") or []),
            "flag": dict(body.get("flag") or {"flagStatus": "notFlagged"}),
        },
    )
    extended.store(item, body)
    if not is_draft:
        item.created = spec.received
    return item


def create_from_mime(req: Req, user: User) -> OItem:
    tenant = tenant_of(req)
    try:
        raw = base64.b64decode(req.body.strip(), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise GraphError(
            400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
        ) from exc
    if not raw.strip() or b":" not in raw.split(b"\n", 1)[0]:
        raise GraphError(400, "ErrorMimeContentInvalid", "The MIME content is invalid.")
    name = tenant.new_name("mime")
    spec, attachments = parse_mime(raw, id_parts=(name,))
    item = ops.new_item(
        tenant,
        user,
        "message",
        user.well_known["drafts"],
        spec=spec,
        raw_mime=raw,
        attachments=attachments,
        props={"isRead": True, "isDraft": True, "categories": []},
    )
    return item


# -- attachments (shared with events) ------------------------------------------------------


def attachment_out(req: Req, att: Attachment, *, with_bytes: bool = True) -> dict[str, Any]:
    select = req.select()
    if select and "contentbytes" not in {s.lower() for s in select}:
        with_bytes = False  # do not base64 a 25 MB attachment only to drop it
    body = apply_select(
        attachment_json(att, with_bytes=with_bytes, beta=req.version == "beta"), select
    )
    # microsoft.graph.itemattachment/item is a navigation property: $select never drops it.
    expanded = req.expand_options()
    wanted = next(
        (opts for name, opts in expanded.items() if name.rsplit("/", 1)[-1] == "item"), None
    )
    if att.kind == "item" and wanted is not None:
        inner_select = nested_select(wanted)
        if isinstance(att.item, OItem):
            inner = message_json(att.item, "https://outlook.office365.com")
            inner["@odata.type"] = "#microsoft.graph.message"
            body["item"] = apply_select(inner, inner_select)
        elif isinstance(att.item, dict):
            inner = {"@odata.type": f"#microsoft.graph.{att.item_type}", **att.item}
            body["item"] = apply_select(inner, inner_select)
    return body


def _find_attachment(item: OItem, att_id: str) -> Attachment:
    for att in item.attachments:
        if att.id == att_id:
            return att
    raise outlook_missing(att_id)


def _attachment_owner(req: Req, kind: str) -> OItem:
    tenant = tenant_of(req)
    user = mailbox_of(req)
    if kind == "event":  # an event id may name one occurrence of a series
        from graphsim.routes_calendar import attachment_owner

        return attachment_owner(tenant, user, req.params["item"], writing=req.method != "GET")
    return get_item(tenant, user, req.params["item"], kind)


def list_attachments(engine: Engine, req: Req, kind: str) -> Resp:
    item = _attachment_owner(req, kind)
    values = [attachment_out(req, a) for a in item.attachments]
    return collection(req, engine, "attachments", values, default=100, maximum=1000)


def get_attachment(engine: Engine, req: Req, kind: str) -> Resp:
    att = _find_attachment(_attachment_owner(req, kind), req.params["att"])
    return json_resp(attachment_out(req, att))


def attachment_value(engine: Engine, req: Req, kind: str) -> Resp:
    att = _find_attachment(_attachment_owner(req, kind), req.params["att"])
    if att.kind == "file" and att.content is not None:
        return Resp(
            200,
            att.content.read(),
            {"Content-Type": att.content_type or "application/octet-stream"},
        )
    if att.kind == "item" and isinstance(att.item, OItem):
        return Resp(200, message_mime(att.item), {"Content-Type": "message/rfc822"})
    if att.kind == "item":
        return Resp(
            200,
            _item_text(att),
            {"Content-Type": "text/calendar" if att.item_type == "event" else "text/x-vcard"},
        )
    raise GraphError(
        405, "ErrorInvalidRequest", "The $value of a reference attachment is not supported."
    )


def add_attachment(engine: Engine, req: Req, kind: str) -> Resp:
    tenant = tenant_of(req)
    user = mailbox_of(req)
    item = _attachment_owner(req, kind)
    att = attachment_from_json(req.json(), engine, tenant, user, beta=req.version == "beta")
    add_to_item(tenant, item, att)
    return entity_resp(req, "attachments", attachment_out(req, att), 201)


def delete_attachment(engine: Engine, req: Req, kind: str) -> Resp:
    tenant = tenant_of(req)
    item = _attachment_owner(req, kind)
    att = _find_attachment(item, req.params["att"])
    item.attachments.remove(att)
    _materialise(item)
    touch_owner(tenant, item)
    return Resp(204)


def attachment_session(engine: Engine, req: Req, kind: str) -> Resp:
    tenant = tenant_of(req)
    item = _attachment_owner(req, kind)
    spec = req.json().get("AttachmentItem") or req.json().get("attachmentItem") or {}
    if str(spec.get("attachmentType", "file")).lower() != "file":
        raise GraphError(400, "ErrorInvalidRequest", "Only file attachments can be uploaded.")
    size = int(spec.get("size") or 0)
    name = str(spec.get("name") or "")
    if not name or size <= 0:
        raise GraphError(400, "ErrorInvalidRequest", "AttachmentItem needs a name and a size.")
    if size > ATTACHMENT_MAX_SIZE:
        raise GraphError(
            413,
            "ErrorAttachmentSizeLimitExceeded",
            "The attachment exceeds the maximum size of 150 MB.",
        )
    session_id = new_session_id()
    session = UploadSession(
        id=session_id,
        kind="attachment",
        tenant_id=tenant.id,
        expires=time.time() + 3600 * 2,
        commit=partial(_commit_attachment, engine, tenant, item, kind, session_id, spec),
        sink=ContentSink(engine.spill_dir),
        total=size,
    )
    engine.upload_sessions[session_id] = session
    return json_resp(
        {
            "@odata.context": f"{req.graph_base}/$metadata#microsoft.graph.uploadSession",
            "uploadUrl": f"{engine.base_url}/_upload/{session_id}",
            **session.status_body(),
        },
        201,
    )


def _commit_attachment(
    engine: Engine,
    tenant: Tenant,
    item: OItem,
    kind: str,
    session_id: str,
    spec: dict[str, Any],
    content: Content,
) -> Resp:
    """The last fragment of an attachment upload session arrived: attach what it carried."""
    name = str(spec.get("name") or "")
    with engine.world.lock:
        att = Attachment(
            id="",
            kind="file",
            name=name,
            modified=utcnow(),
            content_type=str(spec.get("contentType") or ops.guess_mime(name)),
            content=content,
            content_id=spec.get("contentId"),
            is_inline=bool(spec.get("isInline", False)),
        )
        add_to_item(tenant, item, att)
        engine.upload_sessions.pop(session_id, None)
        noun = "Messages" if kind == "message" else "Events"
        location = (
            f"https://outlook.office.com/api/v2.0/Users('{item.user_id}')/"
            f"{noun}('{item.id}')/Attachments('{att.id}')"
        )
        return Resp(201, None, {"Location": location})


def add_attachment_routes(router: Router, prefix: str, kind: str) -> None:
    """The attachment endpoints under ``prefix`` (which names the item ``{item}``), for
    messages or events (``kind``): the same handlers serve both."""
    for method, suffix, handler in (
        ("GET", "/attachments", list_attachments),
        ("GET", "/attachments/{att}", get_attachment),
        ("GET", "/attachments/{att}/$value", attachment_value),
        ("POST", "/attachments", add_attachment),
        ("DELETE", "/attachments/{att}", delete_attachment),
        ("POST", "/attachments/createUploadSession", attachment_session),
    ):
        router.add(method, prefix + suffix, "exchange")(partial(handler, kind=kind))


def _item_text(att: Attachment) -> bytes:
    item = att.item if isinstance(att.item, dict) else {}
    if att.item_type == "event":
        return (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\n"
            f"SUMMARY:{item.get('subject', '')}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        ).encode()
    return (
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{item.get('displayName', '')}\r\nEND:VCARD\r\n".encode()
    )


def _materialise(item: OItem) -> None:
    """Once an imported message's attachments change, Exchange re-renders its MIME."""
    if item.kind == "message" and item.raw_mime is not None:
        item.raw_mime = None


def add_to_item(tenant: Tenant, item: OItem, att: Attachment) -> None:
    att.id = ids.attachment_id(item.id, tenant.new_name("att"))
    item.attachments.append(att)
    _materialise(item)
    if item.kind == "event":
        item.props["hasAttachments"] = True
    touch_owner(tenant, item)


def touch_owner(tenant: Tenant, item: OItem) -> None:
    """A change to an exception's attachments changes its series master."""
    master = tenant.items.get(item.master_id) if item.master_id else None
    tenant.touch_item(master or item)


# -- routes ----------------------------------------------------------------------------------


router = Router()


@router.add("GET", "/users/{user}/mailFolders", "exchange")
def list_top_folders(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    hidden = req.query.get("includeHiddenFolders", "").lower() == "true"
    folders = [
        f
        for f in tenant.user_folders(user.id, "mail")
        if f.parent_id == user.msgfolderroot and (hidden or not f.hidden)
    ]
    folders.sort(key=lambda f: f.display_name.lower())
    values = [apply_select(folder_json(tenant, f), req.select()) for f in folders]
    return collection(req, engine, f"users('{user.id}')/mailFolders", values, default=10)


@router.add("GET", "/users/{user}/mailFolders/delta", "exchange")
def folders_delta(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    path = f"/users/{user.id}/mailFolders/delta"
    return folder_delta(engine, req, tenant, user, "mail", path, partial(folder_json, tenant))


@router.add("GET", "/users/{user}/mailFolders/{folder}", "exchange")
def get_folder(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    folder = resolve_folder(tenant, user, req.params["folder"])
    body = apply_select(folder_json(tenant, folder), req.select())
    return entity_resp(req, f"users('{user.id}')/mailFolders", body)


@router.add("GET", "/users/{user}/mailFolders/{folder}/childFolders", "exchange")
def child_folders(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    folder = resolve_folder(tenant, user, req.params["folder"])
    hidden = req.query.get("includeHiddenFolders", "").lower() == "true"
    children = sorted(
        (
            f
            for f in tenant.folders.values()
            if f.parent_id == folder.id and (hidden or not f.hidden)
        ),
        key=lambda f: f.display_name.lower(),
    )
    values = [apply_select(folder_json(tenant, f), req.select()) for f in children]
    return collection(req, engine, "mailFolders", values, default=10)


def create_folder(engine: Engine, req: Req, parent: Folder, user: User) -> Resp:
    tenant = tenant_of(req)
    name = str(req.json().get("displayName") or "").strip()
    if not name:
        raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
    for sibling in tenant.folders.values():
        if sibling.parent_id == parent.id and sibling.display_name.lower() == name.lower():
            raise GraphError(
                409, "ErrorFolderExists", "A folder with the specified name already exists."
            )
    folder = ops.new_folder(
        tenant,
        user,
        parent.kind,
        name,
        parent.id,
        hidden=bool(req.json().get("isHidden", False)),
    )
    return entity_resp(req, f"users('{user.id}')/mailFolders", folder_json(tenant, folder), 201)


@router.add("POST", "/users/{user}/mailFolders", "exchange")
@router.add("POST", "/users/{user}/mailFolders/{folder}/childFolders", "exchange")
def create_child_folder(engine: Engine, req: Req) -> Resp:
    user, parent, _path = addressed_folder(req, "mail")
    return create_folder(engine, req, parent, user)


@router.add("PATCH", "/users/{user}/mailFolders/{folder}", "exchange")
def patch_folder(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    folder = resolve_folder(tenant, user, req.params["folder"])
    name = req.json().get("displayName")
    if name:
        folder.display_name = str(name)
        tenant.touch_folder(folder)
    return json_resp(folder_json(tenant, folder))


@router.add("DELETE", "/users/{user}/mailFolders/{folder}", "exchange")
def delete_folder(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    folder = resolve_folder(tenant, user, req.params["folder"])
    if folder.well_known:
        raise GraphError(
            403, "ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted."
        )
    tenant.delete_folder(folder)
    return Resp(204)


@router.add("GET", "/users/{user}/mailFolders/{folder}/messages", "exchange")
def list_folder_messages(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    folder = resolve_folder(tenant, user, req.params["folder"])
    items = sorted(
        tenant.folder_items(folder.id), key=lambda m: (m.spec.received, m.id), reverse=True
    )
    return collection(
        req,
        engine,
        f"users('{user.id}')/mailFolders('{folder.id}')/messages",
        message_query(req, items),
        default=10,
        maximum=1000,
        render=lambda m: message_out(req, m),
    )


@router.add("POST", "/users/{user}/mailFolders/{folder}/messages", "exchange")
def create_in_folder(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    folder = resolve_folder(tenant, user, req.params["folder"])
    if req.headers.get("content-type", "").startswith("text/plain"):
        raise GraphError(
            400, "ErrorInvalidRequest", "MIME content can only be posted to /messages."
        )
    item = create_from_json(engine, req, user, folder)
    return message_entity(req, user, item, 201)


@router.add("GET", "/users/{user}/mailFolders/{folder}/messages/delta", "exchange")
def messages_delta(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    folder = resolve_folder(tenant, user, req.params["folder"])
    path = f"/users/{user.id}/mailFolders/{folder.id}/messages/delta"
    state = outlook_delta_state(
        req, engine, collection=folder.id, owner=user.id, path=path, first=partial(delta_query, req)
    )
    # Every option travels in the links: later pages and rounds apply the first query.
    query = state.query
    req.query["$select"] = str(query.get("select") or "")
    req.query["$expand"] = str(query.get("expand") or "")
    since = _iso_or_none(query.get("since"))
    strict = bool(query.get("strict"))
    change = str(query.get("change") or "")

    def wanted(item: OItem) -> bool:
        received = item.spec.received
        if since is not None and (received < since or (strict and received == since)):
            return False
        if change == "created":
            return item.joined > state.since
        if change == "updated":
            return item.joined <= state.since
        return change != "deleted"

    live = ((m.seq, m.id, m) for m in tenant.folder_items(folder.id) if wanted(m))
    removed = (
        ((seq, i, None) for i, seq in tenant.tombs.get(folder.id, {}).items())
        if change in ("", "deleted")
        else iter(())
    )
    order = _newest_first if query.get("orderby") else None
    page, more = delta_page(state, live, removed, order=order)
    round_since = None if state.fresh else state.since
    values = [
        removed_entry("message", item_id)
        if gone
        else changes.delta_entry(obj, message_out(req, obj), round_since)
        for _seq, item_id, obj, gone in page
    ]
    return delta_resp(req, engine, state, page, more, entity="message", values=values)


@router.add("GET", "/users/{user}/messages", "exchange")
def list_messages(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    visible = {f.id for f in tenant.user_folders(user.id, "mail") if not f.hidden}
    items = sorted(
        (
            i
            for i in tenant.items.values()
            if i.kind == "message" and i.user_id == user.id and i.folder_id in visible
        ),
        key=lambda m: (m.spec.received, m.id),
        reverse=True,
    )
    return collection(
        req,
        engine,
        f"users('{user.id}')/messages",
        message_query(req, items),
        default=10,
        render=lambda m: message_out(req, m),
    )


@router.add("POST", "/users/{user}/messages", "exchange")
def create_message(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    if req.headers.get("content-type", "").split(";")[0].strip() == "text/plain":
        item = create_from_mime(req, user)
    else:
        item = create_from_json(engine, req, user, tenant.folders[user.well_known["drafts"]])
    return message_entity(req, user, item, 201)


@router.add("GET", "/users/{user}/messages/{item}", "exchange")
def get_message(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    item = get_item(tenant, user, req.params["item"], "message")
    return message_entity(req, user, item, 200, prefer_applied(req, 0))


@router.add("GET", "/users/{user}/messages/{item}/$value", "exchange")
def get_mime(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    item = get_item(tenant, user, req.params["item"], "message")
    return Resp(200, None, {"Content-Type": "message/rfc822"}, deferred=mime_source(item))


@router.add("PATCH", "/users/{user}/messages/{item}", "exchange")
def patch_message(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    item = get_item(tenant, user, req.params["item"], "message")
    apply_message_patch(tenant, item, req.json())
    return json_resp(message_out(req, item))


@router.add("DELETE", "/users/{user}/messages/{item}", "exchange")
@router.add("POST", "/users/{user}/messages/{item}/permanentDelete", "exchange")
def delete_message(engine: Engine, req: Req) -> Resp:
    """The simulator keeps no Recoverable Items: a delete and a permanent delete both leave
    the message gone, a tombstone for delta."""
    tenant, user = tenant_of(req), mailbox_of(req)
    tenant.delete_item(get_item(tenant, user, req.params["item"], "message"))
    return Resp(204)


@router.add("POST", "/users/{user}/messages/{item}/move", "exchange")
def move_message(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    item = get_item(tenant, user, req.params["item"], "message")
    dest = resolve_folder(tenant, user, str(req.json().get("destinationId") or ""))
    tenant.move_item(item, dest.id)
    return json_resp(message_out(req, item), 201)


@router.add("POST", "/users/{user}/messages/{item}/copy", "exchange")
def copy_message(engine: Engine, req: Req) -> Resp:
    tenant, user = tenant_of(req), mailbox_of(req)
    item = get_item(tenant, user, req.params["item"], "message")
    dest = resolve_folder(tenant, user, str(req.json().get("destinationId") or ""))
    copy = ops.new_item(
        tenant,
        user,
        "message",
        dest.id,
        spec=item.spec,
        raw_mime=item.raw_mime,
        attachments=[_copy_att(a) for a in item.attachments],
        props=dict(item.props),
    )
    return json_resp(message_out(req, copy), 201)


add_attachment_routes(router, "/users/{user}/messages/{item}", "message")


def _copy_att(att: Attachment) -> Attachment:
    return Attachment(**{**att.__dict__, "id": ""})


def apply_message_patch(tenant: Tenant, item: OItem, body: dict[str, Any]) -> None:
    editable = {
        "isRead",
        "categories",
        "flag",
        "importance",
        "subject",
        "body",
        "toRecipients",
        "ccRecipients",
        "bccRecipients",
        "inferenceClassification",
        "replyTo",
        "from",
        "sender",
        "singleValueExtendedProperties",
    }
    unknown = set(body) - editable
    if unknown:
        raise GraphError(
            400,
            "ErrorInvalidPropertyUpdate",
            f"The property '{sorted(unknown)[0]}' cannot be updated.",
        )
    if "isRead" in body:
        item.props["isRead"] = bool(body["isRead"])
    if "categories" in body:
        item.props["categories"] = list(body["categories"] or [])
    if "flag" in body:
        item.props["flag"] = dict(body["flag"] or {"flagStatus": "notFlagged"})
    spec: MailSpec = item.spec
    changed_mime = False
    if "importance" in body:
        spec.importance = str(body["importance"]).lower()
        changed_mime = True
    if "subject" in body:
        spec.subject = str(body["subject"] or "")
        changed_mime = True
    if "body" in body:
        content = body["body"] or {}
        value = str(content.get("content") or "")
        if str(content.get("contentType", "text")).lower() == "html":
            spec.html, spec.text = value, html_to_text(value)
        else:
            spec.html, spec.text = None, value
        changed_mime = True
    for field_name, attr in (
        ("toRecipients", "to"),
        ("ccRecipients", "cc"),
        ("bccRecipients", "bcc"),
        ("replyTo", "reply_to"),
    ):
        if field_name in body:
            setattr(spec, attr, graph_addrs(body[field_name]))
            changed_mime = True
    extended.store(item, body)
    if changed_mime:
        _materialise(item)
    tenant.touch_item(item)


def folder_delta(
    engine: Engine,
    req: Req,
    tenant: Tenant,
    user: User,
    kind: str,
    path: str,
    render: Callable[[Folder], dict[str, Any]],
) -> Resp:
    """Mail and contact folders' delta: one enumeration, each kind rendering its folders."""
    collection_key = tenant.folder_collection(user.id, kind)
    state = outlook_delta_state(
        req, engine, collection=collection_key, owner=user.id, path=path, size=100
    )
    # Like the folder listings, delta leaves out the roots (Top of Information Store, and the
    # default Contacts folder whose children /contactFolders lists).
    roots = {user.msgfolderroot} if kind == "mail" else {user.contacts_root}
    folders = [
        f
        for f in tenant.user_folders(user.id, kind)
        if f.id not in roots and not (kind == "mail" and f.parent_id is None)
    ]
    live = ((f.seq, f.id, f) for f in folders)
    removed = ((seq, i, None) for i, seq in tenant.tombs.get(collection_key, {}).items())
    page, more = delta_page(state, live, removed)
    name = "mailFolder" if kind == "mail" else "contactFolder"
    since = None if state.fresh else state.since
    values = [
        removed_entry(name, folder_id) if gone else changes.delta_entry(obj, render(obj), since)
        for _seq, folder_id, obj, gone in page
    ]
    return delta_resp(req, engine, state, page, more, entity=name, values=values)


def now_utc() -> datetime:
    return datetime.now(UTC)
