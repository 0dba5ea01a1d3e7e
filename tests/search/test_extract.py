"""Text extraction over real files, generated here with the same libraries users' tools write."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from docx import Document
from openpyxl import Workbook
from pptx import Presentation
from pptx.util import Inches
from pypdf import PdfReader, PdfWriter

from safekeep.search import extract
from safekeep.search.extract import extract_text, file_type_of, html_to_text

LIMIT = 10_000


def make_pdf(lines: list[str]) -> bytes:
    """A minimal one-page PDF with Helvetica text, its xref offsets computed."""
    text_ops = "\n".join(
        f"BT /F1 12 Tf 72 {720 - 20 * i} Td ({line}) Tj ET" for i, line in enumerate(lines)
    ).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(text_ops) + text_ops + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def make_docx() -> bytes:
    document = Document()
    document.sections[0].header.paragraphs[0].text = "Contoso confidential header"
    document.add_heading("Quarterly invoice summary", level=1)
    document.add_paragraph("The Fabrikam invoice is overdue.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Customer"
    table.cell(0, 1).text = "Amount"
    table.cell(1, 0).text = "Northwind"
    table.cell(1, 1).text = "1234.50"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_xlsx() -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Budget 2026"
    sheet.append(["Region", "Revenue"])
    sheet.append(["Nordics", 98765])
    second = workbook.create_sheet("Forecast")
    second["B3"] = "Tailspin pipeline"
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def make_pptx() -> bytes:
    presentation = Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = "Migration roadmap"
    slide.placeholders[1].text = "Wingtip cutover in March"
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(4), Inches(1)).table
    table.cell(1, 1).text = "Litware milestone"
    slide.notes_slide.notes_text_frame.text = "Speaker notes mention Adatum"
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


# -- HTML ---------------------------------------------------------------------------------------


def test_html_to_text_keeps_words_whole_and_blocks_apart() -> None:
    html = (
        "<html><head><title>t</title><style>p {color: red}</style></head><body>"
        "<p>Hello <b>Con</b>toso &amp; friends</p><div>Second&nbsp;line</div>"
        "<script>alert('x')</script><ul><li>one</li><li>two</li></ul>line<br>break</body></html>"
    )
    text = html_to_text(html)
    assert text.splitlines() == [
        "Hello Contoso & friends",
        "Second line",
        "one",
        "two",
        "line",
        "break",
    ]


@pytest.mark.parametrize(
    "html", ["", "<", "<<<>>>", "plain text only", "\x00\x01<p>x", "<p" * 1000]
)
def test_html_to_text_survives_junk(html: str) -> None:
    assert isinstance(html_to_text(html), str)


def test_html_fragment_without_body() -> None:
    assert html_to_text("<span>just a fragment</span>") == "just a fragment"


# -- plain text -------------------------------------------------------------------------------


def test_html_is_parsed_in_stretches_of_a_bounded_number_of_tags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Building a tree costs lexbor time that grows with tags times nesting: 100,000 unclosed
    <div>s (0.5 MB, anyone can mail it) took 25.6 s of CPU, 1,000,000 <p>s 503 MB. No parse
    sees more than a stretch of tags, the words come out whole and in order across the cuts,
    and HTML past the bound is not read."""
    monkeypatch.setattr(extract, "_HTML_TAGS_PER_PARSE", 50)
    tags: list[int] = []
    real = extract.LexborHTMLParser

    def counting(html: str) -> Any:
        tags.append(html.count("<"))
        return real(html)

    monkeypatch.setattr(extract, "LexborHTMLParser", counting)
    assert html_to_text("<div>" * 1000 + "deep words") == "deep words"
    assert len(tags) == 20 and max(tags) == 50

    tags.clear()
    paragraphs = "".join(f"<p>para {n} <b>bold</b><script>x()</script></p>" for n in range(300))
    words = [w for n in range(300) for w in ("para", str(n), "bold")]
    assert html_to_text(paragraphs).split() == words
    assert max(tags) == 50 and len(tags) > 30
    assert html_to_text("<p>" + "word " * 10 + "</p>") == ("word " * 10).strip()  # one parse

    monkeypatch.setattr(extract, "HTML_MAX_CHARS", 1000)
    assert html_to_text(paragraphs).split() == words[: len(html_to_text(paragraphs).split())]
    assert "299" not in html_to_text(paragraphs)


