"""Text for the index from mail bodies, attachments and files.

Each format is read by the maintained library made for it: selectolax for HTML, pypdf, and
lxml's event parser for the XML inside Word, Excel and PowerPoint files (see below). Backed-up
content is arbitrary and sometimes hostile, so ``extract_text`` never raises: an unreadable,
encrypted or malformed file indexes as "" (its name is still indexed). Office files are ZIP
containers whose parts are read as they inflate, up to a bound of XML (a "zip bomb" must not
take a worker down), and every extractor stops once it has ``limit`` characters instead of
reading the whole file.

These functions are CPU-bound and synchronous: async callers run them with
``asyncio.to_thread``.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator

from lxml import etree
from selectolax.lexbor import LexborHTMLParser

log = logging.getLogger(__name__)

MAX_INPUT_BYTES = 64 * 1024 * 1024
# What a ``TextMemo`` keeps: at most this many characters of text, in at most this many texts.
MEMO_MAX_CHARS = 4 * 1024 * 1024
MEMO_MAX_TEXTS = 4096

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


# HTML is content anyone can mail a user, and building its tree costs lexbor time that grows
# with the number of tags times their nesting: 100,000 unclosed <div>s (0.5 MB) took 25.6 s of
# CPU, a million more than ten minutes, and 1,000,000 <p>s (2.9 MB) 503 MB. So the HTML is
# read at most ``HTML_MAX_CHARS`` long (more than a search document's text takes from mail)
# and parsed in stretches of ``_HTML_TAGS_PER_PARSE`` tags, each cut just before a tag: the
# cost is then linear and at most a stretch's tree is held. A stretch's open elements close
# where it ends, so text across a cut is kept, but may break into another line there (a word
# whose letters are split by inline markup at a cut becomes two), and a script or style cut in
# two leaks its second half as text: neither matters to search, and mail with fewer tags than
# a stretch (nearly all of it) is parsed whole, as before.
HTML_MAX_CHARS = 4 * 1024 * 1024
_HTML_TAGS_PER_PARSE = 2000


def html_to_text(html: str) -> str:
    """Readable text of an HTML mail body or file: scripts and styles dropped, block elements
    on their own lines, inline markup joined without spaces ("<b>Con</b>toso" is "Contoso")."""
    try:
        return _tidy("".join(_html_stretch_text(s) for s in _html_stretches(html)))
    except Exception:  # hostile input must index as empty, never fail a backup
        log.debug("html_to_text failed", exc_info=True)
        return ""


def _html_stretches(html: str) -> Iterator[str]:
    """The first ``HTML_MAX_CHARS`` of ``html`` in stretches of ``_HTML_TAGS_PER_PARSE`` tags
    (a "<" is counted as one), each cut just before a tag."""
    if len(html) > HTML_MAX_CHARS:  # cut before the tag the bound falls in, not inside it
        tag = html.rfind("<", 0, HTML_MAX_CHARS + 1)
        html = html[: tag if tag > 0 else HTML_MAX_CHARS]
    if html.count("<") <= _HTML_TAGS_PER_PARSE:  # nearly all mail: one stretch
        yield html
        return
    start = 0
    while True:
        cut = start
        for _ in range(_HTML_TAGS_PER_PARSE):
            cut = html.find("<", cut + 1)
            if cut < 0:
                yield html[start:]
                return
        yield html[start:cut]
        start = cut


def _html_stretch_text(html: str) -> str:
    tree = LexborHTMLParser(html)
    tree.strip_tags(_DROP_TAGS)
    root = tree.body or tree.root
    if root is None:
        return ""
    for node in root.css(_BLOCK_TAGS):
        node.insert_before("\n")
        node.insert_after("\n")
    return root.text(deep=True, separator="")


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


# ---- Office files: text read as the XML streams out of the ZIP ----------------------------
#
# python-docx, python-pptx and openpyxl build XML trees (openpyxl a row at a time) in memory,
# and a tree is many times its XML: a 31 KB attachment holding 20 MB of empty Word paragraphs
# (``<w:p/>``, which compresses 600 to 1) took python-docx 1.1 GB and 44.6 s of CPU to read, a
# 29 KB workbook with one row of 10 MB of cells took openpyxl 190 MB, and the size bound of
# the time (512 MB unzipped) let through 25 to 50 times those. Anyone can mail such a file to
# a user, and the worker indexing it would be killed on every retry. So the text is read by
# lxml's event parser (no tree: a call per start tag, end tag and text) as each part inflates,
# a piece at a time, up to ``OFFICE_XML_MAX`` bytes of XML a file: memory stays at a piece and
# a line, and what lies past the bound is not indexed (a file whose text is cut off is still
# found by its first part's words). The text is what those libraries gave: a line per
# paragraph and per table row (cells joined by tabs); a workbook's sheet names and rows.

OFFICE_XML_MAX = 16 * 1024 * 1024
_XML_PIECE = 64 * 1024
_LINE_PIECES = 4096  # a paragraph or row of more pieces goes out as several lines
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_S = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PACKAGE_RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"


class _Lines:
    """An lxml parser target that gathers lines: ``start``, ``end`` and ``data`` are what the
    parser calls; ``close`` ends the line being read."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._line: list[str] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        pass

    def end(self, tag: str) -> None:
        pass

    def data(self, text: str) -> None:
        pass

    def close(self) -> None:
        self._flush()

    def _add(self, piece: str) -> None:
        self._line.append(piece)
        if len(self._line) >= _LINE_PIECES:
            self._flush()

    def _flush(self) -> None:
        if self._line:
            self.lines.append("".join(self._line))
            self._line = []


