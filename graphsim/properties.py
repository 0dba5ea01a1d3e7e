"""The properties of the Outlook entities, as ``$select`` and written bodies name them.

Graph reads ``$select`` (and an expanded navigation property's nested ``$select``) against
the entity's type before Exchange sees it: a name the type does not have is refused 400
``RequestBroker--ParseUri`` "Could not find a property named 'x' on type
'microsoft.graph.message'." A created or changed item's JSON is read against it too: an
unknown property is 400 ``RequestBodyRead`` "The property 'x' does not exist on type
'microsoft.graph.message'.", and nothing is stored. graphsim's handlers keep whatever names
match, so ``check`` runs first, on v1.0 (beta's types have more).

The names are msgraph-sdk's v1.0 models' (its field deserializers, inherited ones included,
annotations left out); ``tests/graphsim/test_properties.py`` compares them with the
installed SDK, so they cannot drift from it unnoticed.
"""

from __future__ import annotations

import re
from typing import Any

from graphsim.http import GraphError, Req, nested_select

PROPERTIES: dict[str, frozenset[str]] = {
    "attachment": frozenset(
        {"contentType", "id", "isInline", "lastModifiedDateTime", "name", "size"}
    ),
    "calendar": frozenset(
        {
            "allowedOnlineMeetingProviders",
            "calendarPermissions",
            "calendarView",
            "canEdit",
            "canShare",
            "canViewPrivateItems",
            "changeKey",
            "color",
            "defaultOnlineMeetingProvider",
            "events",
            "hexColor",
            "id",
            "isDefaultCalendar",
            "isRemovable",
            "isTallyingResponses",
            "multiValueExtendedProperties",
            "name",
            "owner",
            "singleValueExtendedProperties",
        }
    ),
    "contact": frozenset(
        {
            "assistantName",
            "birthday",
            "businessAddress",
            "businessHomePage",
            "businessPhones",
            "categories",
            "changeKey",
            "children",
            "companyName",
            "createdDateTime",
            "department",
            "displayName",
            "emailAddresses",
            "extensions",
            "fileAs",
            "generation",
            "givenName",
            "homeAddress",
            "homePhones",
            "id",
            "imAddresses",
            "initials",
            "jobTitle",
            "lastModifiedDateTime",
            "manager",
            "middleName",
            "mobilePhone",
            "multiValueExtendedProperties",
            "nickName",
            "officeLocation",
            "otherAddress",
            "parentFolderId",
            "personalNotes",
            "photo",
            "primaryEmailAddress",
            "profession",
            "secondaryEmailAddress",
            "singleValueExtendedProperties",
            "spouseName",
            "surname",
            "tertiaryEmailAddress",
            "title",
            "yomiCompanyName",
            "yomiGivenName",
            "yomiSurname",
        }
    ),
    "contactFolder": frozenset(
        {
            "childFolders",
            "contacts",
            "displayName",
            "id",
            "multiValueExtendedProperties",
            "parentFolderId",
            "singleValueExtendedProperties",
        }
    ),
    "event": frozenset(
        {
            "allowNewTimeProposals",
            "attachments",
            "attendees",
            "body",
            "bodyPreview",
            "calendar",
            "cancelledOccurrences",
            "categories",
            "changeKey",
            "createdDateTime",
            "end",
            "exceptionOccurrences",
            "extensions",
            "hasAttachments",
            "hideAttendees",
            "iCalUId",
            "id",
            "importance",
            "instances",
            "isAllDay",
            "isCancelled",
            "isDraft",
            "isOnlineMeeting",
            "isOrganizer",
            "isReminderOn",
            "lastModifiedDateTime",
            "location",
            "locations",
            "multiValueExtendedProperties",
            "onlineMeeting",
            "onlineMeetingProvider",
            "onlineMeetingUrl",
            "organizer",
            "originalEndTimeZone",
            "originalStart",
            "originalStartTimeZone",
            "recurrence",
            "reminderMinutesBeforeStart",
            "responseRequested",
            "responseStatus",
            "sensitivity",
            "seriesMasterId",
            "showAs",
            "singleValueExtendedProperties",
            "start",
            "subject",
            "transactionId",
            "type",
            "webLink",
        }
    ),
    "mailFolder": frozenset(
        {
            "childFolderCount",
            "childFolders",
            "displayName",
            "id",
            "isHidden",
            "messageRules",
            "messages",
            "multiValueExtendedProperties",
            "parentFolderId",
            "singleValueExtendedProperties",
            "totalItemCount",
            "unreadItemCount",
        }
    ),
    "message": frozenset(
        {
            "attachments",
            "bccRecipients",
            "body",
            "bodyPreview",
            "categories",
            "ccRecipients",
            "changeKey",
            "conversationId",
            "conversationIndex",
            "createdDateTime",
            "extensions",
            "flag",
            "from",
            "hasAttachments",
            "id",
            "importance",
            "inferenceClassification",
            "internetMessageHeaders",
            "internetMessageId",
            "isDeliveryReceiptRequested",
            "isDraft",
            "isRead",
            "isReadReceiptRequested",
            "lastModifiedDateTime",
            "multiValueExtendedProperties",
            "parentFolderId",
            "receivedDateTime",
            "replyTo",
            "sender",
            "sentDateTime",
            "singleValueExtendedProperties",
            "subject",
            "toRecipients",
            "uniqueBody",
            "webLink",
        }
    ),
}