def test_plain_text_encodings() -> None:
    assert extract_text("a.txt", None, "Grüße aus Köln".encode(), limit=LIMIT) == "Grüße aus Köln"
    assert extract_text("a.txt", None, "Grüße".encode("utf-16"), limit=LIMIT) == "Grüße"
    assert extract_text("a.txt", None, "Café crème".encode("cp1252"), limit=LIMIT) == "Café crème"
    latin = "Ærøskøbing".encode("iso-8859-1")
    assert extract_text("a", "text/plain; charset=ISO-8859-1", latin, limit=LIMIT) == "Ærøskøbing"


def test_a_long_utf8_text_cut_inside_a_character_stays_utf8() -> None:
    data = ("x" + "é" * 100).encode()  # the read bound (4 bytes a character) cuts an "é"
    assert extract_text("a.txt", None, data, limit=25) == "x" + "é" * 24


def test_csv_and_html_files() -> None:
    csv = b"name,amount\r\nContoso,12\r\nFabrikam,7\r\n"
    assert "Fabrikam,7" in extract_text("report.CSV", "text/csv", csv, limit=LIMIT)
    page = b"<html><body><h1>Welcome</h1><p>to the intranet</p></body></html>"
    assert extract_text("index.html", None, page, limit=LIMIT) == "Welcome\nto the intranet"


def test_content_type_decides_when_the_name_has_no_extension() -> None:
    assert extract_text("README", "text/plain", b"hello world", limit=LIMIT) == "hello world"
    assert "Quarterly" in extract_text(
        "download",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        make_docx(),
        limit=LIMIT,
    )


# -- office and PDF ---------------------------------------------------------------------------


def test_docx_paragraphs_tables_and_headers() -> None:
    text = extract_text("summary.docx", None, make_docx(), limit=LIMIT)
    for words in ("Quarterly invoice summary", "Fabrikam invoice", "Northwind 1234.50", "Contoso"):
        assert words in text


def test_xlsx_every_sheet_and_its_cells() -> None:
    text = extract_text("budget.xlsx", None, make_xlsx(), limit=LIMIT)
    for words in ("Budget 2026", "Nordics 98765", "Forecast", "Tailspin pipeline"):
        assert words in text


def test_pptx_titles_bodies_tables_and_notes() -> None:
    text = extract_text("deck.pptx", None, make_pptx(), limit=LIMIT)
    for words in ("Migration roadmap", "Wingtip cutover", "Litware milestone", "Adatum"):
        assert words in text


def test_pdf_text() -> None:
    pdf = make_pdf(["Invoice INV-2026-0042", "Contoso Pharmaceuticals"])
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 1  # the fixture itself is a valid PDF
    text = extract_text("invoice.pdf", "application/pdf", pdf, limit=LIMIT)
    assert "Invoice INV-2026-0042" in text
    assert "Contoso Pharmaceuticals" in text


def test_encrypted_pdf_is_skipped_quietly() -> None:
    writer = PdfWriter(clone_from=io.BytesIO(make_pdf(["Secret figures"])))
    writer.encrypt(user_password="s3cret", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    assert extract_text("locked.pdf", None, out.getvalue(), limit=LIMIT) == ""


def test_limit_is_respected_for_every_type() -> None:
    samples = {
        "a.txt": b"word " * 10_000,
        "a.docx": make_docx(),
        "a.xlsx": make_xlsx(),
        "a.pptx": make_pptx(),
        "a.pdf": make_pdf(["x" * 80] * 30),
    }
    for name, data in samples.items():
        text = extract_text(name, None, data, limit=20)
        assert 0 < len(text) <= 20, name


@pytest.mark.parametrize("name", ["a.docx", "a.xlsx", "a.pptx", "a.pdf", "a.html", "a.txt"])
@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 64, b"PK\x03\x04 not really a zip", b"%PDF-1.7 truncated", bytes(range(256))],
)
def test_junk_never_raises(name: str, data: bytes) -> None:
    assert isinstance(extract_text(name, None, data, limit=LIMIT), str)


