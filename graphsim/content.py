"""Item content: bytes that are either kept, stored in a file, or generated on read.

Generated content is a pure function of a key and a size, so a 100 MB file costs nothing
until someone downloads it, and the same key in two mailboxes or drives yields the same
bytes (which is what makes deduplication observable). Hashes are computed once per key on
first use and cached, because every drive listing reports them.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from graphsim.quickxor import QuickXorHash

GEN_BLOCK = 1 << 20

_hash_cache: dict[str, tuple[str, str]] = {}
_hash_lock = threading.Lock()


@dataclass(eq=False)
class Content:
    """Bytes of a file, attachment or version. Subclasses decide where the bytes live."""

    size: int

    @property
    def key(self) -> str:
        raise NotImplementedError

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes ``start..end`` (end exclusive) in blocks of at most 1 MiB."""
        raise NotImplementedError

    def read(self) -> bytes:
        return b"".join(self.iter_range())

    def hashes(self) -> tuple[str, str]:
        """(quickXorHash base64, sha256 hex upper), computed once per key."""
        with _hash_lock:
            cached = _hash_cache.get(self.key)
        if cached is not None:
            return cached
        qx = QuickXorHash()
        sha256 = hashlib.sha256()
        for block in self.iter_range():
            qx.update(block)
            sha256.update(block)
        result = (qx.b64digest(), sha256.hexdigest().upper())
        with _hash_lock:
            _hash_cache[self.key] = result
        return result


@dataclass(eq=False)
class BytesContent(Content):
    data: bytes = b""
    _key: str = field(default="", repr=False)

    @classmethod
    def of(cls, data: bytes) -> BytesContent:
        return cls(size=len(data), data=data, _key="b:" + hashlib.sha256(data).hexdigest())

    @property
    def key(self) -> str:
        return self._key

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        end = self.size if end is None else min(end, self.size)
        for pos in range(start, end, GEN_BLOCK):
            yield self.data[pos : min(pos + GEN_BLOCK, end)]


@dataclass(eq=False)
class FileContent(Content):
    """Uploaded content too large to keep in memory, written under the state folder."""

    path: str = ""
    digest: str = ""

    @property
    def key(self) -> str:
        return "f:" + self.digest

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        end = self.size if end is None else min(end, self.size)
        with Path(self.path).open("rb") as fh:
            fh.seek(start)
            pos = start
            while pos < end:
                block = fh.read(min(GEN_BLOCK, end - pos))
                if not block:
                    break
                pos += len(block)
                yield block


@dataclass(eq=False)
class GeneratedContent(Content):
    """Pseudo-random bytes of a given size; each 1 MiB block seeded by (seed, block index).

    ``header`` is prepended (a file signature such as a PNG or ZIP magic) so that type
    sniffers see a plausible file.
    """

    seed: str = ""
    header: bytes = b""

    @property
    def key(self) -> str:
        return f"g:{self.seed}:{self.size}:{self.header.hex()}"

    def _block(self, index: int, length: int = GEN_BLOCK) -> bytes:
        """The first ``length`` bytes of block ``index``. ``randbytes`` fills 32-bit words in
        order, so a draw of a multiple of 4 bytes is a prefix of the whole block's: a 2 KB
        attachment no longer costs a 1 MiB draw (a fifth of graphsim's CPU in a backup)."""
        rng = random.Random(f"{self.seed}/{index}")
        data = rng.randbytes(min(GEN_BLOCK, -(-length // 4) * 4))[:length]
        if index == 0 and self.header:
            data = (self.header + data[len(self.header) :])[:length]
        return data

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        end = self.size if end is None else min(end, self.size)
        pos = start
        while pos < end:
            index = pos // GEN_BLOCK
            lo = pos - index * GEN_BLOCK
            hi = min(GEN_BLOCK, end - index * GEN_BLOCK)
            block = self._block(index, hi)
            yield block[lo:hi]
            pos = index * GEN_BLOCK + hi


class ContentSink:
    """Accumulates uploaded bytes; spills to a file under ``spill_dir`` past a threshold."""

    SPILL_AT = 4 << 20

    def __init__(self, spill_dir: Path) -> None:
        self._spill_dir = spill_dir
        self._buffer = io.BytesIO()
        self._file: io.BufferedWriter | None = None
        self._path: Path | None = None
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._sha.update(data)
        self.size += len(data)
        if self._file is None and self.size > self.SPILL_AT:
            self._spill_dir.mkdir(parents=True, exist_ok=True)
            self._path = self._spill_dir / f"upload-{id(self):x}-{random.getrandbits(48):x}"
            self._file = self._path.open("wb")
            self._file.write(self._buffer.getvalue())
            self._buffer = io.BytesIO()
        if self._file is not None:
            self._file.write(data)
        else:
            self._buffer.write(data)

    def finish(self) -> Content:
        digest = self._sha.hexdigest()
        if self._file is None or self._path is None:
            data = self._buffer.getvalue()
            return BytesContent(size=len(data), data=data, _key="b:" + digest)
        self._file.close()
        final = self._spill_dir / f"blob-{digest}"
        if final.exists():
            self._path.unlink()
        else:
            self._path.rename(final)
        return FileContent(size=self.size, path=str(final), digest=digest)

    def discard(self) -> None:
        if self._file is not None and self._path is not None:
            self._file.close()
            self._path.unlink(missing_ok=True)


def store_bytes(data: bytes, spill_dir: Path) -> Content:
    sink = ContentSink(spill_dir)
    sink.write(data)
    return sink.finish()


# --- realistic small documents ---------------------------------------------------------

_FIXED_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def make_docx(paragraphs: list[str]) -> bytes:
    """A minimal but valid WordprocessingML package, built without python-docx for speed."""
    body = "".join(
        f'<w:p><w:r><w:t xml:space="preserve">{_xml_escape(p)}</w:t></w:r></w:p>'
        for p in paragraphs
    )
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
            '2006/relationships/officeDocument" Target="word/document.xml"/>'
            "</Relationships>"
        ),
        "word/document.xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            f"<w:body>{body}</w:body></w:document>"
        ),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in parts.items():
            info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text.encode())
    return buf.getvalue()


