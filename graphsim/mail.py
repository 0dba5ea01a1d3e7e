"""Messages as RFC 5322 bytes and as Graph JSON, derived from one description.

A message is either imported MIME (kept byte for byte and parsed once for its fields) or a
``MailSpec`` rendered to MIME on demand, the way Exchange renders an item it stores as
properties. Rendering is deterministic (fixed boundaries), so generated mailboxes need no
memory for their MIME and always serve the same bytes.
"""

from __future__ import annotations

import base64
import email
import email.policy
import functools
import html as html_lib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage, Message
from email.utils import format_datetime, formataddr, getaddresses, parsedate_to_datetime
from typing import Any

import pybase64

from graphsim import ids
from graphsim.content import BytesContent
from graphsim.state import Attachment, OItem, iso

PR_MESSAGE_FLAGS = "Integer 0x0E07"
PR_CLIENT_SUBMIT_TIME = "SystemTime 0x0039"
PR_MESSAGE_DELIVERY_TIME = "SystemTime 0x0E06"
MSGFLAG_READ = 0x1
MSGFLAG_UNSENT = 0x8


@dataclass
class Addr:
    name: str
    address: str

    def graph(self) -> dict[str, Any]:
        return {"emailAddress": {"name": self.name, "address": self.address}}


@dataclass
class MailSpec:
    subject: str
    sender: Addr
    to: list[Addr]
    sent: datetime
    received: datetime
    message_id: str
    text: str | None = None
    html: str | None = None
    cc: list[Addr] = field(default_factory=list)
    bcc: list[Addr] = field(default_factory=list)
    reply_to: list[Addr] = field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    importance: str = "normal"
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    conversation_seed: str = ""


# -- rendering -----------------------------------------------------------------------------


class _Registry(HeaderRegistry):
    """The email package's registry makes a new class with ``type()`` for every header it
    sets (6% of graphsim's CPU in a backup); here each header name's class is made once."""

    @functools.cache  # noqa: B019 - one registry lives as long as the module
    def __getitem__(self, name: str) -> type:
        return super().__getitem__(name)


# email.policy.SMTP, its header classes made once: renders the same bytes.
SMTP = email.policy.SMTP.clone(header_factory=_Registry())


def _addr_header(addrs: list[Addr]) -> str:
    """Addresses as a header; real mail has senders without an address or with one the
    strict parser refuses (``"Name" <>``, bare local parts): Exchange still renders them."""
    out = []
    for a in addrs:
        try:
            out.append(str(Address(a.name, addr_spec=a.address)))
        except (IndexError, ValueError, TypeError):
            out.append(formataddr((a.name, a.address)) if a.address else a.name)
    return ", ".join(o for o in out if o)


def render_mime(
    spec: MailSpec, attachments: list[Attachment], *, include_bcc: bool = False
) -> bytes:
    """The message's MIME as Exchange would serve it. Files are left out of the email
    package's work (see ``_Bodies``): it encodes and writes base64 a 76-character line at a
    time, a third of graphsim's CPU in a backup."""
    bodies = _Bodies()
    msg = _build_email(spec, attachments, include_bcc=include_bcc, bodies=bodies)
    return bodies.splice(msg.as_bytes(policy=SMTP))


class _Bodies:
    """Files' base64 bodies, each encoded in one call: a part gets a marker line for its
    body (``mark``), and ``splice`` puts the body where the generator wrote the marker, with
    the lines ``set_content`` would have made (57 bytes a line, ``encodebytes``'s width)
    and the generator's line breaks (CRLF)."""

    def __init__(self) -> None:
        self._marker = secrets.token_hex(8)
        self._bodies: list[bytes] = []

    def mark(self, data: bytes) -> str:
        self._bodies.append(pybase64.encodebytes(data).replace(b"\n", b"\r\n"))
        return f"{self._marker}{len(self._bodies) - 1}=\n"

    def splice(self, raw: bytes) -> bytes:
        found = re.escape(self._marker.encode()) + rb"(\d+)=\r\n"
        return re.sub(found, lambda m: self._bodies[int(m[1])], raw)