def test_unknown_types_and_bad_limits_give_nothing() -> None:
    assert extract_text("photo.jpg", "image/jpeg", b"\xff\xd8\xff", limit=LIMIT) == ""
    assert extract_text("a.txt", None, b"text", limit=0) == ""


def _with_part(office: bytes, name: str, edit: Callable[[bytes], bytes]) -> bytes:
    """The same ZIP with one member's bytes edited."""
    source = zipfile.ZipFile(io.BytesIO(office))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            data = source.read(info.filename)
            archive.writestr(info.filename, edit(data) if info.filename == name else data)
    return out.getvalue()


FLOODS = {  # kind: (part, where, a flood of empty elements, what follows it)
    "docx": (
        "word/document.xml",
        b"</w:body>",
        b"<w:p/>" * 400_000,
        b"<w:p><w:r><w:t>Past</w:t></w:r></w:p>",
    ),
    "pptx": ("ppt/slides/slide1.xml", b"</p:spTree>", b"<p:sp/>" * 400_000, b""),
    "xlsx": (
        "xl/worksheets/sheet1.xml",
        b"</sheetData>",
        b'<row r="9">' + b"<c/>" * 600_000 + b"</row>",
        b"",
    ),
}
MAKERS: dict[str, Callable[[], bytes]] = {"docx": make_docx, "pptx": make_pptx, "xlsx": make_xlsx}


@pytest.mark.parametrize(
    ("kind", "first", "past"),
    [
        ("docx", "Quarterly invoice summary", "Past"),  # a paragraph after the flood
        ("pptx", "Migration roadmap", "Adatum"),  # the notes: a later part
        ("xlsx", "Nordics 98765", "Tailspin"),  # the second sheet
    ],
)
def test_a_flood_of_empty_elements_is_read_as_it_inflates_up_to_a_bound(
    monkeypatch: pytest.MonkeyPatch, kind: str, first: str, past: str
) -> None:
    """20 MB of empty Word paragraphs compress into a 31 KB attachment that anyone can mail:
    read into python-docx's tree, it took 1.1 GB and 44.6 s of CPU (one row of 10 MB of
    cells took openpyxl 190 MB). Read as it inflates, the text before the flood is found,
    the XML past the bound is not read, and nothing raises."""
    monkeypatch.setattr(extract, "OFFICE_XML_MAX", 1_000_000)
    part, where, flood, then = FLOODS[kind]

    def flooded(xml: bytes) -> bytes:
        return xml.replace(where, flood + then + where, 1)

    def unflooded(xml: bytes) -> bytes:
        return xml.replace(where, then + where, 1)

    bomb = _with_part(MAKERS[kind](), part, flooded)
    assert len(bomb) < 100_000  # 2.4 MB of XML, compressed
    text = extract_text(f"bomb.{kind}", None, bomb, limit=LIMIT)
    assert first in text
    assert past not in text
    ok = _with_part(MAKERS[kind](), part, unflooded)
    assert past in extract_text(f"ok.{kind}", None, ok, limit=LIMIT)


def _with_entries(office: bytes, count: int) -> bytes:
    """The same ZIP with ``count`` more (empty) entries in its directory."""
    source = zipfile.ZipFile(io.BytesIO(office))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            archive.writestr(info, source.read(info.filename))
        for i in range(count):
            archive.writestr(f"customXml/{i}", b"")
    return out.getvalue()


