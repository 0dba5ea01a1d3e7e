"""Bounds and normalisation applied to every document before either backend writes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from safekeep.search.documents import (
    MAX_LIST_ITEMS,
    bounded,
    clean,
    fold,
    folder_key,
    from_micros,
    to_micros,
    truncate,
)
from tests.search.docs import doc


def test_text_is_cut_at_a_word_boundary() -> None:
    text = "alpha beta gamma delta"
    assert truncate(text, 100) == text
    assert truncate(text, 13) == "alpha beta"
    assert truncate("x" * 50, 10) == "x" * 10


def test_bounded_cuts_long_fields_and_strips_reserved_characters() -> None:
    big = doc(
        body="word " * 1_000,
        attachment_text="text " * 1_000,
        recipients=[f"r{i}@x.example" for i in range(MAX_LIST_ITEMS + 50)] + [""],
        title="A \ue000forged\ue001 mark\x00 and a\u200bzero-width space",
    )
    small = bounded(big, max_text_chars=100)
    assert len(small.body) <= 100
    assert len(small.attachment_text) <= 100
    assert len(small.recipients) == MAX_LIST_ITEMS
    assert small.title == "A forged mark and a zero-width space"


@given(st.text(alphabet=st.sampled_from("ab é€😀\ue000\ue001\u200b\x00"), max_size=40))
def test_clean_removes_the_reserved_characters_and_nothing_else(text: str) -> None:
    expected = "".join(
        {"\ue000": "", "\ue001": "", "\u200b": " ", "\x00": ""}.get(c, c) for c in text
    )
    assert clean(text) == expected


def test_folder_keys() -> None:
    assert folder_key("/Inbox/Projects/") == "/inbox/projects"
    assert folder_key("Inbox//Ärger ") == "/inbox/arger"
    assert folder_key("") == "/"
    assert fold("Straße É") == "strasse e"


def test_instants_are_exact_microseconds_in_utc() -> None:
    moment = datetime(2026, 3, 1, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert from_micros(to_micros(moment)) == moment
    assert from_micros(to_micros(moment)).tzinfo == UTC
    assert to_micros(datetime(1970, 1, 1, 0, 0, 0, 1)) == 1


def test_naive_datetimes_are_utc_and_file_types_bare() -> None:
    d = doc(valid_from=datetime(2026, 1, 1), file_type=".DOCX")
    assert d.valid_from.tzinfo == UTC
    assert d.file_type == "docx"
    assert d.sort_time == d.date
    assert doc(date=None).sort_time == doc(date=None).valid_from
