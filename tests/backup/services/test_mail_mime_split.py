"""``file_attachments`` (the MIME split at its boundaries, only chosen parts parsed) gives the
file attachments ``attachment_parts`` (the whole message parsed by ``email``) gives: the same
parts, in the same order, with the same bytes — on built messages of every shape and on raw
MIME that bends the rules."""

from __future__ import annotations

import base64
import email.policy
from email.message import EmailMessage
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from safekeep.backup.services.mail.mime import (
    MimePart,
    attachment_parts,
    attachments,
    file_attachments,
)


def _as_tuple(part: MimePart) -> tuple[object, ...]:
    return (part.kind, part.name, part.content_type, part.content_id, part.inline, part.data)


def _every(_name: str | None, _ctype: str) -> bool:
    return True


def _same_as_whole_parse(raw: bytes) -> list[tuple[object, ...]]:
    """Checks the split against the whole parse: the file attachments (decoded), and every
    attachment with attached messages (decoded when asked); answers the file attachments."""
    whole = [_as_tuple(p) for p in attachment_parts(raw)]
    every = [
        (p.kind, p.name, p.content_type, p.content_id, p.inline, p.decoded())
        for p in attachments(raw)
    ]
    assert every == whole
    split = [_as_tuple(p) for p in file_attachments(raw, _every, 1 << 30)]
    assert split == [part for part in whole if part[0] == "file"]
    for part in attachments(raw):
        if part.kind == "file":
            assert part.may_decode_within(len(part.decoded()))
    return split


# ---- messages built with the standard library -----------------------------------------------

LEAVES = st.sampled_from(
    [
        ("attachment", "report.docx", "application", "octet-stream"),
        ("attachment", "notes.txt", "text", "plain"),
        ("attachment", "table.csv", "text", "csv"),
        ("inline", "logo.png", "image", "png"),
        ("inline", None, "text", "plain"),
        (None, None, "image", "gif"),
        ("attachment", "Grüße & Bericht.pdf", "application", "pdf"),
    ]
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    linesep = draw(st.sampled_from(["\r\n", "\n"]))
    policy = email.policy.SMTP.clone(linesep=linesep)
    msg = EmailMessage(policy=policy)
    msg["Subject"] = "shapes"
    msg.set_content(draw(st.text(min_size=0, max_size=40)) + "\n")
    if draw(st.booleans()):
        msg.add_alternative("<p>html</p>", subtype="html")
        if draw(st.booleans()):
            html = msg.get_body(preferencelist=("html",))
            assert isinstance(html, EmailMessage)
            html.add_related(b"\x89PNG", "image", "png", cid="<img@x>", disposition="inline")
    for n, (disposition, name, maintype, subtype) in enumerate(
        draw(st.lists(LEAVES, min_size=0, max_size=5))
    ):
        payload = draw(st.binary(min_size=0, max_size=300))
        cte = draw(st.sampled_from(["base64", "quoted-printable"]))
        if maintype == "text":
            text = payload.decode("latin-1")
            msg.add_attachment(
                text, subtype=subtype, disposition=disposition, filename=name, cte=cte
            )
        else:
            msg.add_attachment(
                payload,
                maintype,
                subtype,
                disposition=disposition,
                filename=name,
                cid=f"<c{n}@x>" if disposition != "attachment" else None,
                cte="base64",
            )
    if draw(st.booleans()):
        inner = EmailMessage(policy=policy)
        inner["Subject"] = "inner"
        inner.set_content("inner body\n")
        msg.add_attachment(inner)
    for n, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"=_b{n}")  # email would draw one from ``random``
    return msg.as_bytes()


@settings(max_examples=150, deadline=None)
@given(messages())
def test_split_gives_the_whole_parse_file_attachments(raw: bytes) -> None:
    _same_as_whole_parse(raw)


def test_a_typical_message_yields_its_attachments_and_skips_its_bodies() -> None:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = "parts"
    msg.set_content("plain body\n")
    msg.add_alternative("<p>html</p>", subtype="html")
    msg.add_attachment(b"%PDF one", "application", "pdf", filename="a.pdf")
    msg.add_attachment("x,y\n1,2\n", subtype="csv", filename="t.csv")
    found = _same_as_whole_parse(msg.as_bytes())
    assert [(f[1], f[5]) for f in found] == [("a.pdf", b"%PDF one"), ("t.csv", b"x,y\r\n1,2\r\n")]