# SharePoint's property promotion/demotion: the namespace of the ``customXml`` part holding a
# library's properties (``p:properties``), how graphsim recognises its own part again.
SP_PROPERTIES_NS = "http://schemas.microsoft.com/office/2006/metadata/properties"


def with_properties_part(data: bytes, properties: bytes) -> bytes | None:
    """``data`` (an Office Open XML package) with ``properties`` as SharePoint's customXml
    part, as a document library stores an uploaded Office file: the part holding SharePoint's
    properties is replaced if the package has one, else added as the next free
    ``customXml/itemN.xml``; every other part keeps its bytes (the archive itself is written
    anew). ``[Content_Types].xml`` gains a ``Default`` for ``xml`` only if it has none. None
    when ``data`` is not a readable zip package with a ``[Content_Types].xml``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as source:
            infos = source.infolist()
            names = {i.filename for i in infos}
            if "[Content_Types].xml" not in names:
                return None
            parts = [(info, source.read(info)) for info in infos]
            comment = source.comment
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError, OSError):
        return None  # not a zip, damaged, encrypted or using a method zipfile cannot read
    ours = next(
        (
            info.filename
            for info, body in parts
            if _custom_xml_item(info.filename) is not None and SP_PROPERTIES_NS.encode() in body
        ),
        None,
    )
    if ours is None:
        taken = {_custom_xml_item(n) for n in names} - {None}
        ours = f"customXml/item{next(n for n in range(1, len(taken) + 2) if n not in taken)}.xml"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for info, body in parts:
            if info.filename == ours:
                continue
            if info.filename == "[Content_Types].xml":
                body = _with_xml_default(body)
            out.writestr(_copy_info(info), body)
        added = zipfile.ZipInfo(ours, date_time=_FIXED_ZIP_TIME)
        added.compress_type = zipfile.ZIP_DEFLATED
        out.writestr(added, properties)
        out.comment = comment
    return buf.getvalue()


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """A fresh header for a part written again: its name, time, method and attributes (not
    the source's offsets, sizes or zip64 fields)."""
    copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    copy.compress_type = info.compress_type
    copy.create_system = info.create_system
    copy.external_attr = info.external_attr
    copy.comment = info.comment
    return copy


def _custom_xml_item(name: str) -> int | None:
    """N of ``customXml/itemN.xml``, else None."""
    stem = name.removeprefix("customXml/item").removesuffix(".xml")
    if stem == name or "/" in stem or not stem.isdigit():
        return None
    return int(stem)


def _with_xml_default(types: bytes) -> bytes:
    """``[Content_Types].xml`` as it is when it gives ``.xml`` parts a type, else with the
    ``Default`` the added part needs."""
    lowered = types.lower().replace(b"'", b'"')
    if b'extension="xml"' in lowered or b"</types>" not in lowered:
        return types
    at = lowered.rindex(b"</types>")
    return types[:at] + b'<Default Extension="xml" ContentType="application/xml"/>' + types[at:]


def make_pdf(lines: list[str]) -> bytes:
    """A one-page PDF whose text pypdf can extract (Latin-1 text, Helvetica)."""
    text_ops = ["BT", "/F1 11 Tf", "50 780 Td", "14 TL"]
    for line in lines:
        safe = line.encode("latin-1", "replace").decode("latin-1")
        safe = safe.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        text_ops.append(f"({safe}) '")
    text_ops.append("ET")
    stream = "\n".join(text_ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


PNG_HEADER = b"\x89PNG\r\n\x1a\n"
JPEG_HEADER = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
ZIP_HEADER = b"PK\x03\x04"
MP4_HEADER = b"\x00\x00\x00\x18ftypmp42"


def make_png(width: int, height: int, seed: int) -> bytes:
    """A valid RGB PNG (a seeded colour gradient), so inline images render in mail clients."""
    rng = random.Random(seed)
    base = [rng.randrange(256) for _ in range(3)]
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows.extend(((base[0] + x) % 256, (base[1] + y) % 256, (base[2] + x + y) % 256))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        PNG_HEADER
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + chunk(b"IEND", b"")
    )
