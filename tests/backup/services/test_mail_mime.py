"""The MIME helpers of the mail service: attachment parts, matching Graph's attachment list
to them, mboxrd quoting, and the Graph JSON kept as a version's document."""

from __future__ import annotations

import email.policy
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from safekeep.backup.services.mail.collect import document_of, folder_change_key
from safekeep.backup.services.mail.export import file_stem
from safekeep.backup.services.mail.mime import (
    attachment_parts,
    attachments,
    match_file_attachments,
    mbox_separator,
    mboxrd_escape,
    mboxrd_unescape,
)
from safekeep.backup.services.mail.restore import creatable


def _message() -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg["Subject"] = "parts"
    msg.set_content("plain body\n")
    msg.add_alternative('<p>html <img src="cid:one@x"></p>', subtype="html")
    html = msg.get_body(preferencelist=("html",))
    assert isinstance(html, EmailMessage)
    html.add_related(b"\x89PNG one", "image", "png", cid="<one@x>", disposition="inline")
    html.add_related(b"\x89PNG two", "image", "png", cid="<two@x>", filename="same.png")
    msg.add_attachment(b"first", "application", "pdf", filename="Bericht Größe.pdf")
    msg.add_attachment(b"second", "application", "pdf", filename="same.png")
    inner = EmailMessage(policy=email.policy.SMTP)
    inner["Subject"] = "inner"
    inner.set_content("inner body\n")
    msg.add_attachment(inner)
    return msg.as_bytes()


def test_attachment_parts_skip_bodies_and_keep_names_ids_and_bytes() -> None:
    parts = attachment_parts(_message())
    assert [(p.kind, p.name, p.content_id, p.inline) for p in parts] == [
        ("file", None, "one@x", True),
        ("file", "same.png", "two@x", False),  # a filename makes it an attachment
        ("file", "Bericht Größe.pdf", None, False),
        ("file", "same.png", None, False),
        ("item", None, None, False),
    ]
    assert [p.data for p in parts[:4]] == [b"\x89PNG one", b"\x89PNG two", b"first", b"second"]
    assert b"Subject: inner" in parts[4].data


def test_graph_attachments_match_parts_by_content_id_then_name_then_type() -> None:
    parts = list(attachments(_message()))
    graph: list[dict[str, Any]] = [
        {"@odata.type": "#microsoft.graph.fileAttachment", "name": "same.png", "contentId": None},
        {"@odata.type": "#microsoft.graph.itemAttachment", "name": "inner"},
        {"name": "Bericht Größe.pdf", "contentType": "application/pdf"},
        {"name": "image001.png", "contentId": "two@x", "contentType": "image/png"},
        {"name": "image002.png", "contentType": "image/png"},
    ]
    found = match_file_attachments(graph, parts)
    assert 1 not in found  # an item attachment is not a file part
    assert found[3].decoded() == b"\x89PNG two"  # by Content-ID, whatever the name
    assert found[2].decoded() == b"first"  # by name
    assert found[0].decoded() == b"second"  # by name, the part "two@x" being taken
    assert found[4].decoded() == b"\x89PNG one"  # by type, the only image left


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[last:cut]
        last = cut
    yield data[last:]


async def _escaped(data: bytes, cuts: list[int]) -> bytes:
    return b"".join([c async for c in mboxrd_escape(_chunks(data, cuts))])


