"""Text that UTF-8 and PostgreSQL can hold.

Text from Microsoft may hold what neither can: a mail's subject or a sender's name is whatever
anyone who can send mail wrote, U+0000 included (spam does; one such message failed its whole
mailbox's backup on PostgreSQL), and Exchange keeps text in UTF-16, so a string cut inside a
surrogate pair can reach us with a lone surrogate (see safekeep.graph.transport), which no
UTF-8 can carry. What we store about an item (the catalog, the search index) and what we render
from it (a vCard, an iCalendar file) has each of those replaced by U+FFFD, the replacement
character, so a reader sees where one was; the item's own bytes (its MIME, its Graph JSON) are
kept exactly. Plain: imports nothing of ours, so any layer may use it.
"""

from __future__ import annotations

import re
from typing import Any

NUL = "\x00"
REPLACEMENT_CHARACTER = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with each U+0000 and each lone surrogate replaced by U+FFFD."""
    if NUL in text:
        text = text.replace(NUL, REPLACEMENT_CHARACTER)
    if text.isascii() or _is_utf8(text):
        return text
    return _SURROGATE.sub(REPLACEMENT_CHARACTER, text)


def storable(value: Any) -> Any:
    """A JSON value (as parsed) with ``storable_text`` applied to every string in it, keys
    included."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {storable_text(k): storable(v) for k, v in value.items()}
    return value


def _is_utf8(text: str) -> bool:
    """Whether ``text`` holds no lone surrogate. Encoding is the cheap test (about 2 ns a
    character; a search for the surrogate range costs 10 ns a character)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