def _add_file(
    container: EmailMessage,
    add: Callable[..., None],
    data: bytes,
    att: Attachment,
    bodies: _Bodies,
    **params: Any,
) -> None:
    """``add`` (``container``'s ``add_attachment`` or ``add_related``) a file part whose body
    is marked in ``bodies``. A file typed ``multipart/*`` or ``message/*`` (imported mail has
    them) is left to the package: its generator writes such a body as it is, line breaks
    unchanged."""
    maintype, subtype = _mime_type(att)
    if maintype.lower() in ("multipart", "message"):
        add(data, maintype, subtype, filename=att.name, **params)
        return
    add(b"", maintype, subtype, filename=att.name, **params)
    parts = container.get_payload()
    assert isinstance(parts, list)
    part = parts[-1]
    assert isinstance(part, EmailMessage)
    part.set_payload(bodies.mark(data))


def _build_email(
    spec: MailSpec,
    attachments: list[Attachment],
    *,
    include_bcc: bool,
    bodies: _Bodies,
) -> EmailMessage:
    """The message with a marker in place of each file's body (see ``render_mime``)."""
    msg = EmailMessage(policy=SMTP)
    _set_headers(msg, spec, include_bcc=include_bcc)
    text = spec.text if spec.text is not None else html_to_text(spec.html or "")
    msg.set_content(text, cte="quoted-printable")
    inline = [a for a in attachments if a.kind == "file" and a.is_inline and a.content]
    container = msg
    if spec.html is not None:
        msg.add_alternative(spec.html, subtype="html", cte="quoted-printable")
        alternatives = msg.get_payload()
        assert isinstance(alternatives, list)
        html_part = alternatives[-1]
        assert isinstance(html_part, EmailMessage)
        container, add_inline = html_part, html_part.add_related
    else:  # no HTML to relate them to: inline parts follow the text
        add_inline = msg.add_attachment
    for att in inline:
        assert att.content is not None
        _add_file(
            container,
            add_inline,
            att.content.read(),
            att,
            bodies,
            disposition="inline",
            cid=f"<{att.content_id}>" if att.content_id else None,
        )
    for att in attachments:
        if att.kind == "file" and not att.is_inline and att.content is not None:
            _add_file(msg, msg.add_attachment, att.content.read(), att, bodies)
        elif att.kind == "item" and isinstance(att.item, OItem) and att.item.kind == "message":
            inner = att.item
            inner_bytes = inner.raw_mime or render_mime(inner.spec, inner.attachments)
            inner_msg = email.message_from_bytes(inner_bytes, policy=SMTP)
            msg.add_attachment(inner_msg, filename=att.name)
    _tidy_parts(msg, spec.message_id)
    return msg


def _mime_type(att: Attachment) -> tuple[str, str]:
    maintype, _, subtype = (att.content_type or "application/octet-stream").partition("/")
    return maintype, subtype or "octet-stream"


def _set_headers(msg: EmailMessage, spec: MailSpec, *, include_bcc: bool) -> None:
    msg["From"] = _addr_header([spec.sender])
    if spec.to:
        msg["To"] = _addr_header(spec.to)
    if spec.cc:
        msg["Cc"] = _addr_header(spec.cc)
    if include_bcc and spec.bcc:
        msg["Bcc"] = _addr_header(spec.bcc)
    if spec.reply_to:
        msg["Reply-To"] = _addr_header(spec.reply_to)
    msg["Subject"] = spec.subject
    msg["Thread-Topic"] = _strip_prefixes(spec.subject)
    msg["Date"] = format_datetime(spec.sent.astimezone(UTC))
    msg["Message-ID"] = spec.message_id
    if spec.in_reply_to:
        msg["In-Reply-To"] = spec.in_reply_to
    if spec.references:
        msg["References"] = " ".join(spec.references)
    if spec.importance == "high":
        msg["Importance"] = "high"
        msg["X-Priority"] = "1"
    elif spec.importance == "low":
        msg["Importance"] = "low"
        msg["X-Priority"] = "5"
    for name, value in spec.extra_headers:
        msg[name] = value
    msg["Content-Language"] = "en-US"