# ---- raw MIME that bends the rules -------------------------------------------------------------


def _raw(body: str, ctype: str = 'multipart/mixed; boundary="b1"') -> bytes:
    return f"Subject: raw\r\nMIME-Version: 1.0\r\nContent-Type: {ctype}\r\n\r\n{body}".encode()


ATTACHMENT = (
    "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nA-TEXT"
)


def test_preamble_epilogue_and_look_alike_boundary_lines() -> None:
    raw = _raw(
        "preamble --b1 not a delimiter\r\n"
        "--b1\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b1x not a delimiter either\r\n"
        f"--b1   \r\n{ATTACHMENT}\r\n--b1--\r\nepilogue\r\n"
    )
    assert [f[5] for f in _same_as_whole_parse(raw)] == [b"A-TEXT"]


def test_an_empty_part_between_two_delimiters() -> None:
    for linebreak in ("\r\n", "\n"):
        raw = _raw(f"--b1{linebreak}--b1\r\n{ATTACHMENT}\r\n--b1--\r\n")
        assert [f[5] for f in _same_as_whole_parse(raw)] == [b"A-TEXT"]


def test_a_missing_closing_delimiter_ends_the_last_part_at_the_end() -> None:
    for end in ("", "\r\n", "\n", "\r\n\r\n"):
        raw = _raw(f"--b1\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b1\r\n{ATTACHMENT}{end}")
        assert _same_as_whole_parse(raw)[0][1] == "a.txt"


def test_related_with_a_start_parameter_chooses_its_body_as_get_body_does() -> None:
    related = (
        "--b2\r\nContent-Type: image/png\r\nContent-ID: <i@x>\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n"
        "--b2\r\nContent-Type: text/html\r\nContent-ID: <start@x>\r\n\r\n<p>body</p>\r\n"
        "--b2--"
    )
    raw = _raw(
        '--b1\r\nContent-Type: multipart/related; boundary="b2"; start="<start@x>"\r\n\r\n'
        f"{related}\r\n--b1\r\n{ATTACHMENT}\r\n--b1--\r\n"
    )
    found = _same_as_whole_parse(raw)
    assert [(f[2], f[3]) for f in found] == [("image/png", "i@x"), ("text/plain", None)]


def test_a_digest_defaults_its_parts_to_attached_messages_and_lf_only_mime_splits() -> None:
    digest = _raw(
        "--b1\n\nSubject: one\n\nfirst\n--b1\nContent-Type: application/pdf\n"
        "Content-Disposition: attachment; filename=d.pdf\n\nPDF\n--b1--\n",
        ctype='multipart/digest; boundary="b1"',
    ).replace(b"\r\n", b"\n")
    assert [f[1] for f in _same_as_whole_parse(digest)] == ["d.pdf"]


def test_not_multipart_at_all() -> None:
    raw = (
        b"Subject: one part\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename=only.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
    )
    assert [f[5] for f in _same_as_whole_parse(raw)] == [b"%PDF"]
    assert _same_as_whole_parse(b"Subject: plain\r\n\r\njust text\r\n") == []


def test_the_choice_and_the_size_bound_are_applied_before_decoding() -> None:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg.set_content("body\n")
    msg.add_attachment(b"x" * 5000, "application", "pdf", filename="big.pdf")
    msg.add_attachment(b"y" * 50, "application", "pdf", filename="small.pdf")
    msg.add_attachment(b"z" * 50, "image", "png", filename="photo.png")
    raw = msg.as_bytes()

    def pdf(name: str | None, _ctype: str) -> bool:
        return bool(name and name.endswith(".pdf"))

    assert [p.name for p in file_attachments(raw, pdf, 1 << 20)] == ["big.pdf", "small.pdf"]
    assert [p.name for p in file_attachments(raw, pdf, 1000)] == ["small.pdf"]


