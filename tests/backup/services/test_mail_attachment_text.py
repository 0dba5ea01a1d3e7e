"""Attachment text is read once per tenant and content: a message whose attachment another
message of the tenant carried answers its text from ``TEXTS`` without decoding or
extracting it again, and the text is the one extraction would give."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from email.message import EmailMessage

import pytest

from safekeep.backup.services.mail import search
from safekeep.backup.services.mail.mime import file_attachments
from safekeep.search.extract import TextMemo, extract_text


def _message(body: str, *attachments: tuple[str, str, bytes]) -> bytes:
    msg = EmailMessage()
    msg["Subject"] = body
    msg.set_content(body)
    for name, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


AGENDA = ("agenda.txt", "text/plain", b"Quarterly zephyrine review, all hands\n" * 20)
MINUTES = ("minutes.csv", "text/csv", b"item,owner\nbudget,ana\nhiring,ben\n")


@pytest.fixture
def extractions(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """A fresh memo, and the names of the attachments actually extracted."""
    seen: list[str | None] = []
    real = search._part_text

    def counted(part: object, limit: int) -> str:
        seen.append(getattr(part, "name", None))
        return real(part, limit)  # type: ignore[arg-type]

    monkeypatch.setattr(search, "TEXTS", TextMemo())
    monkeypatch.setattr(search, "_part_text", counted)
    return seen


def _extracted(raw: bytes, limit: int) -> str:
    """The text as read without the memo: every text-bearing attachment decoded and read."""
    texts, budget = [], limit
    for part in file_attachments(raw, search._text_bearing, search.EXTRACT_MAX_BYTES):
        if budget <= 0:
            break
        text = extract_text(part.name or "", part.content_type, part.data, limit=limit)[:budget]
        if text:
            texts.append(text)
            budget -= len(text) + 1
    return "\n".join(texts)


def test_an_attachment_seen_before_in_the_tenant_is_not_read_again(
    extractions: list[str | None],
) -> None:
    tenant = uuid.uuid4()
    first = _message("one", AGENDA, MINUTES)
    second = _message("a different message", MINUTES, AGENDA)

    assert search._attachment_text(first, 10_000, tenant) == _extracted(first, 10_000)
    assert extractions == ["agenda.txt", "minutes.csv"]
    text = search._attachment_text(second, 10_000, tenant)

    assert text == _extracted(second, 10_000)
    assert "zephyrine" in text and "hiring" in text
    assert extractions == ["agenda.txt", "minutes.csv"]  # both answered from memory
    assert search.TEXTS.hits == 2


def test_another_tenant_or_another_limit_reads_the_attachment_itself(
    extractions: list[str | None],
) -> None:
    raw = _message("one", AGENDA)
    search._attachment_text(raw, 10_000, uuid.uuid4())
    search._attachment_text(raw, 10_000, uuid.uuid4())
    short = search._attachment_text(raw, 30, tenant := uuid.uuid4())

    assert extractions == ["agenda.txt"] * 3
    assert short == _extracted(raw, 30) and len(short) <= 30
    assert search._attachment_text(raw, 30, tenant) == short
    assert len(extractions) == 3


def test_what_is_left_of_the_limit_cuts_a_later_attachment(
    extractions: list[str | None],
) -> None:
    tenant = uuid.uuid4()
    search._attachment_text(_message("one", AGENDA), 500, tenant)
    both = _message("two", MINUTES, AGENDA)
    text = search._attachment_text(both, 500, tenant)

    assert text == _extracted(both, 500)
    minutes = extract_text(*MINUTES, limit=500)
    assert text.startswith(minutes + "\n")
    assert len(text) == 500  # the agenda's text, cut to what the minutes left of the 500
    assert extractions == ["agenda.txt", "minutes.csv"]


def test_the_same_bytes_under_another_type_are_read_as_that_type(
    extractions: list[str | None],
) -> None:
    tenant = uuid.uuid4()
    data = b"<p>Quarterly <b>zephyrine</b> review</p>"
    as_text = _message("one", ("page.txt", "text/plain", data))
    as_html = _message("two", ("page.html", "text/html", data))

    assert "<b>" in search._attachment_text(as_text, 10_000, tenant)
    assert search._attachment_text(as_html, 10_000, tenant) == "Quarterly zephyrine review"
    assert extractions == ["page.txt", "page.html"]


def test_the_memo_keeps_what_it_read_within_its_bounds() -> None:
    calls: list[str] = []

    def reading(text: str) -> Callable[[], str]:
        def read() -> str:
            calls.append(text)
            return text

        return read

    memo = TextMemo(max_chars=10, max_texts=3)
    assert memo.text("a", reading("aaaa")) == "aaaa"
    assert memo.text("a", reading("other")) == "aaaa"  # kept: not read again
    memo.text("b", reading("bbbb"))
    memo.text("a", reading("aaaa"))  # a is now the most recently used
    memo.text("c", reading("cccc"))  # 12 characters: the least recently used (b) goes
    assert calls == ["aaaa", "bbbb", "cccc"]
    memo.text("a", reading("aaaa"))
    memo.text("b", reading("bbbb"))
    assert calls == ["aaaa", "bbbb", "cccc", "bbbb"]

    memo.text("long", reading("x" * 11))  # longer than the whole memo: answered, not kept
    memo.text("long", reading("x" * 11))
    assert calls[-2:] == ["x" * 11, "x" * 11]

    counted = TextMemo(max_chars=1000, max_texts=2)
    for key in ("", "1", "2"):
        counted.text(key, reading(""))  # empty texts count against max_texts
    counted.text("", reading(""))
    assert calls[-4:] == ["", "", "", ""]
    assert (counted.hits, counted.misses) == (0, 4)