class _Paragraphs(_Lines):
    """A WordprocessingML (``w:``) or DrawingML (``a:``) part: the text of ``t`` elements, a
    tab for a run's ``tab``, a line break for a ``br`` or ``cr``; a line per paragraph, and
    per table row with its cells joined by tabs (a cell's paragraphs by spaces)."""

    def __init__(self, ns: str) -> None:
        super().__init__()
        self._text, self._run, self._p = ns + "t", ns + "r", ns + "p"
        self._breaks = {ns + "br", ns + "cr"}
        self._tab = ns + "tab"
        self._tbl, self._tc, self._tr = ns + "tbl", ns + "tc", ns + "tr"
        self._in_text = 0
        self._in_run = 0
        self._tables = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag == self._text:
            self._in_text += 1
        elif tag == self._run:
            self._in_run += 1
        elif tag == self._tbl:
            self._tables += 1
        elif self._in_run and tag == self._tab:
            self._add("\t")
        elif tag in self._breaks:
            self._add("\n")

    def end(self, tag: str) -> None:
        if tag == self._text:
            self._in_text -= 1
        elif tag == self._run:
            self._in_run -= 1
        elif tag == self._tbl:
            self._tables -= 1
        elif tag == self._tc:
            self._add("\t")
        elif tag == self._tr or (tag == self._p and not self._tables):
            self._flush()
        elif tag == self._p:
            self._add(" ")  # a paragraph within a cell: its row stays one line

    def data(self, text: str) -> None:
        if self._in_text:
            self._add(text)


class _SharedStrings(_Lines):
    """A workbook's shared strings, in order (``values``): each ``si``'s text, phonetic
    runs (``rPh``) left out."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[str] = []
        self._in_text = 0
        self._phonetic = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag == _S + "t":
            self._in_text += 1
        elif tag == _S + "rPh":
            self._phonetic += 1

    def end(self, tag: str) -> None:
        if tag == _S + "t":
            self._in_text -= 1
        elif tag == _S + "rPh":
            self._phonetic -= 1
        elif tag == _S + "si":
            self.values.append("".join(self._line))
            self._line = []

    def data(self, text: str) -> None:
        if self._in_text and not self._phonetic:
            self._line.append(text)

    def close(self) -> None:
        self._line = []


_BOOLEANS = {"0": "False", "1": "True"}


class _Rows(_Lines):
    """A worksheet: a line per row, its cells' values joined by tabs. A value is the cached
    one (``v``) or an inline string; a shared string is looked up, a boolean read as
    openpyxl gave it."""

    def __init__(self, strings: list[str]) -> None:
        super().__init__()
        self._strings = strings
        self._kind: str | None = None
        self._value: list[str] | None = None  # the text of the cell's ``v`` or ``is/t``

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag == _S + "c":
            self._kind = attrib.get("t")
        elif tag == _S + "v" or (tag == _S + "t" and self._kind == "inlineStr"):
            self._value = []

    def end(self, tag: str) -> None:
        if tag in (_S + "v", _S + "t") and self._value is not None:
            self._cell("".join(self._value))
            self._value = None
        elif tag == _S + "row":
            self._flush()

    def data(self, text: str) -> None:
        if self._value is not None:
            self._value.append(text)

    def _cell(self, value: str) -> None:
        if self._kind == "s":
            try:
                value = self._strings[int(value)]
            except (ValueError, IndexError):
                return
        elif self._kind == "b":
            value = _BOOLEANS.get(value.strip(), value)
        if value:
            if self._line:
                self._add("\t")
            self._add(value)


class _Attributes(_Lines):
    """The attributes of every ``tag`` element, in order (``found``)."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self._tag = tag
        self.found: list[dict[str, str]] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag == self._tag:
            self.found.append(dict(attrib))


# zipfile makes a ``ZipInfo`` of every entry of a ZIP's central directory as it opens the file
# (about 580 bytes each): 200,000 empty entries in an 18 MB attachment took 115 MB and seconds
# of CPU, and the 64 MB input bound would allow some 400 MB. An Office file has tens of parts,
# a large deck a few thousand. Each entry zipfile reads must start with the directory's
# signature, so counting the signature bounds what zipfile builds, wherever the file's end
# record says the directory is.
OFFICE_ENTRIES_MAX = 10_000
_DIRECTORY_ENTRY = b"PK\x01\x02"


