"""The behaviour both backends must share: every test runs on SQLite FTS5 and on OpenSearch."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from safekeep.search import InvalidCursor, InvalidQuery, SearchBackend, SearchDocument
from safekeep.search.documents import folder_key
from safekeep.search.query import MAX_FOLDER_KEY_CHARS
from tests.search.docs import T0, doc, ids, q

# -- free text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "Quarterly zephyrine review"),
        ("sender", "Zephyrine Ltd <billing@fabrikam.example>"),
        ("recipients", ["Zephyrine Team <team@contoso.example>"]),
        ("people", ["Zephyrine Okafor", "+44 20 7946 0000"]),
        ("location", "Zephyrine meeting room"),
        ("body", "Please find the zephyrine figures below."),
        ("attachment_names", ["zephyrine-2026.pdf"]),
        ("attachment_text", "Appendix: zephyrine totals"),
        ("folder_path", "/Projects/Zephyrine"),
    ],
)
async def test_a_word_is_found_in_every_searched_field(
    backend: SearchBackend, field: str, value: object
) -> None:
    target = doc(**{field: value})
    await backend.index([target, doc()])
    page = await backend.search(q("zephyrine"))
    assert ids(page) == [target.version_id]
    assert page.total == 1


async def test_every_word_must_match_in_some_field(backend: SearchBackend) -> None:
    both = doc(title="Invoice March", sender="Contoso <ar@contoso.example>")
    one = doc(title="Invoice April")
    await backend.index([both, one])
    assert ids(await backend.search(q("invoice contoso"))) == [both.version_id]


async def test_a_phrase_needs_its_words_in_order(backend: SearchBackend) -> None:
    ordered = doc(body="the annual report is attached")
    reversed_ = doc(body="report on the annual budget")
    await backend.index([ordered, reversed_])
    assert ids(await backend.search(q('"annual report"'))) == [ordered.version_id]
    assert sorted(ids(await backend.search(q("annual report")))) == sorted(
        [ordered.version_id, reversed_.version_id]
    )


async def test_prefixes_of_a_word_and_of_a_phrase(backend: SearchBackend) -> None:
    report = doc(body="the annual reporting cycle")
    repair = doc(body="annual repair schedule")
    other = doc(body="the monthly report")
    await backend.index([report, repair, other])
    assert sorted(ids(await backend.search(q("annual rep*")))) == sorted(
        [report.version_id, repair.version_id]
    )
    assert ids(await backend.search(q('"annual report"*'))) == [report.version_id]
    assert ids(await backend.search(q("reporti*"))) == [report.version_id]


async def test_exclusion_and_alternatives(backend: SearchBackend) -> None:
    invoice = doc(title="Invoice 42")
    spam_invoice = doc(title="Invoice spam offer")
    receipt = doc(title="Receipt 42")
    await backend.index([invoice, spam_invoice, receipt])
    assert ids(await backend.search(q("invoice -spam"))) == [invoice.version_id]
    assert ids(await backend.search(q("invoice NOT spam"))) == [invoice.version_id]
    both = sorted([invoice.version_id, spam_invoice.version_id, receipt.version_id])
    assert sorted(ids(await backend.search(q("invoice OR receipt")))) == both
    assert sorted(ids(await backend.search(q("42 invoice OR receipt")))) == sorted(
        [invoice.version_id, receipt.version_id]
    )
    # Only an exclusion: everything in scope but the excluded.
    assert sorted(ids(await backend.search(q("-spam")))) == sorted(
        [invoice.version_id, receipt.version_id]
    )


async def test_case_and_accents_are_folded(backend: SearchBackend) -> None:
    mueller = doc(title="Angebot von Jürgen Müller")
    cafe = doc(body="Meeting at the CAFÉ in Orléans")
    await backend.index([mueller, cafe])
    for text in ("müller", "MULLER", "Muller", "jurgen"):
        assert ids(await backend.search(q(text))) == [mueller.version_id], text
    for text in ("cafe", "café", "orleans", "ORLÉANS"):
        assert ids(await backend.search(q(text))) == [cafe.version_id], text


async def test_cjk_words_match_as_character_phrases(backend: SearchBackend) -> None:
    """Both backends index Han and Hiragana one character per token: a word is found inside
    unsegmented text as a phrase of its characters (substring match), not as a word."""
    japanese = doc(title="これは日本語のテキストです", body="東京オフィスの請求書")
    chinese = doc(body="上海的发票已经寄出")
    await backend.index([japanese, chinese])
    assert ids(await backend.search(q("日本語"))) == [japanese.version_id]
    assert ids(await backend.search(q("請求書"))) == [japanese.version_id]
    assert ids(await backend.search(q("发票"))) == [chinese.version_id]
    assert ids(await backend.search(q("日本人"))) == []
    page = await backend.search(q("日本語"))
    assert "<mark>日本語</mark>" in page.hits[0].highlights["title"][0]


async def test_mail_addresses_and_domains_are_words(backend: SearchBackend) -> None:
    anna = doc(sender="Anna Lindqvist <anna.lindqvist@contoso.example>")
    await backend.index([anna, doc()])
    for text in ("contoso", "anna.lindqvist@contoso.example", "lindqvist", '"contoso example"'):
        assert ids(await backend.search(q(text))) == [anna.version_id], text


@pytest.mark.parametrize(
    "text",
    [
        '"unbalanced',
        "AND OR NOT *",
        "title:x",
        "(invoice OR",
        "invoice AND",
        "NEAR(a b)",
        "{title}: x",
        "^x ~y +z",
        'a"b"c',
        "'; DROP TABLE docs; --",
        "- -- ---x",
        "invoice*foo",
        "x" * 300,
        "日本*",
        "NOT",
        "OR OR OR",
    ],
)
async def test_odd_text_never_errors(backend: SearchBackend, text: str) -> None:
    await backend.index([doc(title="invoice x")])
    page = await backend.search(q(text))
    assert page.total is not None
    assert page.total >= 0


@pytest.mark.parametrize("text", ["*", '""', "---", "!!! ???", "* - *", "\\"])
async def test_text_without_letters_or_digits_is_refused(backend: SearchBackend, text: str) -> None:
    with pytest.raises(InvalidQuery):
        await backend.search(q(text))


async def test_operator_words_alone_are_searched_literally(backend: SearchBackend) -> None:
    literal = doc(title="Terms and conditions or not")
    await backend.index([literal, doc()])
    assert ids(await backend.search(q("AND OR NOT"))) == [literal.version_id]


# -- filters ----------------------------------------------------------------------------------


async def test_filters_on_account_service_and_kind_of_store(backend: SearchBackend) -> None:
    mail = doc(account_id="a1", service="mail")
    drive = doc(account_id="a2", service="onedrive", kind="file", title="budget.xlsx")
    site = doc(account_id="s1", service="sharepoint", kind="file")
    await backend.index([mail, drive, site])
    assert ids(await backend.search(q(account_ids=frozenset({"a2"})))) == [drive.version_id]
    assert sorted(ids(await backend.search(q(account_ids=frozenset({"a1", "s1"}))))) == sorted(
        [mail.version_id, site.version_id]
    )
    assert ids(await backend.search(q(services=frozenset({"sharepoint"})))) == [site.version_id]


async def test_folder_filter_is_a_path_prefix(backend: SearchBackend) -> None:
    inbox = doc(folder_path="/Inbox")
    nested = doc(folder_path="/Inbox/Projects/2026")
    sibling = doc(folder_path="/InboxOld")
    other = doc(folder_path="/Sent Items")
    await backend.index([inbox, nested, sibling, other])
    expect = sorted([inbox.version_id, nested.version_id])
    for folder in ("/Inbox", "/inbox/", "Inbox", "/INBOX"):
        assert sorted(ids(await backend.search(q(folder=folder)))) == expect, folder
    assert ids(await backend.search(q(folder="/Inbox/Projects"))) == [nested.version_id]
    assert ids(await backend.search(q(folder="/Sent Items"))) == [other.version_id]


async def test_the_longest_folder_filter_is_answered_and_a_longer_one_refused(
    backend: SearchBackend,
) -> None:
    """Up to ``MAX_FOLDER_KEY_CHARS`` of folded path, both backends answer (OpenSearch refused
    a prefix of about 1,000 characters, which the API let through as a 400 naming nothing);
    beyond it, or when folding makes a shorter path longer, the query is not valid."""
    deep = "/" + "/".join(["Ünterordner-" + "x" * 80] * 9)
    assert len(folder_key(deep)) <= MAX_FOLDER_KEY_CHARS < len(folder_key(deep + "/" + "y" * 99))
    nested = doc(folder_path=deep + "/Leaf")
    await backend.index([nested, doc(folder_path="/Inbox")])
    assert ids(await backend.search(q(folder=deep))) == [nested.version_id]
    with pytest.raises(ValidationError, match="folder"):
        q(folder=deep + "/" + "y" * 99)
    # "ﬃ" folds to "ffi": 350 of them are 1,050 characters once folded
    with pytest.raises(ValidationError, match="folded"):
        q(folder="/" + "ﬃ" * 350)


async def test_sender_and_recipient_filters(backend: SearchBackend) -> None:
    from_anna = doc(sender="Anna <anna@contoso.example>", recipients=["Bob <bob@fabrikam.example>"])
    to_anna = doc(
        sender="Bob <bob@fabrikam.example>",
        recipients=["Carol <carol@x.example>", "Anna <anna@contoso.example>"],
    )
    await backend.index([from_anna, to_anna])
    assert ids(await backend.search(q(sender="anna@contoso.example"))) == [from_anna.version_id]
    assert ids(await backend.search(q(sender="contoso"))) == [from_anna.version_id]
    assert ids(await backend.search(q(recipient="anna"))) == [to_anna.version_id]
    assert ids(await backend.search(q(sender="bob", recipient="carol"))) == [to_anna.version_id]
    with pytest.raises(InvalidQuery):
        await backend.search(q(sender="@@"))


async def test_date_range_is_inclusive_and_skips_undated(backend: SearchBackend) -> None:
    march = doc(date=T0)
    april = doc(date=T0 + timedelta(days=31))
    undated = doc(date=None, kind="contact", service="contacts")
    await backend.index([march, april, undated])
    assert ids(await backend.search(q(date_from=T0, date_to=T0))) == [march.version_id]
    assert ids(await backend.search(q(date_from=T0 + timedelta(seconds=1)))) == [april.version_id]
    assert ids(await backend.search(q(date_to=T0 + timedelta(days=1)))) == [march.version_id]


async def test_size_attachment_and_file_type_filters(backend: SearchBackend) -> None:
    small = doc(size=10)
    big_pdf = doc(size=5_000_000, has_attachments=True, file_type="PDF")
    sheet = doc(size=20_000, file_type=".xlsx", service="onedrive", kind="file")
    await backend.index([small, big_pdf, sheet])
    assert ids(await backend.search(q(size_min=1_000_000))) == [big_pdf.version_id]
    assert sorted(ids(await backend.search(q(size_max=20_000)))) == sorted(
        [small.version_id, sheet.version_id]
    )
    assert ids(await backend.search(q(size_min=20_000, size_max=20_000))) == [sheet.version_id]
    assert ids(await backend.search(q(has_attachments=True))) == [big_pdf.version_id]
    assert len(ids(await backend.search(q(has_attachments=False)))) == 2
    assert ids(await backend.search(q(file_types=frozenset({".Pdf"})))) == [big_pdf.version_id]
    assert sorted(ids(await backend.search(q(file_types=frozenset({"pdf", "xlsx"}))))) == sorted(
        [big_pdf.version_id, sheet.version_id]
    )


async def test_impossible_ranges_are_refused_before_the_backend() -> None:
    with pytest.raises(ValidationError):
        q(date_from=T0, date_to=T0 - timedelta(days=1))
    with pytest.raises(ValidationError):
        q(size_min=10, size_max=5)
    # Sizes are 64-bit integers in both backends: one beyond is refused, not overflowed (the
    # embedded backend's SQLite raised OverflowError, a 500).
    with pytest.raises(ValidationError):
        q(size_min=2**63)
    with pytest.raises(ValidationError):
        q(size_max=2**63)
    # An instant written with an offset whose UTC form a datetime cannot hold.
    for field in ("date_from", "date_to", "at"):
        for text in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"):
            fields: dict[str, Any] = {field: datetime.fromisoformat(text)}
            with pytest.raises(ValidationError, match="when read in UTC"):
                q(**fields)


async def test_the_widest_ranges_are_answered(backend: SearchBackend) -> None:
    one = doc(size=10)
    await backend.index([one])
    widest = q(
        size_min=0,
        size_max=2**63 - 1,
        date_from=datetime(1, 1, 1, tzinfo=UTC),
        date_to=datetime.max.replace(tzinfo=UTC),
    )
    assert ids(await backend.search(widest)) == [one.version_id]


# -- versions in time -------------------------------------------------------------------------


async def _two_versions(backend: SearchBackend) -> tuple[SearchDocument, SearchDocument]:
    t1 = T0 + timedelta(days=1)
    old = doc(item_id="doc-1", title="Draft contract", valid_from=T0, valid_to=t1)
    new = doc(item_id="doc-1", title="Final contract", valid_from=t1, valid_to=None)
    await backend.index([old, new])
    return old, new


async def test_point_in_time_sees_the_version_valid_then(backend: SearchBackend) -> None:
    old, new = await _two_versions(backend)
    t1 = T0 + timedelta(days=1)
    assert ids(await backend.search(q("contract"))) == [new.version_id]
    assert ids(await backend.search(q("contract", at=T0))) == [old.version_id]
    assert ids(await backend.search(q("contract", at=t1 - timedelta(microseconds=1)))) == [
        old.version_id
    ]
    assert ids(await backend.search(q("contract", at=t1))) == [new.version_id]
    assert ids(await backend.search(q("contract", at=T0 - timedelta(microseconds=1)))) == []
    assert ids(await backend.search(q("draft"))) == []


async def test_all_versions_includes_older_ones(backend: SearchBackend) -> None:
    old, new = await _two_versions(backend)
    assert sorted(ids(await backend.search(q("contract", all_versions=True)))) == sorted(
        [old.version_id, new.version_id]
    )
    assert ids(await backend.search(q("draft", all_versions=True))) == [old.version_id]
    assert ids(await backend.search(q("contract", all_versions=True, at=T0))) == [old.version_id]


async def test_close_versions_ends_a_version_for_its_tenant_only(backend: SearchBackend) -> None:
    mine = doc(title="Closing soon", version_id="shared-id")
    theirs = doc(title="Closing soon", version_id="shared-id", tenant_id="tb")
    await backend.index([mine, theirs])
    ended = T0 + timedelta(days=2)
    await backend.close_versions("ta", ["shared-id", "no-such-version"], ended)
    assert ids(await backend.search(q("closing"))) == []
    assert ids(await backend.search(q("closing", at=ended - timedelta(seconds=1)))) == ["shared-id"]
    assert ids(await backend.search(q("closing", tenants=("tb",)))) == ["shared-id"]


async def test_delete_versions_removes_only_that_tenants_documents(
    backend: SearchBackend,
) -> None:
    mine = doc(title="Delete me", version_id="dup")
    keep = doc(title="Delete me too")
    theirs = doc(title="Delete me", version_id="dup", tenant_id="tb")
    await backend.index([mine, keep, theirs])
    await backend.delete_versions("ta", ["dup", "missing"])
    assert ids(await backend.search(q("delete", all_versions=True))) == [keep.version_id]
    assert ids(await backend.search(q("delete", tenants=("tb",)))) == ["dup"]
    await backend.delete_versions("ta", [])


async def test_purge_a_tenant_or_one_account(backend: SearchBackend) -> None:
    a1 = [doc(account_id="a1") for _ in range(3)]
    a2 = [doc(account_id="a2", valid_to=T0 + timedelta(days=1)) for _ in range(2)]
    other_tenant = [doc(tenant_id="tb") for _ in range(2)]
    await backend.index([*a1, *a2, *other_tenant])
    await backend.purge(tenant_id="ta", account_id="a2")
    assert sorted(ids(await backend.search(q(all_versions=True)))) == sorted(
        d.version_id for d in a1
    )
    await backend.purge(tenant_id="ta")
    assert ids(await backend.search(q(all_versions=True))) == []
    assert len(ids(await backend.search(q(tenants=("tb",))))) == 2


async def test_upsert_by_version_replaces_the_document(backend: SearchBackend) -> None:
    first = doc(title="Original subject")
    await backend.index([first])
    await backend.index([first])
    assert ids(await backend.search(q("original"))) == [first.version_id]
    await backend.index([first.model_copy(update={"title": "Edited subject"})])
    assert ids(await backend.search(q("original"))) == []
    page = await backend.search(q("subject"))
    assert [h.title for h in page.hits] == ["Edited subject"]


async def test_long_text_is_cut_to_the_bound(backend: SearchBackend) -> None:
    bound = 200_000
    body = "early " + "filler " * (bound // 7) + " latecomer"
    long_doc = doc(body=body, attachment_text=body)
    await backend.index([long_doc])
    assert ids(await backend.search(q("early"))) == [long_doc.version_id]
    assert ids(await backend.search(q("latecomer"))) == []


# -- sorting, pagination, totals ------------------------------------------------------------


async def test_relevance_puts_title_matches_first(backend: SearchBackend) -> None:
    in_body = doc(title="Status", body="about the merger")
    in_title = doc(title="Merger announcement", body="see attached")
    await backend.index([in_body, in_title])
    page = await backend.search(q("merger"))
    assert ids(page) == [in_title.version_id, in_body.version_id]
    assert page.hits[0].score is not None
    assert page.hits[1].score is not None
    assert page.hits[0].score > page.hits[1].score


async def test_date_sorts_and_sort_time_fallback(backend: SearchBackend) -> None:
    older = doc(date=T0, title="Budget one")
    newer = doc(date=T0 + timedelta(days=5), title="Budget two")
    undated = doc(date=None, valid_from=T0 + timedelta(days=2), title="Budget three")
    await backend.index([older, newer, undated])
    desc = await backend.search(q("budget", sort="date_desc"))
    assert ids(desc) == [newer.version_id, undated.version_id, older.version_id]
    assert all(h.score is None for h in desc.hits)
    asc = await backend.search(q("budget", sort="date_asc"))
    assert ids(asc) == [older.version_id, undated.version_id, newer.version_id]
    assert [h.date for h in asc.hits] == [older.date, None, newer.date]
    # With no words to rank by, relevance means newest first.
    assert ids(await backend.search(q())) == ids(desc)


@pytest.mark.parametrize("sort", ["relevance", "date_desc", "date_asc"])
async def test_cursor_pages_have_no_duplicates_and_no_gaps(
    backend: SearchBackend, sort: str
) -> None:
    # Ties on purpose: groups of documents share a date and an identical text (same score).
    docs = [
        doc(title="Roadmap" + (" roadmap" * (i % 3)), date=T0 + timedelta(days=i // 4))
        for i in range(23)
    ]
    await backend.index(docs)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await backend.search(q("roadmap", sort=sort, limit=5, cursor=cursor))
        pages += 1
        assert page.total == 23
        seen += ids(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == {d.version_id for d in docs}
    whole = await backend.search(q("roadmap", sort=sort, limit=100))
    assert ids(whole) == seen
    assert whole.next_cursor is None


async def test_bad_cursors_are_refused(backend: SearchBackend) -> None:
    await backend.index([doc(title="Page one"), doc(title="Page two")])
    page = await backend.search(q("page", limit=1))
    assert page.next_cursor is not None
    for bad in ("garbage", "!!!", page.next_cursor[:-3], "eyJmIjogMX0", "e30"):
        with pytest.raises(InvalidCursor):
            await backend.search(q("page", limit=1, cursor=bad))
    with pytest.raises(InvalidCursor):  # a cursor of another query
        await backend.search(q("page two", limit=1, cursor=page.next_cursor))
    with pytest.raises(InvalidCursor):  # same text, another scope
        await backend.search(q("page", tenants=("ta", "tb"), limit=1, cursor=page.next_cursor))
    # The same query with another page size may go on.
    assert len((await backend.search(q("page", limit=5, cursor=page.next_cursor))).hits) == 1


@pytest.mark.parametrize("sort", ["relevance", "date_desc"])
async def test_forged_cursor_positions_are_refused(backend: SearchBackend, sort: str) -> None:
    """A cursor is base64 of JSON anyone can rewrite: its position must be one the backends
    can compare. A score of NaN or 1e999, a number past 64 bits (SQLite raised OverflowError)
    and a version id no document can have (a lone surrogate: SQLite could not encode it) were
    500s or a silently wrong page."""
    await backend.index([doc(title="Page one"), doc(title="Page two")])
    page = await backend.search(q("page", sort=sort, limit=1))
    assert page.next_cursor is not None
    real = _cursor_json(page.next_cursor)
    f, v = json.dumps(real["f"]), json.dumps(real["v"])
    forged = [
        *(f'{{"f":{f},"k":{k},"v":{v}}}' for k in ("NaN", "Infinity", "-1e999", str(2**63))),
        f'{{"f":{f},"k":{10**400},"v":{v}}}',  # an int no float holds: isfinite raises
        f'{{"f":{f},"k":{-(2**63) - 1},"v":{v}}}',
        f'{{"f":{f},"k":1,"v":"\\ud800"}}',
        f'{{"f":{f},"k":1,"v":{json.dumps("x" * 201)}}}',
    ]
    for raw in forged:
        cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        with pytest.raises(InvalidCursor):
            await backend.search(q("page", sort=sort, limit=1, cursor=cursor))
    # The real one still goes on to the second page.
    second = await backend.search(q("page", sort=sort, limit=1, cursor=page.next_cursor))
    assert len(second.hits) == 1 and ids(second) != ids(page)


def _cursor_json(cursor: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return value


async def test_totals_are_exact(backend: SearchBackend) -> None:
    await backend.index([doc(title="Counted") for _ in range(7)] + [doc(title="Other")])
    page = await backend.search(q("counted", limit=2))
    assert page.total == 7
    assert len(page.hits) == 2


# -- highlights -------------------------------------------------------------------------------


async def test_highlights_mark_matches_and_escape_html(backend: SearchBackend) -> None:
    target = doc(
        title="Invoice <b>from</b> Contoso & Co",
        body="<script>alert(1)</script> The invoice total is due in March.",
        attachment_names=["invoice-march.pdf"],
    )
    await backend.index([target])
    page = await backend.search(q("invoice"))
    marks = page.hits[0].highlights
    assert marks["title"] == ["<mark>Invoice</mark> &lt;b&gt;from&lt;/b&gt; Contoso &amp; Co"]
    assert any("<mark>invoice</mark> total" in f for f in marks["body"])
    assert all("<script>" not in f for f in marks["body"])
    assert any("<mark>invoice</mark>" in f for f in marks["attachment_names"])
    assert "sender" not in marks


async def test_each_hit_of_a_page_gets_its_own_highlights(backend: SearchBackend) -> None:
    """A page's fragments are rendered together (OpenSearch) and handed back hit by hit and
    field by field: none may land on another hit or field."""
    docs = [
        doc(
            title=f"Invoice {name}",
            body=f"The invoice for {name} is attached. Another invoice line for {name}.",
            attachment_names=[f"invoice-{name}.pdf"] if n % 2 else [],
        )
        for n, name in enumerate(["alder", "birch", "cedar", "damson", "elder"])
    ]
    await backend.index(docs)
    page = await backend.search(q("invoice"))
    assert sorted(ids(page)) == sorted(d.version_id for d in docs)
    by_id = {d.version_id: d for d in docs}
    for hit in page.hits:
        name = by_id[hit.version_id].title.split()[1]
        others = {d.title.split()[1] for d in docs} - {name}
        assert hit.highlights["title"] == [f"<mark>Invoice</mark> {name}"]
        for field, fragments in hit.highlights.items():
            text = " ".join(fragments)
            assert name in text and "<mark>" in text, (field, fragments)
            assert not any(other in text for other in others), (field, fragments)
        assert ("attachment_names" in hit.highlights) == bool(
            by_id[hit.version_id].attachment_names
        )


async def test_phrase_highlights_are_one_mark(backend: SearchBackend) -> None:
    await backend.index([doc(body="the annual report is attached")])
    page = await backend.search(q('"annual report"'))
    assert any("<mark>annual report</mark>" in f for f in page.hits[0].highlights["body"])


async def test_no_highlights_without_words(backend: SearchBackend) -> None:
    await backend.index([doc()])
    page = await backend.search(q())
    assert page.hits[0].highlights == {}


# -- isolation --------------------------------------------------------------------------------


async def _two_tenants(backend: SearchBackend) -> None:
    await backend.index(
        [
            doc(tenant_id="ta", account_id="a-ta", title="Alpha secret plan", folder_path="/A"),
            doc(tenant_id="tb", account_id="a-tb", title="Bravo secret plan", folder_path="/B"),
            doc(tenant_id="tb", account_id="a-tb", title="Bravo only words", body="xylophone"),
            doc(tenant_id="tc", account_id="a-tc", title="Charlie secret plan"),
        ]
    )


@pytest.mark.parametrize(
    "query_args",
    [
        {"text": "bravo"},
        {"text": "xylophone"},
        {"text": "secret"},
        {"text": "secret OR bravo OR xylophone"},
        {"text": "-alpha"},
        {"text": "tenant_id:tb"},
        {"text": '"tb" OR tb*'},
        {"text": ""},
        {"account_ids": frozenset({"a-tb"})},
        {"folder": "/B"},
        {"all_versions": True},
        {"sort": "date_asc"},
        {"text": "plan", "services": frozenset({"mail"}), "all_versions": True},
    ],
)
async def test_a_tenant_scope_never_returns_other_tenants(
    backend: SearchBackend, query_args: dict[str, object]
) -> None:
    await _two_tenants(backend)
    args = {"text": "", **query_args}
    text = str(args.pop("text"))
    page = await backend.search(q(text, tenants=("ta",), **args))
    assert {h.tenant_id for h in page.hits} <= {"ta"}
    several = await backend.search(q(text, tenants=("ta", "tc"), **args))
    assert {h.tenant_id for h in several.hits} <= {"ta", "tc"}


async def test_large_tenant_scopes_stay_in_scope(backend: SearchBackend) -> None:
    """Past a few tenants the backends stop narrowing by tenant inside the full-text engine
    (FTS5 scope tokens, OpenSearch routing): the filter alone must still hold."""
    await _two_tenants(backend)
    many = ("ta", "tc", *(f"other-{i}" for i in range(70)))
    for text in ("secret", "bravo", ""):
        page = await backend.search(q(text, tenants=many, limit=100))
        assert {h.tenant_id for h in page.hits} <= {"ta", "tc"}
    assert len((await backend.search(q("secret", tenants=many))).hits) == 2


async def test_paging_across_tenant_scopes_stays_in_scope(backend: SearchBackend) -> None:
    await backend.index([doc(tenant_id=t, title="Shared words") for t in ("ta", "tb") * 6])
    seen: list[str] = []
    cursor = None
    while True:
        page = await backend.search(q("shared", tenants=("ta",), limit=2, cursor=cursor))
        seen += [h.tenant_id for h in page.hits]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == ["ta"] * 6


async def test_an_empty_tenant_scope_is_refused() -> None:
    with pytest.raises(ValidationError):
        q(tenants=())
    with pytest.raises(ValidationError):
        q(tenants=("",))


# -- service ---------------------------------------------------------------------------------


async def test_ping_and_search_over_a_concurrent_write(backend: SearchBackend) -> None:
    await backend.ping()
    batch = [doc(title=f"Concurrent {i}") for i in range(300)]
    _, page = await asyncio.gather(backend.index(batch), backend.search(q("concurrent")))
    assert page.total is not None
    assert (await backend.search(q("concurrent"))).total == 300
