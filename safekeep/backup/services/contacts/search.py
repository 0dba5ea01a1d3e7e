"""Reading a stored contact: its browse metadata and its searchable text (``search_fields``,
the service's search hook). Its vCard: ``render``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.backup.outlook import document_search
from safekeep.settings import settings

# Keys we add to a Graph contact document; Graph never sends keys starting with "_".
PRIVATE = "_safekeep"
FOLDER_KIND = "contact_folder"
CONTACT_KIND = "contact"


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


def fields_of(contact: dict[str, Any], folder_path: str) -> SearchFields:
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


# The service's search hook.
search_fields = document_search(CONTACT_KIND, fields_of, folder="folder", default="/")
