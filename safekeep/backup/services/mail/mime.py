"""What we read out of a message's MIME instead of storing it twice, and the mbox format.

A message is backed up as its exact RFC 822 bytes plus its Graph JSON. File attachment bytes
are in the MIME already, so the JSON keeps only their metadata; a restore takes the bytes
back out of the MIME, matching Graph's attachment list to MIME parts by Content-ID, then
file name, then content type, in order. The standard library's ``email`` package does the
parsing (RFC 2231 names, transfer encodings); these helpers only choose parts.
"""

from __future__ import annotations

import binascii
import email
import email.parser
import email.policy
import functools
import quopri
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email._encoded_words import decode_b  # what get_payload(decode=True) uses for base64
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, Literal, TypeVar

import pybase64

from safekeep.storage.chunking import ALL_SETTLED

FILE_ATTACHMENT = "#microsoft.graph.fileAttachment"
ITEM_ATTACHMENT = "#microsoft.graph.itemAttachment"
REFERENCE_ATTACHMENT = "#microsoft.graph.referenceAttachment"


@dataclass
class MimePart:
    """One attachment-like leaf of a message (never a body part)."""

    kind: Literal["file", "item"]
    name: str | None
    content_type: str
    content_id: str | None
    inline: bool
    data: bytes  # decoded bytes; for an attached message, its RFC 822 bytes

    def decoded(self) -> bytes:
        return self.data

    def may_decode_within(self, size: int) -> bool:
        return len(self.data) <= size