def _tidy_parts(msg: EmailMessage, message_id: str) -> None:
    """As Exchange writes MIME: one MIME-Version (outside attached messages) and stable
    boundaries derived from the Message-ID, so the same message renders the same bytes."""
    embedded: set[int] = set()
    for part in msg.walk():
        if part.get_content_type() == "message/rfc822":
            inner_parts = part.get_payload()
            embedded.update(id(p) for p in (inner_parts if isinstance(inner_parts, list) else []))
    for part in msg.walk():
        if (
            part is not msg
            and id(part) not in embedded
            and part.get_content_type() != "message/rfc822"
        ):
            del part["MIME-Version"]
    for index, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        if part.get_content_type() != "message/rfc822":
            boundary = base64.b32encode(ids.digest(message_id, index, size=10)).decode()
            part.set_boundary(f"_{index:03d}_{boundary}_")


def _strip_prefixes(subject: str) -> str:
    return re.sub(r"^((re|fw|fwd|aw|wg|sv)\s*:\s*)+", "", subject, flags=re.IGNORECASE)


def html_to_text(markup: str) -> str:
    markup = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", " ", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</li>|</tr>", "\n", markup)
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", markup))
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line).strip() + "\n"


def text_to_html(text: str) -> str:
    paragraphs = "".join(
        f"<p>{html_lib.escape(line)}</p>" for line in text.splitlines() if line.strip()
    )
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        f"</head><body>{paragraphs}</body></html>"
    )


def body_preview(spec: MailSpec) -> str:
    text = spec.text if spec.text is not None else html_to_text(spec.html or "")
    return re.sub(r"\s+", " ", text).strip()[:255]


# -- parsing -------------------------------------------------------------------------------


def _addrs(values: list[str]) -> list[Addr]:
    return [Addr(name, addr) for name, addr in getaddresses(values) if addr or name]


def _leaf_parts(part: Message) -> list[Message]:
    if part.get_content_type() == "message/rfc822" or not part.is_multipart():
        return [part]
    found: list[Message] = []
    payload = part.get_payload()
    assert isinstance(payload, list)
    for sub in payload:
        assert isinstance(sub, Message)
        found.extend(_leaf_parts(sub))
    return found