lines = st.lists(
    st.sampled_from([b"From me", b">From you", b">>From x", b"From", b"text", b"", b" From "])
    | st.binary(max_size=12).filter(lambda b: b"\n" not in b),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(lines=lines, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
async def test_mboxrd_escaping_is_reversible_across_chunk_boundaries(
    lines: list[bytes], cuts: list[int]
) -> None:
    data = b"\r\n".join(lines) + b"\r\n"
    escaped = await _escaped(data, cuts)
    assert escaped == await _escaped(data, [])  # where chunks end does not matter
    assert not any(line.startswith(b"From ") for line in escaped.split(b"\n"))
    assert mboxrd_unescape(escaped) == data


async def test_mboxrd_ends_every_message_with_a_newline() -> None:
    assert await _escaped(b"no newline at the end", [5]) == b"no newline at the end\n"
    assert await _escaped(b"From start\n", []) == b">From start\n"


def test_mbox_separator_is_a_from_line() -> None:
    from datetime import UTC, datetime

    line = mbox_separator("a b@example.com", datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC))
    assert line == b"From ab@example.com Tue Mar 04 05:06:07 2025\n"
    assert mbox_separator(None, None).startswith(b"From MAILER-DAEMON ")


def test_document_keeps_metadata_but_not_attachment_bytes() -> None:
    message = {
        "@odata.context": "x",
        "@odata.etag": 'W/"1"',
        "id": "m",
        "attachments": [
            {"name": "a.txt", "contentBytes": "aGk=", "size": 202},
            {"name": "inner", "item": {"id": "i", "@odata.etag": "e", "subject": "s"}},
        ],
    }
    doc = document_of(message)
    assert doc == {
        "id": "m",
        "attachments": [
            {"name": "a.txt", "size": 202},
            {"name": "inner", "item": {"id": "i", "subject": "s"}},
        ],
    }


def test_folder_change_key_ignores_counts() -> None:
    base = {"id": "f", "displayName": "Inbox", "parentFolderId": "r", "unreadItemCount": 1}
    assert folder_change_key(base) == folder_change_key({**base, "unreadItemCount": 7})
    assert folder_change_key(base) != folder_change_key({**base, "displayName": "In"})


def test_creatable_message_is_received_read_and_dated() -> None:
    body = creatable(
        {
            "id": "x",
            "changeKey": "k",
            "subject": "s",
            "isRead": True,
            "isDraft": False,
            "sentDateTime": "2025-01-01T10:00:00Z",
            "receivedDateTime": "2025-01-01T10:00:05Z",
            "parentFolderId": "p",
        }
    )
    assert "id" not in body and "changeKey" not in body and "parentFolderId" not in body
    props = {p["id"]: p["value"] for p in body["singleValueExtendedProperties"]}
    assert props == {
        "Integer 0x0E07": "5",  # submitted and read, not unsent
        "SystemTime 0x0039": "2025-01-01T10:00:00Z",
        "SystemTime 0x0E06": "2025-01-01T10:00:05Z",
    }
    draft = creatable({"subject": "d", "isDraft": True, "isRead": False})
    assert draft["singleValueExtendedProperties"][0]["value"] == str(0x4 | 0x8)


def test_file_stem_has_no_path_separators() -> None:
    assert file_stem("a/b\\c") == "a_b_c"
    assert file_stem("  ") == "(no subject)"
    assert len(file_stem("x" * 500)) == 120


def test_the_parsing_policy_reads_headers_as_the_default_policy_does() -> None:
    """``mime.POLICY`` only caches header classes: every header reads back as with
    ``email.policy.default`` (encoded words, RFC 2231 names, addresses, dates), and the
    classes it hands out stay few whatever header names a message invents."""
    from email import message_from_bytes

    from safekeep.backup.services.mail.mime import POLICY, parse

    raw = (
        b"From: =?utf-8?q?J=C3=BCrg_M=C3=BCller?= <jm@example.com>\r\n"
        b'To: a@example.com, "B, C" <bc@example.com>\r\n'
        b"Subject: =?utf-8?b?w5xiZXJzaWNodA==?=\r\n"
        b"Date: Tue, 03 Dec 2024 10:00:00 +0100\r\n"
        + b"".join(b"X-Invented-%d: v\r\n" % n for n in range(50))
        + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''%C3%9Cbersicht%201.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n"
    )
    cached, default = parse(raw), message_from_bytes(raw, policy=email.policy.default)
    for name in ("From", "To", "Subject", "Date", "X-Invented-7", "Content-Type"):
        assert str(cached[name]) == str(default[name])
        assert type(cached[name]).__mro__[1:] == type(default[name]).__mro__[1:]
    assert cached["Date"].datetime == default["Date"].datetime
    assert [a.addr_spec for a in cached["To"].addresses] == ["a@example.com", "bc@example.com"]
    parts = attachment_parts(raw)
    assert [(p.name, p.data) for p in parts] == [("Übersicht 1.pdf", b"%PDF-")]
    for name in cached:  # every header read once: 50 invented names among them
        assert str(cached[name]) == str(default[name])
    assert len(POLICY.header_factory._made) < 20  # type: ignore[attr-defined]


def test_each_header_is_parsed_once_however_often_it_is_read(
    header_parses: list[tuple[str, str]],
) -> None:
    """Choosing parts reads a part's Content-Type and Content-Disposition several times, and
    the same short headers come in message after message; each is parsed once and the same
    (immutable) object handed out again, which answers as a new parse would."""
    from safekeep.backup.services.mail import mime

    parsed = header_parses
    raw = _message()
    names = [p.name for p in mime.file_attachments(raw, lambda _n, _t: True, 1 << 20)]
    walk = list(parsed)
    assert walk and len(set(walk)) == len(walk)  # each parsed once in the walk
    assert ("Content-Type", "application/pdf") in walk

    parsed.clear()
    assert [p.name for p in attachment_parts(raw) if p.kind == "file"] == names
    assert ("Content-Type", "application/pdf") not in parsed  # parsed by the walk already
    assert all(len(value) > mime._PARSED_VALUE_MAX for _, value in parsed)

    message = mime.parse(raw)
    parsed.clear()
    assert [message.get_content_type() for _ in range(3)] == ["multipart/mixed"] * 3
    assert message["Content-Type"] is message["Content-Type"]
    assert message["Content-Type"] is mime.parse(raw)["Content-Type"]
    assert parsed == []


def test_what_is_kept_of_parsed_headers_is_bounded(header_parses: list[tuple[str, str]]) -> None:
    """A parsed header is about 10 KB of objects: kept for every distinct header of a hostile
    message of 100,000 parts, that was 1.95 GB. The latest few hundred short ones are kept."""
    from safekeep.backup.services.mail import mime

    factory: Any = mime.message_policy().header_factory
    standard = email.policy.default.header_factory
    for n in range(mime._PARSED_KEPT + 100):
        value = f"text/plain; n={n}"
        assert str(factory("Content-Type", value)) == str(standard("Content-Type", value))
    long = factory("Subject", "x" * 10_000)
    assert str(long) == "x" * 10_000
    assert mime._parsed.cache_info().currsize == mime._PARSED_KEPT
    header_parses.clear()
    factory("Subject", "x" * 10_000)
    factory("Content-Type", f"text/plain; n={mime._PARSED_KEPT + 99}")  # the latest are kept
    assert header_parses == [("Subject", "x" * 10_000)]  # a long one is never kept
    factory("Content-Type", "text/plain; n=0")
    assert header_parses[-1] == ("Content-Type", "text/plain; n=0")  # the oldest went
