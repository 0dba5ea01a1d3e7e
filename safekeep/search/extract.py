"""Text for the index from mail bodies, attachments and files.

Each format is read by the maintained library made for it (selectolax for HTML, openpyxl,
pypdf; Word and PowerPoint text by lxml's event parser, see below). Backed-up content is
arbitrary and sometimes hostile, so ``extract_text`` never raises: an unreadable, encrypted or
malformed file indexes as "" (its name is still indexed). Office files are ZIP containers: Word
and PowerPoint parts are read as they inflate, up to a bound of XML, and a workbook is refused
before parsing when it would inflate past a bound (a "zip bomb" must not take a worker down);
every extractor stops once it has ``limit`` characters instead of reading the whole file.

These functions are CPU-bound and synchronous: async callers run them with
``asyncio.to_thread``.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator

from lxml import etree
from selectolax.lexbor import LexborHTMLParser

log = logging.getLogger(__name__)

MAX_INPUT_BYTES = 64 * 1024 * 1024
MAX_UNZIPPED_BYTES = 512 * 1024 * 1024  # a workbook's members, unzipped (openpyxl)

_DROP_TAGS = ["script", "style", "noscript", "template", "head", "svg", "object", "iframe"]
_BLOCK_TAGS = (
    "address, article, aside, blockquote, br, dd, div, dl, dt, fieldset, figcaption, figure, "
    "footer, form, h1, h2, h3, h4, h5, h6, header, hr, li, main, nav, ol, p, pre, section, "
    "table, tr, td, th, ul, caption, tbody, thead, tfoot"
)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_TEXT_TYPES = frozenset({"txt", "text", "csv", "tsv", "md", "log", "json", "xml", "ics", "vcf"})
_HTML_TYPES = frozenset({"html", "htm", "xhtml"})
_MIME_TO_TYPE = {
    "text/plain": "txt",
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "text/markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/json": "json",
    "application/xml": "xml",
    "text/xml": "xml",
    "text/calendar": "ics",
    "text/vcard": "vcf",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
}


def _tidy(text: str) -> str:
    """One space between words (tabs included), one line per block, no control chars."""
    text = _CONTROL.sub(" ", text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def html_to_text(html: str) -> str:
    """Readable text of an HTML mail body or file: scripts and styles dropped, block elements
    on their own lines, inline markup joined without spaces ("<b>Con</b>toso" is "Contoso")."""
    try:
        tree = LexborHTMLParser(html)
        tree.strip_tags(_DROP_TAGS)
        root = tree.body or tree.root
        if root is None:
            return ""
        for node in root.css(_BLOCK_TAGS):
            node.insert_before("\n")
            node.insert_after("\n")
        return _tidy(root.text(deep=True, separator=""))
    except Exception:  # hostile input must index as empty, never fail a backup
        log.debug("html_to_text failed", exc_info=True)
        return ""


def _decode(data: bytes, content_type: str | None) -> str:
    """Text of unknown encoding: a BOM or a declared charset wins, then UTF-8, then cp1252
    (the usual encoding of older Windows text files), which never fails."""
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if content_type and "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip(" \"'")
        try:
            return data.decode(charset, errors="replace")
        except LookupError:
            pass
    try:
        # Incremental, so that a multi-byte character cut by our read bound is not an error.
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _zip_is_safe(data: bytes) -> bool:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sum(info.file_size for info in archive.infolist()) <= MAX_UNZIPPED_BYTES


def _collect(parts: Iterable[str], limit: int) -> str:
    """Join parts until ``limit`` characters, without reading the rest of the file."""
    out: list[str] = []
    size = 0
    for part in parts:
        part = part.strip()
        if not part:
            continue
        out.append(part)
        size += len(part) + 1
        if size >= limit:
            break
    return "\n".join(out)


def _xlsx(data: bytes) -> Iterator[str]:
    from openpyxl import load_workbook

    if not _zip_is_safe(data):
        log.info("skipping a workbook: it would unzip past %d bytes", MAX_UNZIPPED_BYTES)
        return
    workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        for sheet in workbook.worksheets:
            yield str(sheet.title)
            for row in sheet.iter_rows(values_only=True):
                cells = [str(value) for value in row if value is not None]
                if cells:
                    yield "\t".join(cells)
    finally:
        workbook.close()


# ---- Word and PowerPoint: text read as the XML streams out of the ZIP ----------------------
#
# python-docx and python-pptx build the whole XML tree of a part in memory, and a tree is
# many times its XML: a 31 KB attachment holding 20 MB of empty Word paragraphs (``<w:p/>``,
# which compresses 600 to 1) took 1.1 GB and 44.6 s of CPU to read, and the size bound of the
# time (512 MB unzipped) let through 25 times that. Anyone can mail such a file to a user,
# and the worker indexing it would be killed on every retry. So the text is read by lxml's
# event parser (no tree: a call per start tag, end tag and text) as the part is inflated, a
# piece at a time, up to ``OFFICE_XML_MAX`` bytes of XML a file: memory stays at a piece, and
# what lies past the bound is not indexed (a document whose text is cut off is still found by
# its first part's words).

OFFICE_XML_MAX = 16 * 1024 * 1024
_XML_PIECE = 64 * 1024
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"


class _Paragraphs:
    """An lxml parser target: the text of a WordprocessingML (``w:``) or DrawingML (``a:``)
    part, a line per paragraph and a line per table row (its cells' text joined by tabs), as
    python-docx and python-pptx gave it: the text of ``t`` elements, a tab for a run's
    ``tab``, a line break for a ``br`` or ``cr``."""

    def __init__(self, ns: str, lines: list[str]) -> None:
        self._text, self._run, self._p = ns + "t", ns + "r", ns + "p"
        self._breaks = {ns + "br", ns + "cr"}
        self._tab = ns + "tab"
        self._tbl, self._tc, self._tr = ns + "tbl", ns + "tc", ns + "tr"
        self.lines = lines
        self._line: list[str] = []  # the paragraph (or table row) being read
        self._in_text = 0
        self._in_run = 0
        self._tables = 0

    def start(self, tag: str, _attrib: dict[str, str]) -> None:
        if tag == self._text:
            self._in_text += 1
        elif tag == self._run:
            self._in_run += 1
        elif tag == self._tbl:
            self._tables += 1
        elif self._in_run and tag == self._tab:
            self._line.append("\t")
        elif tag in self._breaks:
            self._line.append("\n")

    def end(self, tag: str) -> None:
        if tag == self._text:
            self._in_text -= 1
        elif tag == self._run:
            self._in_run -= 1
        elif tag == self._tbl:
            self._tables -= 1
        elif tag == self._tc:
            self._line.append("\t")
        elif tag == self._tr or (tag == self._p and not self._tables):
            self._flush()
        elif tag == self._p:
            self._line.append(" ")  # a paragraph within a cell: its row stays one line

    def data(self, text: str) -> None:
        if self._in_text:
            self._line.append(text)

    def close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._line:
            self.lines.append("".join(self._line))
            self._line = []


def _office_text(data: bytes, ns: str, parts: Callable[[list[str]], list[str]]) -> Iterator[str]:
    """The paragraphs of the ZIP's ``parts`` (chosen from its member names), in that order,
    read until ``OFFICE_XML_MAX`` bytes of XML or until the caller has enough."""
    budget = OFFICE_XML_MAX
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in parts(archive.namelist()):
            lines: list[str] = []
            target = _Paragraphs(ns, lines)
            parser = etree.XMLParser(
                target=target, resolve_entities=False, no_network=True, load_dtd=False
            )
            with archive.open(name) as member:
                while budget > 0:
                    piece = member.read(min(_XML_PIECE, budget))
                    if not piece:
                        break
                    budget -= len(piece)
                    try:
                        parser.feed(piece)
                    except etree.XMLSyntaxError:
                        break  # what was read before the fault is kept
                    yield from lines
                    lines.clear()
            try:
                parser.close()
            except etree.XMLSyntaxError:
                target.close()  # a part cut off by the bound, or broken: its last line
            yield from lines
            if budget <= 0:
                return


def _numbered(names: list[str], folder: str, stem: str) -> list[str]:
    """``folder/stem<n>.xml`` members in the order of their numbers."""
    found = re.compile(re.escape(f"{folder}/{stem}") + r"(\d+)\.xml")
    numbered = [(int(m.group(1)), name) for name in names if (m := found.fullmatch(name))]
    return [name for _, name in sorted(numbered)]


def _docx_parts(names: list[str]) -> list[str]:
    """Headers, the body, footers: the order python-docx gave."""
    body = ["word/document.xml"] if "word/document.xml" in names else []
    return _numbered(names, "word", "header") + body + _numbered(names, "word", "footer")


def _pptx_parts(names: list[str]) -> list[str]:
    """Slides by their part number (the order they were added), then their notes."""
    return _numbered(names, "ppt/slides", "slide") + _numbered(
        names, "ppt/notesSlides", "notesSlide"
    )


def _docx(data: bytes) -> Iterator[str]:
    return _office_text(data, _W, _docx_parts)


def _pptx(data: bytes) -> Iterator[str]:
    return _office_text(data, _A, _pptx_parts)


# A PDF ends with its %%EOF marker (readers accept some trailing bytes after it). Without one,
# pypdf searches the whole file backwards line by line in Python before giving up: a broken
# or disguised "PDF" of a few MB would cost seconds of CPU for no text.
PDF_EOF_WINDOW = 64 * 1024


def _pdf(data: bytes) -> Iterator[str]:
    from pypdf import PdfReader

    if b"%PDF-" not in data[:1024] or b"%%EOF" not in data[-PDF_EOF_WINDOW:]:
        return
    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        return
    for page in reader.pages:
        yield page.extract_text() or ""


_ZIPPED: dict[str, Callable[[bytes], Iterator[str]]] = {
    "docx": _docx,
    "xlsx": _xlsx,
    "pptx": _pptx,
}


def file_type_of(name: str, content_type: str | None = None) -> str | None:
    """Lower-case extension of ``name`` (what the index stores as ``file_type``), else the
    type implied by ``content_type``."""
    base = name.rsplit("/", 1)[-1]
    if "." in base.strip("."):
        return base.rsplit(".", 1)[1].lower() or None
    if content_type:
        return _MIME_TO_TYPE.get(content_type.split(";")[0].strip().lower())
    return None


def extract_text(name: str, content_type: str | None, data: bytes, *, limit: int) -> str:
    """Searchable text of a file or attachment, at most ``limit`` characters; "" for types we
    do not read and for anything that fails to parse. Never raises."""
    if limit <= 0 or not data or len(data) > MAX_INPUT_BYTES:
        return ""
    kind = file_type_of(name, content_type)
    if kind not in _TEXT_TYPES | _HTML_TYPES | {"pdf"} | set(_ZIPPED) and content_type:
        kind = _MIME_TO_TYPE.get(content_type.split(";")[0].strip().lower(), kind)
    try:
        if kind in _TEXT_TYPES:
            text = _tidy(_decode(data[: limit * 4], content_type))
        elif kind in _HTML_TYPES:
            text = html_to_text(_decode(data, content_type))
        elif kind == "pdf":
            text = _tidy(_collect(_pdf(data), limit))
        elif kind in _ZIPPED:
            text = _tidy(_collect(_ZIPPED[kind](data), limit))
        else:
            return ""
    except Exception:  # hostile input must index as empty, never fail a backup
        log.debug("text extraction failed for %s", name, exc_info=True)
        return ""
    return text[:limit]