def parse_mime(
    raw: bytes, *, received: datetime | None = None, id_parts: tuple[object, ...] = ()
) -> tuple[MailSpec, list[Attachment]]:
    """Read an RFC 5322 message into a spec and its attachments (file and item)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    sent: datetime | None = None
    if msg["Date"]:
        try:
            sent = parsedate_to_datetime(str(msg["Date"]))
        except (TypeError, ValueError):
            sent = None
    if sent is None:
        sent = received or datetime(2000, 1, 1, tzinfo=UTC)
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    senders = _addrs([str(v) for v in msg.get_all("From", [])])
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    text = _part_text(text_part) if text_part is not None else None
    html = _part_text(html_part) if html_part is not None else None
    importance = str(msg.get("Importance", "normal")).lower()
    if importance not in ("low", "normal", "high"):
        importance = "normal"
    spec = MailSpec(
        subject=str(msg.get("Subject", "")),
        sender=senders[0] if senders else Addr("", ""),
        to=_addrs([str(v) for v in msg.get_all("To", [])]),
        cc=_addrs([str(v) for v in msg.get_all("Cc", [])]),
        bcc=_addrs([str(v) for v in msg.get_all("Bcc", [])]),
        reply_to=_addrs([str(v) for v in msg.get_all("Reply-To", [])]),
        sent=sent.astimezone(UTC),
        received=(received or sent).astimezone(UTC),
        message_id=str(msg.get("Message-ID", "")).strip()
        or f"<{ids.guid('mid', *id_parts)}@graphsim>",
        text=text,
        html=html,
        in_reply_to=str(msg["In-Reply-To"]).strip() if msg["In-Reply-To"] else None,
        references=str(msg.get("References", "")).split(),
        importance=importance,
    )
    attachments: list[Attachment] = []
    body_parts = {id(p) for p in (text_part, html_part) if p is not None}
    for index, part in enumerate(_leaf_parts(msg)):
        if id(part) in body_parts:
            continue
        att = _mime_attachment(part, index, id_parts, spec.sent)
        if att is not None:
            attachments.append(att)
    return spec, attachments


def _mime_attachment(
    part: Message, index: int, id_parts: tuple[object, ...], modified: datetime
) -> Attachment | None:
    """A leaf part that is not the body: an attached message (parsed in turn), a file or
    inline image; None for an extra text part (e.g. a calendar text part)."""
    ctype = part.get_content_type()
    disposition = part.get_content_disposition()
    cid = part.get("Content-ID")
    name = part.get_filename()
    att_id = ids.attachment_id(*id_parts, index)
    if ctype == "message/rfc822":
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) else payload
        assert isinstance(inner, Message)
        inner_raw = inner.as_bytes(policy=email.policy.SMTP)
        inner_spec, inner_atts = parse_mime(inner_raw, id_parts=(*id_parts, index))
        return attached_message(
            att_id,
            name or inner_spec.subject or "Attached message",
            modified,
            item_id=ids.outlook_id("attitem", *id_parts, index),
            change_key=ids.change_key("attitem", *id_parts, index),
            spec=inner_spec,
            attachments=inner_atts,
            raw_mime=inner_raw,
        )
    if disposition is None and not cid and ctype.startswith("text/"):
        return None  # an extra body part (e.g. a calendar text part): not an attachment
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        data = b""
    return Attachment(
        id=att_id,
        kind="file",
        name=name or (f"image{index}.{ctype.split('/')[-1]}" if cid else f"part{index}"),
        content_type=ctype,
        modified=modified,
        content=BytesContent.of(data),
        content_id=str(cid).strip("<> ") if cid else None,
        is_inline=disposition == "inline" or (disposition is None and bool(cid)),
    )


def attached_message(
    att_id: str,
    name: str,
    when: datetime,
    *,
    item_id: str,
    change_key: str,
    spec: MailSpec,
    attachments: list[Attachment],
    raw_mime: bytes | None = None,
) -> Attachment:
    """An itemAttachment holding a message (from MIME or from JSON). The message lives only
    inside it: no mailbox, no folder, no change number; read, and not a draft."""
    item = OItem(
        id=item_id,
        kind="message",
        user_id="",
        folder_id="",
        seq=0,
        created=when,
        modified=when,
        change_key=change_key,
        spec=spec,
        raw_mime=raw_mime,
        attachments=attachments,
        props={"isRead": True, "isDraft": False},
    )
    return Attachment(
        id=att_id, kind="item", name=name, content_type=None, modified=when, item=item
    )


def _part_text(part: Message) -> str:
    assert isinstance(part, EmailMessage)
    try:
        content = part.get_content()
    except (LookupError, UnicodeDecodeError):
        raw = part.get_payload(decode=True)
        content = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    return content if isinstance(content, str) else content.decode("utf-8", "replace")


def mime_headers(raw: bytes) -> list[dict[str, str]]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [{"name": k, "value": str(v)} for k, v in msg.items()]


# -- Graph JSON ----------------------------------------------------------------------------


def outlook_item(item: OItem) -> dict[str, Any]:
    """What Graph's outlookItem base type gives every message, event and contact first."""
    return {
        "@odata.etag": f'W/"{item.change_key}"',
        "id": item.id,
        "createdDateTime": iso(item.created),
        "lastModifiedDateTime": iso(item.modified),
        "changeKey": item.change_key,
    }


