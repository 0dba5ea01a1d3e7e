"""What a SharePoint document library does to the Office files it receives, and how a restore
tells such a file from another: a library writes its properties into every Office Open XML
package that arrives (property promotion), so the file it stores never has the sent size and
hashes, while every part of the package but SharePoint's own keeps its bytes."""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import IO

from safekeep.backup.drive.delta import closing

# Office Open XML packages: what a SharePoint library rewrites on arrival.
OFFICE_OPEN_XML = frozenset(
    {"docx", "docm", "dotx", "xlsx", "xlsm", "xltx", "pptx", "pptm", "potx"}
)
PACKAGE_COMPARE_MAX = 256 * 1024 * 1024  # bigger documents are not compared part by part
PACKAGE_PARTS_MAX = 1024 * 1024 * 1024  # what the parts of one package may unpack to
SPOOL_IN_MEMORY = 4 * 1024 * 1024  # past this a compared file goes to a temporary file


def rewritten_on_arrival(name: str) -> bool:
    """Is ``name`` an Office Open XML file, which a SharePoint library rewrites on arrival?"""
    return "." in name and name.rsplit(".", 1)[-1].lower() in OFFICE_OPEN_XML


@asynccontextmanager
async def spooled(chunks: AsyncIterator[bytes]) -> AsyncIterator[IO[bytes]]:
    """The bytes of ``chunks`` in a file (memory up to ``SPOOL_IN_MEMORY``), read from 0."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as fh:
        async with closing(chunks) as stream:
            async for chunk in stream:
                fh.write(chunk)
        fh.seek(0)
        yield fh


def package_parts(fh: IO[bytes]) -> dict[str, bytes] | None:
    """Each part of a zip package with the sha256 of its bytes, or None when ``fh`` is not
    a readable zip (or would unpack past ``PACKAGE_PARTS_MAX``)."""
    try:
        with zipfile.ZipFile(fh) as package:
            infos = [i for i in package.infolist() if not i.is_dir()]
            if sum(i.file_size for i in infos) > PACKAGE_PARTS_MAX:
                return None
            parts: dict[str, bytes] = {}
            for info in infos:
                digest = hashlib.sha256()
                with package.open(info) as part:
                    while block := part.read(1 << 20):
                        digest.update(block)
                parts[info.filename] = digest.digest()
            return parts
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError, OSError):
        return None  # not a zip, damaged, encrypted or a method zipfile cannot read


def sharepoint_part(name: str) -> bool:
    """Parts SharePoint writes into an Office package: its customXml properties, the
    relationships and content types that declare them, the custom document properties."""
    lowered = name.lower()
    return (
        lowered.startswith("customxml/")
        or lowered in ("docprops/custom.xml", "[content_types].xml")
        or lowered.endswith(".rels")
    )


def same_document(backup: Mapping[str, bytes], stored: Mapping[str, bytes]) -> bool:
    """Is ``stored`` the backed-up package as SharePoint keeps it: every part of the backup
    there with the same bytes, nothing else added or changed but SharePoint's own parts?"""
    content = {n: d for n, d in backup.items() if not sharepoint_part(n)}
    return (
        bool(content)
        and all(stored.get(n) == d for n, d in content.items())
        and all(n in backup or sharepoint_part(n) for n in stored)
    )