class _Office:
    """An Office file's ZIP, its parts read as they inflate from one budget of XML."""

    def __init__(self, data: bytes) -> None:
        if data.count(_DIRECTORY_ENTRY) > OFFICE_ENTRIES_MAX:
            raise ValueError(f"more than {OFFICE_ENTRIES_MAX} entries in the ZIP's directory")
        self._archive = zipfile.ZipFile(io.BytesIO(data))
        self.names = set(self._archive.namelist())
        self._budget = OFFICE_XML_MAX

    def __enter__(self) -> _Office:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._archive.close()

    def lines(self, name: str, target: _Lines) -> Iterator[str]:
        """Feed part ``name`` to ``target``, giving its lines as they come; a part cut off
        by the budget, or broken, keeps what was read before."""
        if name not in self.names:
            return
        parser = etree.XMLParser(
            target=target, resolve_entities=False, no_network=True, load_dtd=False
        )
        with self._archive.open(name) as member:
            while self._budget > 0:
                piece = member.read(min(_XML_PIECE, self._budget))
                if not piece:
                    break
                self._budget -= len(piece)
                try:
                    parser.feed(piece)
                except etree.XMLSyntaxError:
                    break
                yield from target.lines
                target.lines.clear()
        try:
            parser.close()
        except etree.XMLSyntaxError:
            target.close()
        yield from target.lines
        target.lines.clear()

    def read(self, name: str, target: _Lines) -> None:
        for _ in self.lines(name, target):
            pass

    def numbered(self, folder: str, stem: str) -> list[str]:
        """``folder/stem<n>.xml`` parts in the order of their numbers."""
        found = re.compile(re.escape(f"{folder}/{stem}") + r"(\d+)\.xml")
        numbered = [(int(m.group(1)), name) for name in self.names if (m := found.fullmatch(name))]
        return [name for _, name in sorted(numbered)]


def _docx(data: bytes) -> Iterator[str]:
    """Headers, the body, footers: the order python-docx gave."""
    with _Office(data) as office:
        for name in [
            *office.numbered("word", "header"),
            "word/document.xml",
            *office.numbered("word", "footer"),
        ]:
            yield from office.lines(name, _Paragraphs(_W))


def _pptx(data: bytes) -> Iterator[str]:
    """Slides by their part number (the order they were added), then their notes."""
    with _Office(data) as office:
        for name in office.numbered("ppt/slides", "slide") + office.numbered(
            "ppt/notesSlides", "notesSlide"
        ):
            yield from office.lines(name, _Paragraphs(_A))


def _xlsx(data: bytes) -> Iterator[str]:
    """Each sheet's name, then its rows, in the workbook's order of sheets."""
    with _Office(data) as office:
        sheets, rels = _Attributes(_S + "sheet"), _Attributes(_PACKAGE_RELS)
        office.read("xl/workbook.xml", sheets)
        office.read("xl/_rels/workbook.xml.rels", rels)
        targets = {r.get("Id"): str(r.get("Target") or "") for r in rels.found}
        strings = _SharedStrings()
        office.read("xl/sharedStrings.xml", strings)
        for sheet in sheets.found:
            target = targets.get(sheet.get(_R + "id"), "")
            name = target.lstrip("/") if target.startswith("/") else "xl/" + target
            yield str(sheet.get("name") or "")
            yield from office.lines(name, _Rows(strings.values))


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


class TextMemo:
    """Texts extracted before, by a key that names everything the text depends on (a digest
    of the content first): the same PDF mailed to a whole company is read once per worker, not
    once per mailbox. The least recently used go past ``max_chars`` characters or ``max_texts``
    texts in all. Safe to share between the threads that extract; two threads asking for the
    same new key at once may both extract it (the answer is the same)."""

    def __init__(self, max_chars: int = MEMO_MAX_CHARS, max_texts: int = MEMO_MAX_TEXTS) -> None:
        self.max_chars = max_chars
        self.max_texts = max_texts
        self.hits = 0
        self.misses = 0
        self._texts: OrderedDict[Hashable, str] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def text(self, key: Hashable, extract: Callable[[], str]) -> str:
        """The text kept under ``key``, else ``extract()``'s, kept."""
        known = self.known(key)
        if known is not None:
            return known
        return self.keep(key, extract())

    def known(self, key: Hashable) -> str | None:
        """The text kept under ``key``, or None (counted as a miss): for a caller that has
        to fetch the content before it can extract (``keep`` what it then reads)."""
        with self._lock:
            known = self._texts.get(key)
            if known is not None:
                self._texts.move_to_end(key)
                self.hits += 1
                return known
            self.misses += 1
            return None

    def keep(self, key: Hashable, text: str) -> str:
        """Keep ``text`` under ``key`` (unless it alone is past the bound); returns it."""
        if len(text) > self.max_chars:
            return text
        with self._lock:
            if key not in self._texts:
                self._texts[key] = text
                self._chars += len(text)
                while self._chars > self.max_chars or len(self._texts) > self.max_texts:
                    _, dropped = self._texts.popitem(last=False)
                    self._chars -= len(dropped)
        return text


# The worker's one memory of extracted texts (mail attachments and drive files alike): one
# bound for both. Keys start with what the text is of ("attachment", "file").
TEXTS = TextMemo()
