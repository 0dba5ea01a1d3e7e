"""How a restore knows an item is already in the target: by identity, never by look-alike.

An item counts as already there when it is the same Microsoft 365 item (restoring in place,
its Graph id still exists) or a copy Safekeep restored earlier. Every message, event and
contact a restore creates is stamped with two hidden single-value extended properties in
Safekeep's own property set: the Safekeep item id and version id it was restored from. A
rerun finds them with ``$filter=singleValueExtendedProperties/Any(...)`` or reads them back
with ``$expand=singleValueExtendedProperties($filter=...)`` while listing a folder, so the
same restore run twice adds nothing the second time. Users never see these properties.

Two different items of a restore point are never merged, even when they share an Internet
Message-ID or an iCalUId (a message delivered twice, a series and its exceptions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safekeep.tenants.models import ItemVersion

# Safekeep's own MAPI named-property set (a fixed GUID: the stamp must be found by any
# later run, whichever version of Safekeep made it).
PROPERTY_SET = "{6b1f3c1e-5a0d-4d4f-9a8e-5afe4ee90001}"
ITEM_PROPERTY = f"String {PROPERTY_SET} Name SafekeepItemId"
VERSION_PROPERTY = f"String {PROPERTY_SET} Name SafekeepVersionId"
EXTENDED = "singleValueExtendedProperties"


def stamp(version: ItemVersion) -> list[dict[str, str]]:
    """The properties to write on a restored item."""
    return [
        {"id": ITEM_PROPERTY, "value": str(version.item_id)},
        {"id": VERSION_PROPERTY, "value": str(version.id)},
    ]


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def stamp_filter(version: ItemVersion) -> str:
    """``$filter`` for items restored earlier from this Safekeep item (any version)."""
    return (
        f"{EXTENDED}/Any(ep: ep/id eq {_quoted(ITEM_PROPERTY)} "
        f"and ep/value eq {_quoted(str(version.item_id))})"
    )


EXPAND = f"{EXTENDED}($filter=id eq {_quoted(ITEM_PROPERTY)} or id eq {_quoted(VERSION_PROPERTY)})"


def stamped_item(obj: dict[str, Any]) -> str | None:
    """The Safekeep item id an item of the target was restored from (None: not ours)."""
    for prop in obj.get(EXTENDED) or []:
        if str(prop.get("id") or "").lower() == ITEM_PROPERTY.lower():
            return str(prop.get("value") or "") or None
    return None


def in_place(source_id: Any, target_id: Any, folder_mode: str) -> bool:
    """Restoring into the account and folders the items came from: an item whose Graph id
    still exists there is the item itself."""
    return bool(source_id == target_id and folder_mode == "original")


@dataclass
class TargetIndex:
    """What one target folder holds, as far as identity goes (filled from one listing)."""

    ids: set[str] = field(default_factory=set)
    stamped: dict[str, list[str]] = field(default_factory=dict)  # Safekeep item -> ids

    def add(self, obj: dict[str, Any]) -> str | None:
        target_id = str(obj["id"])
        self.ids.add(target_id)
        item = stamped_item(obj)
        if item:
            self.stamped.setdefault(item, []).append(target_id)
        return item

    def remember(self, version: ItemVersion, target_id: str) -> None:
        self.ids.add(target_id)
        self.stamped.setdefault(str(version.item_id), []).append(target_id)

    def forget(self, target_ids: list[str]) -> None:
        self.ids.difference_update(target_ids)
        for item, found in list(self.stamped.items()):
            self.stamped[item] = [t for t in found if t not in target_ids]

    def existing(self, version: ItemVersion, graph_id: str | None) -> list[str]:
        """Ids in this folder that are this item (``graph_id``, given when restoring in
        place) or copies of it restored earlier."""
        found = list(self.stamped.get(str(version.item_id), []))
        if graph_id and graph_id in self.ids and graph_id not in found:
            found.insert(0, graph_id)
        return found