def message_json(item: OItem, web_base: str, *, text_body: bool = False) -> dict[str, Any]:
    spec: MailSpec = item.spec
    props = item.props
    if text_body:
        body = {
            "contentType": "text",
            "content": spec.text if spec.text is not None else html_to_text(spec.html or ""),
        }
    elif spec.html is not None:
        body = {"contentType": "html", "content": spec.html}
    else:
        body = {"contentType": "text", "content": spec.text or ""}
    visible = [a for a in item.attachments if not a.is_inline]
    return {
        **outlook_item(item),
        "categories": list(props.get("categories", [])),
        "receivedDateTime": iso(spec.received),
        "sentDateTime": iso(spec.sent),
        "hasAttachments": bool(visible),
        "internetMessageId": spec.message_id,
        "subject": spec.subject,
        "bodyPreview": body_preview(spec),
        "importance": spec.importance,
        "parentFolderId": item.folder_id,
        "conversationId": props.get("conversationId") or conversation_id(spec),
        "conversationIndex": base64.b64encode(ids.digest(spec.message_id, size=22)).decode(),
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": bool(props.get("isRead", False)),
        "isDraft": bool(props.get("isDraft", False)),
        "webLink": f"{web_base}/owa/?ItemID={item.id}&exvsurl=1&viewmodel=ReadMessageItem",
        "inferenceClassification": "focused",
        "body": body,
        "sender": spec.sender.graph(),
        "from": spec.sender.graph(),
        "toRecipients": [a.graph() for a in spec.to],
        "ccRecipients": [a.graph() for a in spec.cc],
        "bccRecipients": [a.graph() for a in spec.bcc],
        "replyTo": [a.graph() for a in spec.reply_to],
        "flag": dict(props.get("flag") or {"flagStatus": "notFlagged"}),
    }


def conversation_id(spec: MailSpec) -> str:
    topic = spec.conversation_seed or _strip_prefixes(spec.subject).lower()
    return ids.outlook_id("conversation", spec.sender.address if not topic else "", topic)


def attachment_json(
    att: Attachment, *, with_bytes: bool = True, beta: bool = False
) -> dict[str, Any]:
    """An attachment as Graph answers it. On v1.0 a link (reference) attachment is its base
    properties only: its address, provider and permission are beta's (``beta``)."""
    base: dict[str, Any] = {
        "id": att.id,
        "lastModifiedDateTime": iso(att.modified),
        "name": att.name,
        "contentType": att.content_type,
        "size": att.size(),
        "isInline": att.is_inline,
    }
    if att.kind == "file":
        assert att.content is not None
        base = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "@odata.mediaContentType": att.content_type,
            **base,
            "contentId": att.content_id,
            "contentLocation": None,
        }
        if with_bytes:
            base["contentBytes"] = base64.b64encode(att.content.read()).decode()
        return base
    if att.kind == "item":
        return {"@odata.type": "#microsoft.graph.itemAttachment", **base}
    link = {"@odata.type": "#microsoft.graph.referenceAttachment", **base}
    if beta:
        link.update(
            sourceUrl=att.source_url,
            providerType=att.provider,
            permission=att.permission,
            isFolder=att.is_folder,
        )
    return link


def graph_addrs(values: Any) -> list[Addr]:
    out: list[Addr] = []
    for value in values or []:
        ea = (value or {}).get("emailAddress") or {}
        out.append(Addr(str(ea.get("name") or ""), str(ea.get("address") or "")))
    return out


def extended_props(body: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for prop in body.get("singleValueExtendedProperties") or []:
        if isinstance(prop, dict) and "id" in prop:
            found[str(prop["id"]).strip().lower()] = str(prop.get("value", ""))
    return found


def parse_graph_datetime(value: str) -> datetime:
    value = value.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