class _HeaderClasses(HeaderRegistry):
    """The standard registry, but each header class is made once: the standard one builds a
    new class with ``type()`` on every header read, which was about half of the CPU of
    parsing a message for its attachments. The classes depend only on the header's kind
    (a handful), so the cache stays small whatever headers hostile input carries."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type] = {}

    def __getitem__(self, name: str) -> type:
        kind = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(kind)
        if made is None:
            made = self._made[kind] = super().__getitem__(name)
        return made


# email.policy.default with the cached registry: parses exactly as the default policy does.
_CLASSES = _HeaderClasses()
POLICY = email.policy.default.clone(header_factory=_CLASSES)


# Parsed headers kept for reuse: the latest this many, each of a value at most this long. A
# parsed header is about 10 KB of objects (its parse tree) for a 40-character value: kept for
# every header of a hostile message of 100,000 parts, all distinct, that was 1.95 GB; these
# bounds keep at most about 5 MB whatever the mail.
_PARSED_KEPT = 512
_PARSED_VALUE_MAX = 256


@functools.lru_cache(maxsize=_PARSED_KEPT)
def _parsed(name: str, value: str) -> Any:
    return _CLASSES(name, value)


class _ParsedOnce:
    """The header factory of the messages' policy: a header (its name and value) read again
    is not parsed again, in this message or another. The default policy parses a header anew
    on every read, and choosing a message's parts reads each part's Content-Type and
    Content-Disposition several times over (``get_content_type``, ``get_boundary``,
    ``is_attachment``, ``get_filename``...): 33,019 parses for graphsim's 2,000 messages, of
    which 13,557 were of a header not yet parsed in its message and 5,008 of one not yet
    parsed at all (``charset`` lines, transfer encodings, a shared attachment's type and
    name). Header objects are immutable, so handing out the same one again answers exactly
    as parsing it again; ``lru_cache`` is safe to share between the threads that parse."""

    def __call__(self, name: str, value: str) -> Any:
        if len(value) <= _PARSED_VALUE_MAX:
            return _parsed(name, value)
        return _CLASSES(name, value)

    def __getitem__(self, name: str) -> type:
        return _CLASSES[name]


_PARSED_ONCE = POLICY.clone(header_factory=_ParsedOnce())


def message_policy() -> email.policy.EmailPolicy[EmailMessage]:
    """``POLICY`` with each short header parsed once (see ``_ParsedOnce``)."""
    return _PARSED_ONCE


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=message_policy())
    assert isinstance(message, EmailMessage)
    return message


def _leaves(part: Message) -> list[Message]:
    """Leaf parts in order; an attached message is a leaf (its own parts are its business)."""
    if part.get_content_type() == "message/rfc822" or not part.is_multipart():
        return [part]
    found: list[Message] = []
    payload = part.get_payload()
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                found.extend(_leaves(sub))
    return found


def attachment_parts(raw: bytes) -> list[MimePart]:
    """The attachments of a message as its MIME carries them (inline images included), from
    the whole message parsed by ``email``, every part decoded. ``attachments`` (the split below)
    gives the same for the shapes mail has, without holding the message parsed; ``email`` also
    reads the rarer ones its own way (a delivery report's status part, an external body, a
    multipart without its boundaries), so this stays for those."""
    message = parse(raw)
    bodies: set[int] = set()
    for preference in (("plain",), ("html",)):
        body = message.get_body(preferencelist=preference)
        if body is not None:
            bodies.add(id(body))
    parts: list[MimePart] = []
    for leaf in _leaves(message):
        if id(leaf) in bodies:
            continue
        ctype = leaf.get_content_type()
        disposition = leaf.get_content_disposition()
        raw_cid = leaf.get("Content-ID")
        cid = str(raw_cid).strip().strip("<>").strip() if raw_cid else None
        name = leaf.get_filename()
        if ctype == "message/rfc822":
            payload = leaf.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else payload
            data = inner.as_bytes(policy=email.policy.SMTP) if isinstance(inner, Message) else b""
            parts.append(MimePart("item", name, ctype, cid, disposition == "inline", data))
            continue
        if disposition is None and not cid and ctype.startswith("text/"):
            continue  # an extra body part (a calendar or plain-text alternative)
        decoded = leaf.get_payload(decode=True)
        parts.append(
            MimePart(
                "file",
                name,
                ctype,
                cid,
                disposition == "inline" or (disposition is None and bool(cid)),
                decoded if isinstance(decoded, bytes) else b"",
            )
        )
    return parts


# ---- chosen attachments without parsing the whole message --------------------------------
#
# Search wants the text of a few attachments (documents up to a few MB) of messages that may be
# tens of MB. ``email`` parses a whole message into a tree of decoded strings, and decoding every
# leaf besides: for a 40 MB message that held about four copies of it at once, the largest
# allocation of a worker backing up a mailbox of large messages, and most of the CPU of indexing
# one. So the MIME is split at its multipart boundaries (RFC 2046) as byte offsets into the one
# buffer; only part headers are parsed (by ``email``), and only the chosen parts are decoded,
# by the decoders ``get_payload(decode=True)`` itself uses. The choice of parts is
# ``attachment_parts``'s: the same body rule (``_find_body`` mirrors ``EmailMessage.get_body``),
# the same leaves.

_HEADERS_END = re.compile(rb"\r?\n\r?\n")
_MAX_DEPTH = 32
# Parts a walk reads at most; the rest of a message is not split. Mail has tens of parts at
# most, but anyone can mail a user a message of 100,000 empty ones (10 MB): read whole, its
# walk took 18.6 s of CPU and 97 MB, and a 40 MB one (``PARSE_MAX_BYTES`` of search) four
# times that.
_MAX_PARTS = 1000
# Encoded bytes per decoded byte at most, by transfer encoding (base64 with line breaks;
# quoted-printable escapes each byte as =XX): a larger part cannot decode within the bound.
_EXPANSION = {"base64": 1.4, "quoted-printable": 3.0}


@dataclass
class _Span:
    """A part of the MIME by offsets: its headers parsed, its body left as bytes. What the
    walk asks of the headers is read once (the default policy parses a header anew on every
    access)."""

    headers: EmailMessage
    start: int
    body: int
    end: int
    content_type: str
    attachment: bool  # Content-Disposition: attachment
    parts: list[_Span] | None  # a multipart's parts


class _Walk:
    """One walk over a message: the parser of its part headers (a header read again in it is
    not parsed again) and how many more parts it may read, in the order they come."""

    def __init__(self) -> None:
        self.parser = email.parser.BytesHeaderParser(policy=message_policy())
        self.parts_left = _MAX_PARTS


def _span(
    raw: bytes, start: int, end: int, depth: int, default: str | None, walk: _Walk | None = None
) -> _Span:
    """The part of ``raw`` from ``start`` to ``end``, split down to its leaves (the top call
    starts the walk; the calls below share it)."""
    walk = walk or _Walk()
    if raw.startswith(b"\r\n", start):
        body = start + 2
    elif raw.startswith(b"\n", start):
        body = start + 1
    else:
        found = _HEADERS_END.search(raw, start, end)
        body = found.end() if found else end
    headers = walk.parser.parsebytes(raw[start:body])
    assert isinstance(headers, EmailMessage)
    if default is not None:
        headers.set_default_type(default)
    content_type = headers.get_content_type()
    parts: list[_Span] | None = None
    boundary = headers.get_boundary() if content_type.startswith("multipart/") else None
    if boundary and depth >= _MAX_DEPTH:
        parts = []  # nesting this deep is hostile, not mail: nothing below is read
    elif boundary:
        inner = "message/rfc822" if content_type == "multipart/digest" else None
        parts = []
        for s, e in _part_offsets(raw, body, end, boundary, walk.parts_left):
            if walk.parts_left <= 0:
                break  # the parts before this one, and theirs, took what the walk reads
            walk.parts_left -= 1
            parts.append(_span(raw, s, e, depth + 1, inner, walk))
    return _Span(headers, start, body, end, content_type, headers.is_attachment(), parts)


def _part_offsets(
    raw: bytes, body: int, end: int, boundary: str, most: int
) -> list[tuple[int, int]]:
    """Where each body part lies between ``--boundary`` lines, the first ``most`` of them;
    the line break before a delimiter is the delimiter's, as in ``email``'s parser. Found
    with ``bytes.find`` (a regular expression that may start with a line break tries every
    byte: 4x slower)."""
    mark = b"--" + boundary.encode("ascii", "surrogateescape")
    offsets: list[tuple[int, int]] = []
    start: int | None = None
    at = raw.find(mark, body, end) if most > 0 else -1
    while at >= 0:
        after = at + len(mark)
        close = raw.startswith(b"--", after, end)
        if close:
            after += 2
        while after < end and raw[after] in b" \t":
            after += 1
        if (at == body or raw[at - 1] == 0x0A) and (after == end or raw[after] in b"\r\n"):
            if start is not None:  # an empty part (two delimiters in a row) ends where it starts
                stop = at - 2 if raw.startswith(b"\r\n", at - 2) else at - 1
                offsets.append((start, max(start, stop)))
                if len(offsets) == most:
                    return offsets
            if close:
                return offsets
            start = after + 2 if raw.startswith(b"\r\n", after, end) else min(after + 1, end)
        at = raw.find(mark, at + len(mark), end)
    if start is not None:  # no closing delimiter: the last part runs to the end, less a line break
        last = end - 2 if raw.endswith(b"\r\n", start, end) else end
        offsets.append(
            (start, last - 1 if last == end and raw.endswith(b"\n", start, end) else last)
        )
    return offsets


def _span_leaves(span: _Span) -> list[_Span]:
    if span.content_type == "message/rfc822" or span.parts is None:
        return [span]
    return [leaf for part in span.parts for leaf in _span_leaves(part)]


def _find_body(span: _Span, subtype: str) -> _Span | None:
    """The part ``get_body(preferencelist=(subtype,))`` answers, by the same walk."""
    if span.attachment:
        return None
    maintype, _, sub = span.content_type.partition("/")
    if maintype == "text":
        return span if sub == subtype else None
    if maintype != "multipart" or span.parts is None:
        return None
    if sub != "related":
        for part in span.parts:
            found = _find_body(part, subtype)
            if found is not None:
                return found
        return None
    start = span.headers.get_param("start")
    candidate = next((p for p in span.parts if start and p.headers["content-id"] == start), None)
    if candidate is None and span.parts:
        candidate = span.parts[0]
    return _find_body(candidate, subtype) if candidate is not None else None


def _decoded(raw: bytes, leaf: _Span, cte: str) -> bytes:
    """What ``Message.get_payload(decode=True)`` answers for this leaf, decoded straight from
    its body bytes (feeding a part to the parser line by line cost more than decoding it)."""
    body = raw[leaf.body : leaf.end]
    if cte == "quoted-printable":
        return quopri.decodestring(body)
    if cte == "base64":
        # The line breaks out in one pass (what joining ``splitlines()`` gives: bytes break
        # lines only at CR, LF and CRLF), without a bytes object per 76-character line.
        joined = body.translate(None, b"\r\n")
        try:
            # Well-formed base64 has one decoding: a SIMD decoder gives it at a tenth of the
            # CPU; anything else goes to get_payload's own lenient decoder.
            return pybase64.b64decode(joined, validate=True)
        except (binascii.Error, ValueError):
            return decode_b(joined)[0]
    if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
        decoded = parse(raw[leaf.start : leaf.end]).get_payload(decode=True)
        return decoded if isinstance(decoded, bytes) else b""
    return body


@dataclass(frozen=True)
class EncodedAttachment:
    """An attachment leaf of a message as it stands in the MIME, not decoded: one of what
    ``attachment_parts`` gives, by offsets into the message's bytes (``encoded`` is a view of
    its body), so that it can be chosen, matched and recognised by content without decoding
    it, and decoded when (and if) its bytes are wanted."""

    kind: Literal["file", "item"]
    name: str | None
    content_type: str
    content_id: str | None
    inline: bool
    transfer_encoding: str
    encoded: memoryview
    _raw: bytes
    _leaf: _Span

    def decoded(self) -> bytes:
        """The bytes ``attachment_parts`` holds for it: a file's content; an attached message's
        RFC 822 bytes, as ``email`` writes them back."""
        if self.kind == "item":
            return parse(self.encoded.tobytes()).as_bytes(policy=email.policy.SMTP)
        return _decoded(self._raw, self._leaf, self.transfer_encoding)

    def may_decode_within(self, size: int) -> bool:
        """False when this file cannot decode to ``size`` bytes or fewer, told from its
        encoded length and transfer encoding without decoding it."""
        return len(self.encoded) <= size * _EXPANSION.get(self.transfer_encoding, 1.0) + 65536

    def decoded_within(self, size: int) -> bytes | None:
        """``decoded()`` if it is ``size`` bytes or fewer, else None."""
        data = self.decoded()
        return data if len(data) <= size else None


def attachments(raw: bytes) -> Iterator[EncodedAttachment]:
    """The attachments ``attachment_parts`` gives (inline images and attached messages
    included), in order, among the message's first ``_MAX_PARTS`` parts; none is decoded. Only
    the part headers are parsed: a 120 MB message costs its own bytes and what the caller
    decodes, where ``attachment_parts`` held about six times its size."""
    top = _span(raw, 0, len(raw), 0, None)
    bodies = {id(b) for b in (_find_body(top, "plain"), _find_body(top, "html")) if b}
    view = memoryview(raw)
    for leaf in _span_leaves(top):
        if id(leaf) in bodies:
            continue
        headers, ctype = leaf.headers, leaf.content_type
        disposition = headers.get_content_disposition()
        raw_cid = headers.get("Content-ID")
        cid = str(raw_cid).strip().strip("<>").strip() if raw_cid else None
        if ctype == "message/rfc822":
            kind: Literal["file", "item"] = "item"
            inline = disposition == "inline"
        elif disposition is None and not cid and ctype.startswith("text/"):
            continue  # an extra body part (a calendar or plain-text alternative)
        else:
            kind = "file"
            inline = disposition == "inline" or (disposition is None and bool(cid))
        cte = str(headers.get("content-transfer-encoding", "")).lower()
        name = headers.get_filename()
        encoded = view[leaf.body : leaf.end]
        yield EncodedAttachment(kind, name, ctype, cid, inline, cte, encoded, raw, leaf)


def encoded_file_attachments(
    raw: bytes, wanted: Callable[[str | None, str], bool], max_bytes: int
) -> Iterator[EncodedAttachment]:
    """The file ``attachments`` whose name and content type ``wanted`` accepts and whose
    encoded size could decode to at most ``max_bytes``."""
    for part in attachments(raw):
        chosen = part.kind == "file" and wanted(part.name, part.content_type)
        if chosen and part.may_decode_within(max_bytes):
            yield part


def file_attachments(
    raw: bytes, wanted: Callable[[str | None, str], bool], max_bytes: int
) -> Iterator[MimePart]:
    """``encoded_file_attachments`` decoded, less those whose decoded size passes
    ``max_bytes``; each is decoded only when the caller asks for the next."""
    for part in encoded_file_attachments(raw, wanted, max_bytes):
        data = part.decoded_within(max_bytes)
        if data is None:
            continue
        yield MimePart("file", part.name, part.content_type, part.content_id, part.inline, data)


# ---- where a stored message's chunks end --------------------------------------------------
#
# The same attachment mailed to twenty people is twenty messages whose MIME differs only around
# it. Content-defined chunking at about 1 MiB finds no boundary inside a 300 KB attachment, so
# each copy would be stored in its own message's chunk. ``PartCuts`` tells the chunker where each
# large base64 part begins and ends, as the message streams by, so each is chunked on its own and
# stored once per tenant (see ``safekeep.storage.chunking``). The split is ``_span``'s: the same
# delimiters, the same part bounds; only part headers are parsed.

# A base64 part at least this long (encoded) gets chunks of its own; smaller parts stay in their
# message's chunk. Each part cut out costs two more objects (itself and what follows it, unique
# to its message) and their requests. On graphsim's mail (2,000 messages, 640 MB) parts from
# 64 KiB up saved 221 MB in 1,524 more pieces; from 128 KiB up, 205 MB in 944.
PART_CUT_MIN = 128 * 1024
# A header block longer than this is not mail: the rest of such a message is not split.
_HEADER_BLOCK_MAX = 64 * 1024
# A delimiter line is its boundary (at most 70 characters), "--" twice and some blanks.
_DELIMITER_LINE_MAX = 1024
# Lines that start with "--" but delimit nothing, at most, before a message is no longer split:
# each costs a step in Python, and anyone can mail a user 150 MB of them (150 ms of CPU a MB,
# against 35 for mail as it comes). Mail has a few (signatures, rules drawn in text).
_LOOKALIKES_MAX = 4096
# A part's Content-Type and Content-Transfer-Encoding fields, continuation lines included.
_PART_FIELDS = re.compile(
    rb"^(content-type|content-transfer-encoding):([^\n]*(?:\n[ \t][^\n]*)*)", re.I | re.M
)


def _part_fields(buf: bytes, start: int, end: int) -> Message:
    """The two fields of a header block that say how a part is split, as ``email``'s parser
    with the compat32 policy reads them (parsing the whole block into ``_span``'s header
    objects cost about 0.3 ms a block, a third of the CPU of backing up a message)."""
    headers = Message(policy=email.policy.compat32)
    for name, value in _PART_FIELDS.findall(buf, start, end):
        text = value.decode("ascii", "surrogateescape").lstrip(" \t").rstrip("\r\n")
        headers[name.decode("ascii")] = text
    return headers


def _dashes(buf: bytes, start: int) -> int:
    """Where the next line after ``start`` that starts with "--" starts, or -1. A base64 body
    holds no "-": one ``memchr`` crosses it, 20x faster than a search for the three bytes."""
    dash = buf.find(b"-", start)
    found = buf.find(b"\n--", max(start, dash - 1)) if dash >= 0 else -1
    return found + 1 if found >= 0 else -1


class PartCuts:
    """``CutPoints`` of a MIME message: the start and end of every base64 body part of at least
    ``min_part`` bytes, found while the message streams by. Holds a header block or a line at
    most, whatever the message's size; input it cannot read only ends the splitting."""

    def __init__(self, min_part: int = PART_CUT_MIN) -> None:
        self._min = min_part
        self._buf = b""  # bytes from offset ``_at`` of the message, unread from ``_pos``
        self._at = 0
        self._pos = 0
        self._marks: list[bytes] = []  # "--boundary" of each open multipart, outermost first
        self._headers = True  # reading a header block, not a body
        self._leaf: int | None = None  # body start of the base64 part being read, if any
        self._leaf_cut = False  # its start is already a cut
        self._line_start = False  # the unread bytes start at the start of a line
        self._lookalikes = 0  # lines starting with "--" that were no delimiter
        self._done = False

    @property
    def settled(self) -> int:
        if self._done:
            return ALL_SETTLED
        if self._leaf is not None and not self._leaf_cut:
            return self._leaf
        return max(0, self._at + self._pos - 2)

    def feed(self, piece: bytes) -> list[int]:
        if self._done:
            return []
        self._buf = self._buf + piece if self._buf else piece
        cuts: list[int] = []
        while not self._done and (self._read_headers() if self._headers else self._read_body(cuts)):
            pass
        # Keep two bytes before the unread ones: a delimiter's line break may begin there.
        drop = max(0, self._pos - 2)
        self._buf, self._at, self._pos = self._buf[drop:], self._at + drop, self._pos - drop
        leaf = self._leaf
        if leaf is not None and not self._leaf_cut and self._at + self._pos - 2 - leaf >= self._min:
            cuts.append(leaf)  # long enough whatever follows: its start is a cut
            self._leaf_cut = True
        return cuts

    def finish(self) -> list[int]:
        cuts: list[int] = []
        end = self._at + len(self._buf)
        if not self._done and not self._headers and self._marks:
            # No closing delimiter: the last part runs to the end, less a line break.
            buf = self._buf
            end -= 2 if buf.endswith(b"\r\n") else 1 if buf.endswith(b"\n") else 0
            self._end_leaf(end, cuts)
        elif not self._done and not self._headers:
            self._end_leaf(end, cuts)  # a message whose whole body is one base64 part
        self._done, self._buf = True, b""
        return cuts

    def _read_headers(self) -> bool:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 2:
            return False
        if buf.startswith(b"\r\n", pos):
            body = pos + 2
        elif buf.startswith(b"\n", pos):
            body = pos + 1
        else:
            found = _HEADERS_END.search(buf, pos)
            if found is None:
                if len(buf) - pos > _HEADER_BLOCK_MAX:
                    self._done = True
                return False
            body = found.end()
        headers = _part_fields(buf, pos, body)
        boundary = headers.get_boundary() if headers.get_content_maintype() == "multipart" else None
        self._leaf, self._leaf_cut = None, False
        if boundary and len(self._marks) < _MAX_DEPTH:
            self._marks.append(b"--" + boundary.encode("ascii", "surrogateescape"))
        elif str(headers.get("content-transfer-encoding", "")).strip().lower() == "base64":
            self._leaf = self._at + body
        # A message of one part: its body runs to the end, a cut only if it is base64.
        self._done = not self._marks and self._leaf is None
        self._headers, self._line_start, self._pos = False, True, body
        return True

    def _read_body(self, cuts: list[int]) -> bool:
        """Find the next delimiter line of an open multipart; keep what may be part of one."""
        buf, pos = self._buf, self._pos
        if not self._marks:  # one base64 part to the end: only its length matters
            self._pos = len(buf)
            return False
        at = pos if self._line_start and buf.startswith(b"--", pos) else _dashes(buf, pos)
        while at >= 0:
            line_end = buf.find(b"\n", at)
            if line_end < 0 and len(buf) - at <= _DELIMITER_LINE_MAX:
                break  # the line may be a delimiter: wait for its end
            found = self._delimiter(buf[at : line_end if line_end >= 0 else len(buf)])
            if found is not None:
                depth, close, after = found
                # The line break before a delimiter is the delimiter's.
                crlf = at >= 2 and buf.startswith(b"\r\n", at - 2)
                self._end_leaf(self._at + at - (2 if crlf else 1), cuts)
                del self._marks[depth + (0 if close else 1) :]
                rest = at + after
                rest += 2 if buf.startswith(b"\r\n", rest) else 1
                self._pos = min(rest, len(buf))
                self._headers, self._line_start = not close, True
                self._done = close and not self._marks
                return True
            self._lookalikes += 1
            if self._lookalikes > _LOOKALIKES_MAX:
                self._done = True
                return False
            at = _dashes(buf, at)
        # No delimiter in what was read: keep only a last line that may still become one.
        last = buf.rfind(b"\n", pos)
        if last >= 0 and len(buf) - last <= _DELIMITER_LINE_MAX + 2:
            self._pos, self._line_start = last, False
        elif last >= 0 or len(buf) - pos > _DELIMITER_LINE_MAX:
            self._pos, self._line_start = len(buf), False
        return False

    def _delimiter(self, line: bytes) -> tuple[int, bool, int] | None:
        """(which open multipart, closing?, length up to the line break) if ``line`` is a
        delimiter; outer multiparts first, as their parts bound the inner ones."""
        for depth, mark in enumerate(self._marks):
            if not line.startswith(mark):
                continue
            after = len(mark)
            close = line.startswith(b"--", after)
            if close:
                after += 2
            while after < len(line) and line[after] in b" \t":
                after += 1
            if after == len(line) or line[after] in b"\r\n":
                return depth, close, after
        return None

    def _end_leaf(self, end: int, cuts: list[int]) -> None:
        if self._leaf is not None and end - self._leaf >= self._min:
            if not self._leaf_cut:
                cuts.append(self._leaf)
            cuts.append(end)
        self._leaf, self._leaf_cut = None, False