@pytest.mark.parametrize("kind", ["docx", "pptx", "xlsx"])
def test_a_directory_of_too_many_entries_is_not_opened(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """zipfile builds an object per directory entry as it opens a file: 200,000 empty entries
    in an 18 MB attachment took 115 MB. Past the bound the file gives no text and zipfile is
    not asked to open it; at the bound it is read as ever."""
    monkeypatch.setattr(extract, "OFFICE_ENTRIES_MAX", 300)
    office = MAKERS[kind]()
    parts = len(zipfile.ZipFile(io.BytesIO(office)).namelist())
    at_bound, past = _with_entries(office, 300 - parts), _with_entries(office, 301 - parts)
    opened: list[object] = []
    real = zipfile.ZipFile

    def counted(*args: Any, **kwargs: Any) -> zipfile.ZipFile:
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", counted)
    assert extract_text(f"ok.{kind}", None, at_bound, limit=LIMIT) != ""
    assert len(opened) == 1
    assert extract_text(f"bomb.{kind}", None, past, limit=LIMIT) == ""
    assert len(opened) == 1


def test_workbook_cells_shared_inline_boolean_and_numbers() -> None:
    """A workbook written by hand, as other producers than openpyxl write them: shared
    strings (with a phonetic run left out), rich inline strings, booleans, cached formula
    values; sheets in the workbook's order, whatever their part names."""
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    files = {
        "xl/workbook.xml": f"<workbook {ns} {rel}><sheets>"
        '<sheet name="Zweite" sheetId="2" r:id="rB"/>'
        '<sheet name="Erste" sheetId="1" r:id="rA"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<Relationships xmlns="http://schemas.openxmlformats.org/'
        'package/2006/relationships"><Relationship Id="rA" Target="worksheets/a.xml"/>'
        '<Relationship Id="rB" Target="/xl/worksheets/b.xml"/></Relationships>',
        "xl/sharedStrings.xml": f"<sst {ns}><si><t>Kunde</t></si><si><r><t>Fa</t></r><r><t>brikam"
        "</t></r><rPh><t>ignored</t></rPh></si></sst>",
        "xl/worksheets/a.xml": f'<worksheet {ns}><sheetData><row><c t="s"><v>0</v></c><c t="s">'
        '<v>1</v></c><c t="b"><v>1</v></c><c><f>SUM(A1)</f><v>1234.5</v></c></row>'
        '<row><c t="s"><v>99</v></c><c t="inlineStr"><is><t>Northwind</t></is></c></row>'
        "</sheetData></worksheet>",
        "xl/worksheets/b.xml": f"<worksheet {ns}><sheetData><row><c><v>7</v></c></row>"
        "</sheetData></worksheet>",
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, xml in files.items():
            archive.writestr(name, xml)
    text = extract_text("hand.xlsx", None, out.getvalue(), limit=LIMIT)
    assert text.splitlines() == ["Zweite", "7", "Erste", "Kunde Fabrikam True 1234.5", "Northwind"]


def test_office_xml_cut_off_or_broken_keeps_the_text_before_the_fault() -> None:
    for edit in (
        lambda xml: xml[: xml.index(b"Northwind")],
        lambda xml: xml.replace(b"<w:tbl>", b"<w:tbl><<", 1),
    ):
        text = extract_text(
            "cut.docx", None, _with_part(make_docx(), "word/document.xml", edit), limit=LIMIT
        )
        assert "Fabrikam invoice" in text and "Northwind" not in text


def test_file_type_of() -> None:
    assert file_type_of("Report.Final.PDF") == "pdf"
    assert file_type_of("folder/.bashrc") is None
    assert file_type_of("noext", "text/csv; charset=utf-8") == "csv"
    assert file_type_of("noext") is None


def test_a_pdf_without_its_end_marker_is_not_handed_to_pypdf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pypdf searches a file with no %%EOF backwards line by line in Python before it gives
    up: a few MB of such bytes cost seconds of a backup's CPU for no text."""
    import pypdf

    calls: list[object] = []

    def refuse(*args: object, **_kwargs: object) -> None:
        calls.append(args)  # (extract_text swallows exceptions: count, do not raise)
        raise ValueError("not called for a PDF without %%EOF")

    broken = b"%PDF-1.7\n" + bytes(range(256)) * 12_000  # 3 MB, no end marker
    monkeypatch.setattr(pypdf, "PdfReader", refuse)
    assert extract_text("Large scan.pdf", "application/pdf", broken, limit=LIMIT) == ""
    assert calls == []
    monkeypatch.undo()
    # A well-formed PDF, even with trailing bytes after its marker, is still read.
    good = make_pdf(["Quarterly figures"]) + b"\n" * 100
    assert "Quarterly figures" in extract_text("q.pdf", "application/pdf", good, limit=LIMIT)
