"""The shapes of the properties clients write to Outlook items and drive items.

Graph's OData layer reads a request body against the entity's type before Exchange or
SharePoint sees it: a value of the wrong shape (a number where an ``itemBody`` belongs, a
string where a list of recipients does) is refused 400 ``RequestBodyRead`` and nothing is
stored. graphsim's handlers read bodies trusting their shapes, so ``check`` runs first, on
the properties named here (``null`` passes: they are nullable); each handler still checks
what its entity means (read-only properties, required ones, spans, recurrences).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphsim.http import GraphError

Shape = Callable[[Any], bool]


def _string(value: Any) -> bool:
    return isinstance(value, str)


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _integer(value: Any) -> bool:
    return type(value) is int and -(2**31) <= value < 2**31  # Edm.Int32


def _object(value: Any) -> bool:
    return isinstance(value, dict)


def _list_of(shape: Shape) -> Shape:
    return lambda value: isinstance(value, list) and all(shape(v) for v in value)


def _fields(**shapes: Shape) -> Shape:
    """An object whose named fields, where present and not null, have their shapes."""
    return lambda value: (
        isinstance(value, dict)
        and all(value.get(name) is None or shape(value[name]) for name, shape in shapes.items())
    )


def _one_of(*names: str) -> Shape:
    """An enum member, by name in any case."""
    members = {n.lower() for n in names}
    return lambda value: isinstance(value, str) and value.lower() in members


_EMAIL = _fields(address=_string, name=_string)
_RECIPIENT = _fields(emailAddress=_EMAIL)
_RECIPIENTS = _list_of(_RECIPIENT)
_ITEM_BODY = _fields(contentType=_one_of("text", "html"), content=_string)
_STRINGS = _list_of(_string)

# Outlook items (messages, events, contacts, folders).
OUTLOOK: dict[str, Shape] = {
    "subject": _string,
    "body": _ITEM_BODY,
    "toRecipients": _RECIPIENTS,
    "ccRecipients": _RECIPIENTS,
    "bccRecipients": _RECIPIENTS,
    "replyTo": _RECIPIENTS,
    "from": _RECIPIENT,
    "sender": _RECIPIENT,
    "flag": _fields(flagStatus=_one_of("notFlagged", "complete", "flagged")),
    "categories": _STRINGS,
    "internetMessageHeaders": _list_of(_fields(name=_string, value=_string)),
    "importance": _one_of("low", "normal", "high"),
    "isRead": _boolean,
    "attendees": _list_of(
        _fields(emailAddress=_EMAIL, type=_one_of("required", "optional", "resource"))
    ),
    "location": _object,
    "locations": _list_of(_object),
    "start": _object,
    "end": _object,
    "recurrence": _object,
    "isAllDay": _boolean,
    "showAs": _one_of("free", "tentative", "busy", "oof", "workingElsewhere", "unknown"),
    "sensitivity": _one_of("normal", "personal", "private", "confidential"),
    "reminderMinutesBeforeStart": _integer,
    "displayName": _string,
    "givenName": _string,
    "surname": _string,
    "emailAddresses": _list_of(_EMAIL),
    "businessPhones": _STRINGS,
    "homePhones": _STRINGS,
    "destinationId": _string,
}

# Drive items.
DRIVE: dict[str, Shape] = {
    "name": _string,
    "item": _object,
    "folder": _object,
    "file": _object,
    "@microsoft.graph.conflictBehavior": _one_of("fail", "replace", "rename"),
}


def check(body: dict[str, Any], shapes: dict[str, Shape]) -> None:
    """Refuse ``body`` when one of ``shapes``' properties has another shape (at any depth
    where a shape names fields): Graph's OData layer refuses it before the service does."""
    for name, value in body.items():
        shape = shapes.get(name)
        if shape is not None and value is not None and not shape(value):
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The value of property '{name}' does not have the type the entity declares.",
            )