def test_transfer_encodings_decode_as_get_payload_does_even_when_broken() -> None:
    bodies = {
        "base64": ["JVBERi0xLjQK", "JVBERi0xLjQ", "JVBE\r\nRi0x\r\nLjQK", "JVB!ERi0xLjQK", "J"],
        "quoted-printable": ["caf=C3=A9 =\r\nsoft break", "bad =ZZ escape"],
        "8bit": ["caf\u00e9 raw 8-bit"],
        "x-uuencode": ["begin 644 a.txt\r\n#86)C\r\n`\r\nend"],
    }
    for cte, variants in bodies.items():
        for body in variants:
            raw = _raw(
                "--b1\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
                f"--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: {cte}\r\n"
                f"Content-Disposition: attachment; filename=a.txt\r\n\r\n{body}\r\n--b1--\r\n"
            )
            assert len(_same_as_whole_parse(raw)) == 1, (cte, body)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=90),
    st.text(alphabet="ABab09+/=\r\n !*-_", max_size=30),
    st.sampled_from(["clean", "cut", "junk after", "junk before"]),
    st.sampled_from(["\r\n", "\n", "\r"]),
)
def test_base64_bodies_decode_as_get_payload_does_whatever_their_shape(
    payload: bytes, noise: str, shape: str, linebreak: str
) -> None:
    # Well-formed base64 takes the fast decoder, the rest the lenient one: both must answer
    # what the whole parse answers, whichever line breaks (CRLF, LF, a lone CR) it has.
    encoded = base64.encodebytes(payload).decode().replace("\n", linebreak)
    body = {
        "clean": encoded,
        "cut": encoded[: max(0, len(encoded) - 3)],
        "junk after": encoded + noise,
        "junk before": noise + encoded,
    }[shape]
    raw = _raw(
        "--b1\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        "--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment; filename=a.bin\r\n\r\n{body}\r\n--b1--\r\n"
    )
    _same_as_whole_parse(raw)


def test_hostile_nesting_is_bounded_and_what_lies_above_it_is_still_found() -> None:
    """A message is content anyone can send to a mailbox: 500 nested multiparts neither
    recurse without bound nor hide the attachment beside the first level."""
    depth = 500
    inner = "Content-Type: text/plain\r\n\r\ndeep"
    for level in range(depth, 1, -1):
        inner = (
            f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n'
            f"--n{level}\r\n{inner}\r\n--n{level}--"
        )
    raw = _raw(f"--b1\r\n{ATTACHMENT}\r\n--b1\r\n{inner}\r\n--b1--\r\n")
    found = [p.data for p in file_attachments(raw, _every, 1 << 20)]
    assert found == [b"A-TEXT"]


def test_a_flood_of_parts_is_read_up_to_the_bound_and_no_further(
    monkeypatch: Any, header_parses: list[tuple[str, str]]
) -> None:
    """Anyone can mail a user 100,000 empty parts in 10 MB: read whole, the walk took 18.6 s
    of CPU and 97 MB. It reads the first ``_MAX_PARTS`` (nested ones count too), so search
    gets those attachments' text and the rest of the message is not split; a message within
    the bound is read whole, as before."""
    from safekeep.backup.services.mail import mime

    monkeypatch.setattr(mime, "_MAX_PARTS", 50)
    nested = _raw(f"--b2\r\n{ATTACHMENT}\r\n--b2--", 'multipart/mixed; boundary="b2"')
    nested = nested.split(b"\r\n", 2)[2]  # the inner part: its Content-Type, then its body
    flood = "".join(
        f"--b1\r\nContent-Type: text/plain; n={n}\r\n"
        f"Content-Disposition: attachment; filename=a{n}.txt\r\n\r\nT{n}\r\n"
        for n in range(10_000)
    )
    raw = _raw(f"--b1\r\n{nested.decode()}\r\n{flood}--b1--\r\n")
    found = [p.data for p in file_attachments(raw, _every, 1 << 20)]
    # The nested multipart and its attachment are the first two of the 50 parts read.
    assert found == [b"A-TEXT"] + [f"T{n}".encode() for n in range(48)]
    assert len(header_parses) < 50 * 6  # a few headers a part, not 10,000 parts' worth

    within = _raw(f"--b1\r\n{nested.decode()}\r\n{flood[: flood.index('--b1', 2000)]}--b1--\r\n")
    assert len(_same_as_whole_parse(within)) < 50