def _recipients(message: EmailMessage, header: str) -> list[dict[str, Any]]:
    values = [str(v) for v in message.get_all(header, [])]
    return [
        {"emailAddress": {"name": name, "address": addr}}
        for name, addr in getaddresses(values)
        if name or addr
    ]


def _text(part: Message | None) -> str | None:
    if not isinstance(part, EmailMessage):
        return None
    try:
        content = part.get_content()
    except (LookupError, UnicodeDecodeError):
        raw = part.get_payload(decode=True)
        content = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    return content if isinstance(content, str) else bytes(content).decode("utf-8", "replace")


def message_document(raw: bytes) -> dict[str, Any]:
    """A message's Graph JSON as its MIME carries it. Used for a message attached inside an
    attached message, which Graph lists only as MIME (its JSON stops at the first level)."""
    message = parse(raw)
    sent: str | None = None
    if message["Date"]:
        try:
            when = parsedate_to_datetime(str(message["Date"]))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            sent = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (TypeError, ValueError):
            sent = None
    html = _text(message.get_body(preferencelist=("html",)))
    text = _text(message.get_body(preferencelist=("plain",)))
    senders = _recipients(message, "From")
    importance = str(message.get("Importance", "normal")).lower()
    document: dict[str, Any] = {
        "subject": str(message.get("Subject", "")),
        "toRecipients": _recipients(message, "To"),
        "ccRecipients": _recipients(message, "Cc"),
        "replyTo": _recipients(message, "Reply-To"),
        "body": {"contentType": "html", "content": html}
        if html is not None
        else {"contentType": "text", "content": text or ""},
        "importance": importance if importance in ("low", "normal", "high") else "normal",
        "isRead": True,
    }
    if senders:
        document["from"] = document["sender"] = senders[0]
    if message.get("Message-ID"):
        document["internetMessageId"] = str(message["Message-ID"]).strip()
    if sent:
        document["sentDateTime"] = document["receivedDateTime"] = sent
    return document


