"""The user's search text, parsed once for both backends.

What a technician may type, and what it means:

- ``contoso invoice``: every word must match (in any searched field);
- ``"annual report"``: the words in this order; an unclosed quote runs to the end of the text;
- ``rep*`` / ``"annual rep"*``: a prefix of the (last) word;
- ``-spam`` or ``NOT spam``: exclude; ``invoice OR receipt``: either (binds tighter than the
  implicit AND, as in web search engines); ``AND`` is accepted and changes nothing.

Nothing else is syntax: ``title:x``, brackets, ``+``, ``~``, ``^`` are ordinary characters, which
both tokenizers then treat as word separators. The backends never see the raw text: each
atom is rendered by the backend as a quoted FTS5 string or an analyzed OpenSearch match
query, so no input can reach either query language unescaped. If the text has operator words
and nothing else (``AND OR NOT``), they are searched as plain words. Only text with no letter
or digit at all cannot be interpreted and gives ``InvalidQuery``.
"""

from __future__ import annotations

from dataclasses import dataclass

from safekeep.search.documents import clean
from safekeep.search.errors import InvalidQuery

MAX_ATOMS = 32
_OPERATORS = frozenset({"AND", "OR", "NOT"})


@dataclass(frozen=True)
class Atom:
    """A word or a phrase (the backend's tokenizer splits it into tokens), maybe a prefix."""

    text: str
    phrase: bool = False
    prefix: bool = False


@dataclass(frozen=True)
class Clause:
    """One required condition: any of its atoms matches (a single atom in the common case)."""

    anyof: tuple[Atom, ...]


@dataclass(frozen=True)
class ParsedText:
    must: tuple[Clause, ...] = ()
    must_not: tuple[Atom, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.must and not self.must_not

    @property
    def positive(self) -> bool:
        return bool(self.must)


@dataclass(frozen=True)
class _Token:
    kind: str  # "atom" | "op"
    value: str
    atom: Atom | None = None
    negated: bool = False


def has_word_chars(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        negated = False
        if ch == "-" and i + 1 < n and not text[i + 1].isspace():
            negated = True
            i += 1
            ch = text[i]
        if ch == '"':
            end = text.find('"', i + 1)
            if end < 0:
                end = n
            body = text[i + 1 : end]
            i = end + 1
            prefix = False
            while i < n and text[i] == "*":
                prefix = True
                i += 1
            body = " ".join(body.replace("*", " ").split())
            tokens.append(
                _Token("atom", body, Atom(body, phrase=True, prefix=prefix), negated=negated)
            )
            continue
        start = i
        while i < n and not text[i].isspace() and text[i] != '"':
            i += 1
        word = text[start:i]
        if not negated and word in _OPERATORS:
            tokens.append(_Token("op", word))
            continue
        prefix = word.endswith("*")
        body = " ".join(word.replace("*", " ").split())
        tokens.append(_Token("atom", body, Atom(body, phrase=False, prefix=prefix), negated))
    return tokens


def _usable(atom: Atom | None) -> bool:
    return atom is not None and has_word_chars(atom.text)


def parse(text: str) -> ParsedText:
    """Parse free text; never raises for any input that contains a letter or a digit."""
    # The characters removed from documents are removed here too: NUL would end an FTS5 query
    # string early, and a highlight marker or a segmentation mark can never match anyway.
    text = clean(text)
    if not text.strip():
        return ParsedText()
    tokens = _lex(text)
    must: list[list[Atom]] = []
    must_not: list[Atom] = []
    pending_or = False
    pending_not = False
    for token in tokens:
        if token.kind == "op":
            if token.value == "OR":
                pending_or = bool(must)
            elif token.value == "NOT":
                pending_not = True
            continue
        atom = token.atom
        negated = token.negated or pending_not
        pending_not = False
        if not _usable(atom):
            pending_or = False
            continue
        assert atom is not None
        if negated:
            must_not.append(atom)
            pending_or = False
        elif pending_or:
            must[-1].append(atom)
            pending_or = False
        else:
            must.append([atom])
    if not must and not must_not:
        # Only operator words (or operators around unusable atoms): search them literally.
        words = [t.value for t in tokens if t.kind == "op"]
        must = [[Atom(w.lower())] for w in words]
        if not must:
            raise InvalidQuery("the search text has no letters or digits to search for")
    if len(must) + len(must_not) > MAX_ATOMS or sum(len(c) for c in must) > MAX_ATOMS:
        raise InvalidQuery(f"the search text has more than {MAX_ATOMS} terms")
    return ParsedText(
        must=tuple(dict.fromkeys(Clause(tuple(dict.fromkeys(c))) for c in must)),
        must_not=tuple(dict.fromkeys(must_not)),
    )


def parse_field(value: str, field: str) -> Atom:
    """A filter on one field (sender, recipient) is one phrase of the words it contains."""
    body = " ".join(clean(value).replace("*", " ").replace('"', " ").split())
    if not has_word_chars(body):
        raise InvalidQuery(f"the {field} filter has no letters or digits to search for")
    return Atom(body, phrase=True)
