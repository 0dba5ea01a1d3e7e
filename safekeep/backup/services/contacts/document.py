"""Reading a stored contact: its browse metadata, its searchable text and its vCard."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.settings import settings

LINE_OCTETS = 75
# Keys we add to a Graph contact document; Graph never sends keys starting with "_".
PRIVATE = "_safekeep"


def modified_at(contact: dict[str, Any]) -> datetime | None:
    value = str(contact.get("lastModifiedDateTime") or "")
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def emails(contact: dict[str, Any]) -> list[str]:
    return [
        str(e.get("address"))
        for e in contact.get("emailAddresses") or []
        if isinstance(e, dict) and e.get("address")
    ]


def phones(contact: dict[str, Any]) -> list[str]:
    out = [str(p) for p in contact.get("businessPhones") or [] if p]
    out += [str(p) for p in contact.get("homePhones") or [] if p]
    if contact.get("mobilePhone"):
        out.append(str(contact["mobilePhone"]))
    return out


def names(contact: dict[str, Any]) -> list[str]:
    keys = (
        "displayName",
        "givenName",
        "middleName",
        "surname",
        "nickName",
        "fileAs",
        "yomiGivenName",
        "yomiSurname",
    )
    return [str(contact[k]) for k in keys if contact.get(k)]


def _address_text(address: Any) -> str:
    if not isinstance(address, dict):
        return ""
    keys = ("street", "postalCode", "city", "state", "countryOrRegion")
    return ", ".join(str(address[k]) for k in keys if address.get(k))


def meta_of(contact: dict[str, Any], folder_path: str) -> dict[str, Any]:
    """What the browse API shows of a contact: display_name, given_name, surname, emails,
    phones, company, department, job_title, folder, birthday, categories."""
    return {
        "display_name": contact.get("displayName") or "",
        "given_name": contact.get("givenName"),
        "surname": contact.get("surname"),
        "emails": emails(contact)[:10],
        "phones": phones(contact)[:10],
        "company": contact.get("companyName"),
        "department": contact.get("department"),
        "job_title": contact.get("jobTitle"),
        "folder": folder_path,
        "birthday": contact.get("birthday"),
        "categories": list(contact.get("categories") or []),
    }


def search_fields(contact: dict[str, Any], folder_path: str) -> SearchFields:
    """Names, emails, phones, company (plus job, department, addresses and notes in the
    body), bounded by ``search_body_max_chars``."""
    parts = [
        *names(contact),
        *emails(contact),
        *phones(contact),
        *(
            str(contact[k])
            for k in ("companyName", "department", "jobTitle", "profession")
            if contact.get(k)
        ),
        *(
            _address_text(contact.get(k))
            for k in ("businessAddress", "homeAddress", "otherAddress")
        ),
        str(contact.get("personalNotes") or ""),
    ]
    body = "\n".join(p for p in parts if p)[: settings.search_body_max_chars]
    return SearchFields(
        title=str(contact.get("displayName") or (names(contact) or [""])[0]),
        folder_path=folder_path or "/",
        date=modified_at(contact),
        people=[*names(contact), *emails(contact)],
        location=_address_text(contact.get("businessAddress")) or None,
        body=body,
        file_type="vcf",
    )


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
    for char in line:
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