def _norm(value: str | None) -> str:
    return (value or "").strip().strip("<>").strip().lower()


# A message's attachment either way: split out undecoded, or from the whole parse.
Part = EncodedAttachment | MimePart
PartT = TypeVar("PartT", EncodedAttachment, MimePart)


def match_file_attachments(
    attachments: Sequence[dict[str, Any]], parts: Sequence[PartT]
) -> dict[int, PartT]:
    """For each Graph file attachment (by index in ``attachments``), the MIME part that holds
    its bytes. Exchange writes attachments into the MIME in the order it lists them, so when
    names and Content-IDs leave a choice the first unused part wins."""
    files = [p for p in parts if p.kind == "file"]
    used: set[int] = set()
    found: dict[int, PartT] = {}
    rules = (
        lambda att, part: (
            bool(_norm(att.get("contentId")))
            and _norm(att.get("contentId")) == _norm(part.content_id)
        ),
        lambda att, part: bool(att.get("name")) and att.get("name") == part.name,
        lambda att, part: _norm(att.get("contentType")) == _norm(part.content_type),
    )
    wanted = [
        (index, att)
        for index, att in enumerate(attachments)
        if att.get("@odata.type", FILE_ATTACHMENT) == FILE_ATTACHMENT
    ]
    for rule in rules:
        for index, att in wanted:
            if index in found:
                continue
            for position, part in enumerate(files):
                if position not in used and rule(att, part):
                    used.add(position)
                    found[index] = part
                    break
    return found