# A request's entity type by the end of its route's template (Outlook routes only).
_ENTITIES = (
    (re.compile(r"/attachments(/\{att\})?$"), "attachment"),
    (re.compile(r"/messages(/delta|/\{item\})?$"), "message"),
    (
        re.compile(r"/mailFolders(/delta|/\{folder\})?$|/mailFolders/\{folder\}/childFolders$"),
        "mailFolder",
    ),
    (
        re.compile(
            r"/contactFolders(/delta|/\{folder\})?$|/contactFolders/\{folder\}/childFolders$"
        ),
        "contactFolder",
    ),
    (re.compile(r"/contacts(/delta|/\{item\})?$"), "contact"),
    (
        re.compile(r"/(events|calendarView)(/delta|/\{item\})?$|/events/\{item\}/instances$"),
        "event",
    ),
    (re.compile(r"/calendars(/\{calendar\})?$"), "calendar"),
)
_NAVIGATION_TYPES = {"attachments": "attachment"}  # an expansion's type, by its lower-case name


# Types whose written bodies are judged here (an attachment's JSON is one of its subtypes').
_WRITTEN = frozenset({"message", "mailFolder", "contact", "contactFolder", "event", "calendar"})


def _check_body(body: dict[str, Any], entity: str) -> None:
    known = {p.lower() for p in PROPERTIES[entity]}
    for name in body:
        if "@" in name:  # an annotation: @odata.type, x@odata.bind
            continue
        if name.lower() not in known:
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The property '{name}' does not exist on type 'microsoft.graph.{entity}'.",
            )


def entity_of(template: str) -> str | None:
    for pattern, entity in _ENTITIES:
        if pattern.search(template):
            return entity
    return None


def _refuse(name: str, entity: str) -> GraphError:
    return GraphError(
        400,
        "RequestBroker--ParseUri",
        f"Could not find a property named '{name}' on type 'microsoft.graph.{entity}'.",
    )


def _check_names(names: list[str], entity: str) -> None:
    known = {p.lower() for p in PROPERTIES[entity]}
    for name in names:
        if name != "*" and name.lower() not in known:
            raise _refuse(name, entity)


def check(req: Req, template: str, body: Any = None) -> None:
    """Refuse a ``$select`` (top-level, or nested in an expanded attachments list), or a
    written JSON ``body``'s property, naming what the entity's type does not have."""
    if req.version != "v1.0":
        return
    entity = entity_of(template)
    if entity is None:
        return
    if req.method in ("POST", "PATCH"):
        if isinstance(body, dict) and entity in _WRITTEN:
            _check_body(body, entity)
        return
    if req.method != "GET":
        return
    select = req.select()
    if select:
        _check_names(select, entity)
    for navigation, options in req.expand_options().items():
        nested, chosen = _NAVIGATION_TYPES.get(navigation), nested_select(options)
        if nested and chosen:
            _check_names(chosen, nested)
