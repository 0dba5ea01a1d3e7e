"""The shared parser of the user's search text, and the plan built from a query."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from safekeep.search import InvalidCursor, InvalidQuery, SearchQuery
from safekeep.search.query import plan, render_highlight, render_highlights
from safekeep.search.syntax import MAX_ATOMS, Atom, Clause, parse


def words(*texts: str) -> tuple[Clause, ...]:
    return tuple(Clause((Atom(t),)) for t in texts)


def test_words_phrases_prefixes() -> None:
    parsed = parse('contoso "annual  report" rep* "q3 fore"*')
    assert parsed.must == (
        Clause((Atom("contoso"),)),
        Clause((Atom("annual report", phrase=True),)),
        Clause((Atom("rep", prefix=True),)),
        Clause((Atom("q3 fore", phrase=True, prefix=True),)),
    )
    assert parsed.must_not == ()


def test_negation_and_alternatives() -> None:
    parsed = parse("invoice OR receipt -spam NOT junk AND paid")
    assert parsed.must == (Clause((Atom("invoice"), Atom("receipt"))), Clause((Atom("paid"),)))
    assert parsed.must_not == (Atom("spam"), Atom("junk"))


def test_lenient_forms() -> None:
    assert parse('"unbalanced phrase').must == (Clause((Atom("unbalanced phrase", phrase=True),)),)
    assert parse("OR invoice OR").must == words("invoice")
    assert parse("a - b").must == words("a", "b")
    assert parse("title:x").must == words("title:x")
    assert parse("inv*oice").must == words("inv oice")
    assert parse("x -").must == words("x")
    assert parse("AND OR NOT *").must == words("and", "or", "not")


def test_duplicates_collapse_and_empty_text_is_empty() -> None:
    assert parse("a a A").must == words("a", "A")  # case is the analyzer's business
    assert parse("   ").empty
    assert parse("").empty


@pytest.mark.parametrize("text", ["*", "- -", '""', "!!!", "—", "\u0301"])
def test_nothing_to_search_for(text: str) -> None:
    with pytest.raises(InvalidQuery):
        parse(text)


def test_too_many_terms() -> None:
    parse(" ".join(f"w{i}" for i in range(MAX_ATOMS)))
    with pytest.raises(InvalidQuery):
        parse(" ".join(f"w{i}" for i in range(MAX_ATOMS + 1)))


def query(**kw: object) -> SearchQuery:
    return SearchQuery(tenant_ids=frozenset({"t1"}), **kw)


def test_plan_normalises_filters() -> None:
    p = plan(
        query(
            folder="/Inbox/Projekte Ü/",
            file_types=frozenset({".PDF", "docx", " "}),
            sender="anna*",
            at=datetime(2026, 3, 1),
        )
    )
    assert p.folder_key == "/inbox/projekte u"
    assert p.file_types == ("docx", "pdf")
    assert p.sender == Atom("anna", phrase=True)
    assert p.time.at == int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)
    assert plan(query(folder="/")).folder_key is None


def test_relevance_without_words_sorts_by_date() -> None:
    assert plan(query()).order == "date_desc"
    assert plan(query(text="-spam")).order == "date_desc"
    assert plan(query(text="ham")).order == "relevance"


def test_cursor_round_trip_and_binding() -> None:
    p = plan(query(text="invoice"))
    cursor = p.cursor_for(1.25, "t1/v9")
    assert plan(query(text="invoice", cursor=cursor, limit=50)).after == (1.25, "t1/v9")
    with pytest.raises(InvalidCursor):
        plan(query(text="invoices", cursor=cursor))
    with pytest.raises(InvalidCursor):
        plan(query(text="invoice", sort="date_desc", cursor=cursor))


@pytest.mark.parametrize(
    "payload",
    [
        {"f": "x", "k": 1},
        {"f": None, "k": 1, "v": "a"},
        [1, 2, 3],
        "string",
    ],
)
def test_forged_cursors(payload: object) -> None:
    token = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(InvalidCursor):
        plan(query(text="invoice", cursor=token))


def test_forged_cursor_with_the_right_fingerprint_but_wrong_types() -> None:
    fingerprint = plan(query(sort="date_desc")).fingerprint
    for key, version in ((1.5, "t1/v"), (True, "t1/v"), (3, 4)):
        token = base64.urlsafe_b64encode(
            json.dumps({"f": fingerprint, "k": key, "v": version}).encode()
        ).decode()
        with pytest.raises(InvalidCursor):
            plan(query(sort="date_desc", cursor=token))


def test_highlights_escape_the_document_and_merge_adjacent_marks() -> None:
    fragment = "a <b>\ue000big\ue001 \ue000deal\ue001</b> & \ue000日\ue001\ue000本\ue001"
    assert render_highlight(fragment, "\ue000", "\ue001") == (
        "a &lt;b&gt;<mark>big deal</mark>&lt;/b&gt; &amp; <mark>日本</mark>"
    )


def test_a_page_of_fragments_renders_as_each_fragment_would_alone() -> None:
    fragments = [
        "a <b>\ue000big\ue001 \ue000deal\ue001</b>",
        "",
        # marks at the ends of two fragments must not merge across them
        "ends \ue000marked\ue001",
        "\ue000starts\ue001 marked & \u200bjoined",
        "\ue000日\ue001\ue000本\ue001",
    ]
    alone = [render_highlight(f, "\ue000", "\ue001") for f in fragments]
    assert render_highlights(fragments, "\ue000", "\ue001") == alone
    assert alone[2] == "ends <mark>marked</mark>" and alone[3].startswith("<mark>starts</mark>")
    assert render_highlights([], "\ue000", "\ue001") == []
    # A NUL (never written since documents are cleaned) cannot shift fragments between hits.
    odd = ["x\x00y \ue000z\ue001", "\ue000w\ue001"]
    assert render_highlights(odd, "\ue000", "\ue001") == [
        render_highlight(f, "\ue000", "\ue001") for f in odd
    ]
