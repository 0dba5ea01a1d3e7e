"""A contact as a vCard 3.0 (``text/vcard``, photo inline), rendered from its stored document
for download and export."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

from safekeep.backup.outlook import FileType, RenderedForm, component
from safekeep.backup.services.base import Content
from safekeep.backup.services.contacts.search import (
    CONTACT_KIND,
    PRIVATE,
    emails,
    modified_at,
)
from safekeep.storage.repository import ContentRef, TenantRepository
from safekeep.tenants.models import ItemVersion
from safekeep.text import storable_text

LINE_OCTETS = 75
VCARD = FileType("text/vcard; charset=utf-8", "vcf", "a vCard form")


# ---- vCard 3.0 (RFC 2426; escaping and folding as RFC 6350 §3.2 and §3.4) -------------


def escape(value: Any) -> str:
    text = str(value)
    text = text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def fold(line: str) -> str:
    """Fold at 75 octets with CRLF + space, never inside a UTF-8 sequence."""
    if line.isascii():
        head, rest = line[:LINE_OCTETS], line[LINE_OCTETS:]
        pieces = [head, *(rest[i : i + LINE_OCTETS - 1] for i in range(0, len(rest), 74))]
        return "\r\n ".join(pieces) + "\r\n"
    out: list[str] = []
    used = 0
    for char in storable_text(line):  # a vCard is UTF-8: no lone surrogate
        size = len(char.encode())
        if used + size > LINE_OCTETS:
            out.append("\r\n ")
            used = 1
        out.append(char)
        used += size
    return "".join(out) + "\r\n"


def _structured(*parts: Any) -> str:
    return ";".join(escape(p) if p else "" for p in parts)


def _adr(kind: str, address: Any) -> str | None:
    if not isinstance(address, dict) or not any(address.values()):
        return None
    value = _structured(
        "",
        "",
        address.get("street"),
        address.get("city"),
        address.get("state"),
        address.get("postalCode"),
        address.get("countryOrRegion"),
    )
    return f"ADR;TYPE={kind}:{value}"


def _birthday(value: Any) -> str | None:
    if not value:
        return None
    return str(value)[:10]


def vcard(contact: dict[str, Any], photo: tuple[str, bytes] | None = None) -> bytes:
    """A vCard 3.0 of every field Graph gives a contact (and its photo, inline)."""
    lines = ["BEGIN:VCARD", "VERSION:3.0", "PRODID:-//Safekeep//Safekeep backup//EN"]
    lines.append(
        "N:"
        + _structured(
            contact.get("surname"),
            contact.get("givenName"),
            contact.get("middleName"),
            contact.get("title"),
            contact.get("generation"),
        )
    )
    display = contact.get("displayName") or " ".join(
        str(contact[k]) for k in ("givenName", "surname") if contact.get(k)
    )
    lines.append(f"FN:{escape(display or (emails(contact) or [''])[0])}")
    simple = (
        ("NICKNAME", "nickName"),
        ("TITLE", "jobTitle"),
        ("ROLE", "profession"),
        ("URL", "businessHomePage"),
        ("NOTE", "personalNotes"),
        ("X-ASSISTANT", "assistantName"),
        ("X-MANAGER", "manager"),
        ("X-SPOUSE", "spouseName"),
        ("X-FILE-AS", "fileAs"),
        ("X-INITIALS", "initials"),
        ("X-OFFICE-LOCATION", "officeLocation"),
        ("X-PHONETIC-FIRST-NAME", "yomiGivenName"),
        ("X-PHONETIC-LAST-NAME", "yomiSurname"),
        ("X-PHONETIC-ORG", "yomiCompanyName"),
    )
    if contact.get("companyName") or contact.get("department"):
        lines.append("ORG:" + _structured(contact.get("companyName"), contact.get("department")))
    for name, key in simple:
        if contact.get(key):
            lines.append(f"{name}:{escape(contact[key])}")
    for n, entry in enumerate(contact.get("emailAddresses") or []):
        if isinstance(entry, dict) and entry.get("address"):
            kind = "INTERNET,PREF" if n == 0 else "INTERNET"
            lines.append(f"EMAIL;TYPE={kind}:{escape(entry['address'])}")
    for number in contact.get("businessPhones") or []:
        lines.append(f"TEL;TYPE=WORK,VOICE:{escape(number)}")
    for number in contact.get("homePhones") or []:
        lines.append(f"TEL;TYPE=HOME,VOICE:{escape(number)}")
    if contact.get("mobilePhone"):
        lines.append(f"TEL;TYPE=CELL,VOICE:{escape(contact['mobilePhone'])}")
    for kind, key in (("WORK", "businessAddress"), ("HOME", "homeAddress")):
        line = _adr(kind, contact.get(key))
        if line:
            lines.append(line)
    other = _adr("POSTAL", contact.get("otherAddress"))
    if other:
        lines.append(other.replace("ADR;TYPE=POSTAL", "ADR;TYPE=POSTAL,X-OTHER", 1))
    for im in contact.get("imAddresses") or []:
        lines.append(f"X-MS-IMADDRESS:{escape(im)}")
    for child in contact.get("children") or []:
        lines.append(f"X-CHILD:{escape(child)}")
    birthday = _birthday(contact.get("birthday"))
    if birthday:
        lines.append(f"BDAY:{birthday}")
    if contact.get("categories"):
        lines.append("CATEGORIES:" + ",".join(escape(c) for c in contact["categories"]))
    if photo is not None:
        kind = photo[0].split("/")[-1].split(";")[0].strip().upper() or "JPEG"
        encoded = base64.b64encode(photo[1]).decode()
        lines.append(f"PHOTO;ENCODING=b;TYPE={'JPEG' if kind == 'JPG' else kind}:{encoded}")
    if contact.get("id"):
        lines.append(f"UID:{escape(contact['id'])}")
    changed = modified_at(contact)
    if changed:
        lines.append(f"REV:{changed.astimezone(UTC):%Y%m%dT%H%M%SZ}")
    lines.append("END:VCARD")
    return "".join(fold(line) for line in lines).encode()


class VcardForm(RenderedForm):
    """A contact as one ``.vcf`` file, its photo inline."""

    kind = CONTACT_KIND
    file = VCARD

    def filename(self, version: ItemVersion) -> str:
        return component(version.name or "contact")[:140] + ".vcf"

    async def render(self, repo: TenantRepository, contact: dict[str, Any]) -> AsyncIterator[bytes]:
        photo = ((contact.get(PRIVATE) or {}).get("photo")) or None
        image = None
        if photo and photo.get("content"):
            data = await repo.read_bytes(ContentRef.from_json(photo["content"]))
            image = (str(photo.get("contentType") or "image/jpeg"), data)
        yield vcard(contact, image)

    def default_folder(self, version: ItemVersion) -> str:
        return "Contacts"


FORM = VcardForm()


async def content(repo: TenantRepository, version: ItemVersion) -> Content:
    return await FORM.content(repo, version)
