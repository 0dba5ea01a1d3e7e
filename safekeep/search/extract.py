"""Text for the index from mail bodies, attachments and files.

Each format is read by the maintained library made for it (selectolax for HTML, python-docx,
openpyxl, python-pptx, pypdf). Backed-up content is arbitrary and sometimes hostile, so
``extract_text`` never raises: an unreadable, encrypted or malformed file indexes as "" (its
name is still indexed). Office files are ZIP containers and are refused before parsing when
they would inflate past a bound (a "zip bomb" must not take a worker down), and every
extractor stops once it has ``limit`` characters instead of reading the whole file.

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
from typing import Any

from selectolax.lexbor import LexborHTMLParser

log = logging.getLogger(__name__)

MAX_INPUT_BYTES = 64 * 1024 * 1024
MAX_UNZIPPED_BYTES = 512 * 1024 * 1024

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


def _docx(data: bytes) -> Iterator[str]:
    from docx import Document

    document = Document(io.BytesIO(data))
    for section in document.sections:
        for paragraph in section.header.paragraphs:
            yield paragraph.text
    for paragraph in document.paragraphs:
        yield paragraph.text
    for table in document.tables:
        for row in table.rows:
            yield "\t".join(cell.text for cell in row.cells)
    for section in document.sections:
        for paragraph in section.footer.paragraphs:
            yield paragraph.text


def _xlsx(data: bytes) -> Iterator[str]:
    from openpyxl import load_workbook

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


def _pptx(data: bytes) -> Iterator[str]:
    from pptx import Presentation

    presentation = Presentation(io.BytesIO(data))
    for slide in presentation.slides:
        for shape in slide.shapes:
            yield from _shape_text(shape)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            yield slide.notes_slide.notes_text_frame.text


def _shape_text(shape: Any) -> Iterator[str]:
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        yield shape.text_frame.text
    if getattr(shape, "has_table", False) and shape.has_table:
        for row in shape.table.rows:
            yield "\t".join(cell.text for cell in row.cells)
    for child in getattr(shape, "shapes", ()):  # group shapes
        yield from _shape_text(child)


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
            if not _zip_is_safe(data):
                log.info("skipping %s: it would unzip past %d bytes", name, MAX_UNZIPPED_BYTES)
                return ""
            text = _tidy(_collect(_ZIPPED[kind](data), limit))
        else:
            return ""
    except Exception:  # hostile input must index as empty, never fail a backup
        log.debug("text extraction failed for %s", name, exc_info=True)
        return ""
    return text[:limit]
