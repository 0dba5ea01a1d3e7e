"""Partial delta updates: which properties of an Outlook item or folder changed, and when.

Graph documents ("Resource representation in the delta query response", delta-query-overview)
that in a delta round "updated instances are represented by their id with at least the
properties that have been updated, but additional properties may be included", and Outlook
does answer so (a read-flag toggle came back as ``id``, ``isRead`` and ``parentFolderId``
only: microsoft-graph-docs issue 7776). graphsim sends whole objects unless a tenant's
``partial_updates`` switch is on (off by default). Then every contact, message, mail folder
and contact folder keeps a ``PropertyLog``: a fingerprint of each property of its Graph shape
and the change number at which each last changed. A change (``Tenant.touch_item`` /
``touch_folder``) compares the shape with the fingerprints and stamps what differs with the
change's number, so two edits of different properties between rounds both show, and a
property cleared to null shows as null.

An incremental round (resumed from a delta link, token ``since``) then sends an updated
object as its annotations (``@odata.etag``, ``@odata.type``), ``id``, ``changeKey`` where
the shape has one, and the properties stamped after ``since``. ``lastModifiedDateTime``
changes with every change and is not counted as one. Whole objects still go out for the
first enumeration, for items created or moved in since the token (Exchange lists those as
created), and for anything whose log starts after the token (the switch was turned on, or
the object made, later: what changed before is not known).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from graphsim.state import Folder, OItem, PropertyLog, Tenant

TRACKED_ITEMS = ("contact", "message")
TRACKED_FOLDERS = ("mail", "contact")
# Sent with every partial entry (annotations, starting with "@", are sent too).
ALWAYS = frozenset({"id", "changeKey"})
# What changes with every change: not a change of its own.
UNTRACKED = frozenset({"id", "changeKey", "lastModifiedDateTime"})
# A message's properties made from others when asked for ($select): sent when one of those
# changed.
DERIVED = {
    "uniqueBody": ("body",),
    "internetMessageHeaders": (
        "subject",
        "body",
        "importance",
        "from",
        "sender",
        "toRecipients",
        "ccRecipients",
        "bccRecipients",
        "replyTo",
    ),
}


def tracked(obj: OItem | Folder) -> bool:
    if isinstance(obj, OItem):
        return obj.kind in TRACKED_ITEMS and obj.master_id is None
    return obj.kind in TRACKED_FOLDERS


def shape(tenant: Tenant, obj: OItem | Folder) -> dict[str, Any]:
    """The object's whole Graph shape, as its delta renders it (extended properties and
    attachments included, as their ``$expand`` would)."""
    # The renderers live with the routes, which import the state this module is called from.
    from graphsim import routes_calendar, routes_mail
    from graphsim.mail import message_json

    if isinstance(obj, Folder):
        if obj.kind == "mail":
            return routes_mail.folder_json(tenant, obj)
        return routes_calendar.cfolder_json(obj)
    if obj.kind == "message":
        out = message_json(obj, "https://outlook.office365.com")
        out["attachments"] = [[a.id, a.name, str(a.modified)] for a in obj.attachments]
    else:
        out = routes_calendar.contact_json(obj)
    out["singleValueExtendedProperties"] = [obj.extended[k] for k in sorted(obj.extended)]
    return out


def _prints(values: dict[str, Any]) -> dict[str, str]:
    return {
        key: hashlib.blake2b(
            json.dumps(value, sort_keys=True, default=str).encode(), digest_size=12
        ).hexdigest()
        for key, value in values.items()
        if not key.startswith("@") and key not in UNTRACKED
    }


def note(tenant: Tenant, obj: OItem | Folder, *, created: bool = False) -> None:
    """Record the change that just gave ``obj`` its change number (``created``: its first
    state, the baseline later changes are compared with)."""
    if not tracked(obj):
        return
    prints = _prints(shape(tenant, obj))
    log = obj.log
    if created or log is None:
        obj.log = PropertyLog(since=obj.seq, prints=prints)
        return
    for key in prints.keys() | log.prints.keys():
        if prints.get(key) != log.prints.get(key):
            log.stamps[key] = obj.seq
    log.prints = prints


def switch(tenant: Tenant, on: bool) -> None:
    """Turn partial updates on (every tracked object's current state becomes its baseline)
    or off (the logs go: whole objects again)."""
    tenant.partial_updates = on
    objects: list[OItem | Folder] = [*tenant.items.values(), *tenant.folders.values()]
    for obj in objects:
        obj.log = None
        if on and tracked(obj) and not getattr(obj, "deleted", False):
            obj.log = PropertyLog(since=tenant.seq, prints=_prints(shape(tenant, obj)))


def delta_entry(obj: OItem | Folder, whole: dict[str, Any], since: int | None) -> dict[str, Any]:
    """What a delta round sends for a changed object: ``whole`` (already rendered with the
    round's ``$select``), or in an incremental round (token ``since``; None for a first
    enumeration) its changed properties only."""
    log = obj.log
    if since is None or log is None or log.since > since:
        return whole
    if isinstance(obj, OItem) and obj.joined > since:
        return whole  # created, or moved in, since the token
    changed = {key for key, seq in log.stamps.items() if seq > since}
    changed |= {key for key, sources in DERIVED.items() if changed.intersection(sources)}
    return {
        key: value
        for key, value in whole.items()
        if key.startswith("@") or key in ALWAYS or key in changed
    }
