"""Opaque, seed-stable identifiers shaped like the ones Graph hands out.

Ids are derived from a hash of (seed, namespace, name) so a tenant generated twice from the
same seed has the same ids, and clients cannot parse anything out of them. All Outlook ids
are immutable: a move keeps the id, which is what ``Prefer: IdType="ImmutableId"`` asks for.
"""

from __future__ import annotations

import base64
import hashlib
import uuid


def digest(*parts: object, size: int = 32) -> bytes:
    h = hashlib.blake2b(digest_size=size)
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\x1f")
    return h.digest()


def guid(*parts: object) -> str:
    return str(uuid.UUID(bytes=digest(*parts, size=16), version=4))


def outlook_id(*parts: object) -> str:
    """An Exchange item/folder id: ``AAMk`` + url-safe base64, ending in ``=``."""
    raw = b"\x00\x03\x24" + digest(*parts, size=64) + digest("x", *parts, size=43)
    return base64.urlsafe_b64encode(raw).decode()


OUTLOOK_PREFIX = b"\x00\x03\x24"  # what every Exchange id here starts with ("AAMk...")


def well_formed_outlook_id(value: str) -> bool:
    """Could ``value`` be an Exchange item, folder, occurrence or attachment id? (Exchange
    answers 400 ErrorInvalidIdMalformed for one that cannot, 404 for a well-formed id it
    does not hold.)"""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return False
    return len(raw) >= 100 and raw.startswith(OUTLOOK_PREFIX)


def attachment_id(*parts: object) -> str:
    raw = b"\x00\x03\x24" + digest("att", *parts, size=64) + digest("y", *parts, size=52)
    return base64.urlsafe_b64encode(raw).decode()


def drive_id(*parts: object) -> str:
    return "b!" + base64.urlsafe_b64encode(digest("drive", *parts, size=48)).decode().rstrip("=")


def drive_item_id(*parts: object) -> str:
    """OneDrive for Business item ids: 34 upper-case base32 characters starting with 01."""
    return "01" + base64.b32encode(digest("item", *parts, size=20)).decode()[:32]


def change_key(*parts: object) -> str:
    return base64.b64encode(b"\x10\x00\x00\x00" + digest("ck", *parts, size=16)).decode()