def match_attached_messages(
    attachments: Sequence[dict[str, Any]], parts: Sequence[Part]
) -> dict[int, bytes]:
    """For each attached message (by index in ``attachments``), its RFC 822 bytes: Exchange
    writes attached messages into the MIME as ``message/rfc822`` parts in its own order."""
    found: dict[int, bytes] = {}
    inner = iter(p for p in parts if p.kind == "item")
    for index, att in enumerate(attachments):
        if att.get("@odata.type") != ITEM_ATTACHMENT:
            continue
        item = att.get("item") or {}
        odata = str(item.get("@odata.type") or "#microsoft.graph.message").lower()
        if odata.endswith(".message"):
            part = next(inner, None)
            if part is None:
                break
            found[index] = part.decoded()
    return found


# ---- mbox --------------------------------------------------------------------------------

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


def mbox_separator(sender: str | None, when: datetime | None) -> bytes:
    """The ``From `` line that opens each message of an mbox (address and asctime date)."""
    address = re.sub(r"\s+", "", sender or "") or "MAILER-DAEMON"
    moment = (when or datetime(1970, 1, 1, tzinfo=UTC)).astimezone(UTC)
    return f"From {address} {moment:%a %b %d %H:%M:%S %Y}\n".encode()


async def mboxrd_escape(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Quote ``From `` lines the mboxrd way (one more ``>`` on any ``>*From `` line), one
    line at a time so a message of any size streams through; ends with a newline."""
    pending = b""
    last = b"\n"
    async for chunk in chunks:
        data = pending + chunk
        cut = data.rfind(b"\n") + 1
        pending = data[cut:]
        if cut:
            out = _FROM_LINE.sub(rb">\1", data[:cut])
            last = out[-1:]
            yield out
    if pending:
        yield _FROM_LINE.sub(rb">\1", pending) + b"\n"
    elif last != b"\n":
        yield b"\n"


def mboxrd_unescape(body: bytes) -> bytes:
    """The inverse of ``mboxrd_escape`` for one message (tests and importers)."""
    return re.sub(rb"^>(>*From )", rb"\1", body, flags=re.MULTILINE)
