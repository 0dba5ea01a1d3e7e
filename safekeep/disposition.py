"""``Content-Disposition: attachment`` for a backed-up item's name (RFC 6266, RFC 8187).

Names come from Microsoft 365 and may hold anything: CR/LF (which no server will put in a
header, so such an item could never be downloaded), other control characters, quotes,
backslashes and slashes (which a client may take as a path), percent signs (which some clients
decode in ``filename``). The answer always carries both forms:

- ``filename``: an ASCII quoted-string with only safe characters, for old clients;
- ``filename*``: the name as UTF-8, percent-encoded, for every current client.

Both are built from the same cleaned name: controls and separators become ``_``, leading dots
and spaces are dropped (no hidden or relative names), and an empty result becomes ``download``.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

FALLBACK_NAME = "download"
# Unicode categories that never belong in a file name: controls, format characters (such as
# the right-to-left override that disguises an extension), line and paragraph separators, and
# lone surrogates (which cannot be encoded). The zero-width joiners stay: emoji need them.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_JOINERS = frozenset("\u200c\u200d")
_SEPARATORS = frozenset("/\\")
# In the ASCII fallback: what cannot be written plainly in a quoted-string, or is read
# specially by some clients.
_ASCII_UNSAFE = frozenset('"\\%;')
MAX_NAME_CHARS = 255


# What Windows refuses in a name beyond controls and separators, and the device names it keeps
# whatever the extension ("CON", "nul.txt", "Com1.eml"), compared case-blind before the first dot.
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
)


def _cleaned(name: str, unsafe: frozenset[str] = _SEPARATORS) -> str:
    return "".join(
        "_"
        if c in unsafe or (unicodedata.category(c) in _UNSAFE_CATEGORIES and c not in _JOINERS)
        else c
        for c in unicodedata.normalize("NFC", name)
    )


def safe_filename(name: str) -> str:
    cleaned = _cleaned(name).lstrip(". ").rstrip(" ")[:MAX_NAME_CHARS]
    return cleaned or FALLBACK_NAME


def portable_name(name: str, *, fallback: str, max_chars: int) -> str:
    """One path component (of an export's ZIP) that unpacks alike on Windows, macOS and
    Linux: cleaned as ``safe_filename`` cleans, and within Windows' own rules: none of
    ``<>:"|?*``, no leading or trailing dot or space (Windows drops the trailing ones, so two
    names would meet), no device name (``CON.eml`` cannot be created there)."""
    cleaned = _cleaned(name, _SEPARATORS | _WINDOWS_FORBIDDEN).strip(". ")
    if cleaned.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        cleaned = "_" + cleaned
    return cleaned[:max_chars].rstrip(". ") or fallback


def content_disposition(name: str) -> str:
    """The header value for downloading something called ``name``."""
    cleaned = safe_filename(name)
    ascii_name = "".join(
        c if 0x20 <= ord(c) < 0x7F and c not in _ASCII_UNSAFE else "_" for c in cleaned
    )
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(cleaned, safe='')}"
