"""How a restore knows an item is already in the target: by identity, never by look-alike.

An item counts as already there when it is the same Microsoft 365 item (restoring in place,
its Graph id still exists) or a copy Safekeep restored earlier. Every message, event and
contact a restore makes whole is stamped with hidden single-value extended properties in
Safekeep's own property set: the Safekeep item id and version id it was restored from, and
the restore job that wrote it. A rerun finds them with
``$filter=singleValueExtendedProperties/Any(...)`` or reads them back with
``$expand=singleValueExtendedProperties($filter=...)`` while listing a folder, so the same
restore run twice adds nothing the second time. Users never see these properties.

The stamp is written last (``PATCH`` of the item: Graph creates extended properties "in a
new or existing instance"), once every attachment, exception and photo is in, because the
stamp is what makes a later restore count the item as already there. Created with its stamp,
an item whose attachment then failed (or whose worker died before adding it) would be taken
by the next ``skip`` restore as restored, its part missing for good, and Graph has no way to
remove an extended property again. An item is created with a mark of its own instead
(``STARTED_PROPERTY``: which Safekeep item it is becoming); one that has it without the
stamp is an incomplete copy (``TargetIndex.incomplete``): never already there, and taken out
by the restore that makes the item whole.

The job's stamp makes ``keep_both`` safe to retry: that rule writes a copy beside whatever is
there, so it ignores earlier copies, except those stamped with its own job id. A retried job
(after a worker was lost, or a blip that stopped an attempt) finds what its earlier attempt
wrote and does not write it twice; another restore still adds its own copy.

Two different items of a restore point are never merged, even when they share an Internet
Message-ID or an iCalUId (a message delivered twice, a series and its exceptions).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from safekeep.tenants.models import ItemVersion

# Safekeep's own MAPI named-property set (a fixed GUID: the stamp must be found by any
# later run, whichever version of Safekeep made it).
PROPERTY_SET = "{6b1f3c1e-5a0d-4d4f-9a8e-5afe4ee90001}"
ITEM_PROPERTY = f"String {PROPERTY_SET} Name SafekeepItemId"
VERSION_PROPERTY = f"String {PROPERTY_SET} Name SafekeepVersionId"
JOB_PROPERTY = f"String {PROPERTY_SET} Name SafekeepRestoreJobId"
STARTED_PROPERTY = f"String {PROPERTY_SET} Name SafekeepStartedItemId"
EXTENDED = "singleValueExtendedProperties"


def started(version: ItemVersion, job_id: uuid.UUID | None = None) -> list[dict[str, str]]:
    """The properties an item is created with: the Safekeep item it is becoming, not yet
    restored (the stamp follows once the item is whole), and the restore job making it."""
    props = [{"id": STARTED_PROPERTY, "value": str(version.item_id)}]
    if job_id is not None:
        props.append({"id": JOB_PROPERTY, "value": str(job_id)})
    return props


def stamp(version: ItemVersion, job_id: uuid.UUID | None = None) -> list[dict[str, str]]:
    """The properties that make an item restored, written once it is whole (``job_id``: the
    restore job writing it)."""
    props = [
        {"id": ITEM_PROPERTY, "value": str(version.item_id)},
        {"id": VERSION_PROPERTY, "value": str(version.id)},
    ]
    if job_id is not None:
        props.append({"id": JOB_PROPERTY, "value": str(job_id)})
    return props


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def stamp_filter(version: ItemVersion) -> str:
    """``$filter`` for items restored earlier from this Safekeep item (any version)."""
    return (
        f"{EXTENDED}/Any(ep: ep/id eq {_quoted(ITEM_PROPERTY)} "
        f"and ep/value eq {_quoted(str(version.item_id))})"
    )


EXPAND = (
    f"{EXTENDED}($filter=id eq {_quoted(ITEM_PROPERTY)} or id eq {_quoted(VERSION_PROPERTY)}"
    f" or id eq {_quoted(JOB_PROPERTY)} or id eq {_quoted(STARTED_PROPERTY)})"
)


def _stamped(obj: dict[str, Any], prop_id: str) -> str | None:
    for prop in obj.get(EXTENDED) or []:
        if str(prop.get("id") or "").lower() == prop_id.lower():
            return str(prop.get("value") or "") or None
    return None


def stamped_item(obj: dict[str, Any]) -> str | None:
    """The Safekeep item id an item of the target was restored from (None: not ours)."""
    return _stamped(obj, ITEM_PROPERTY)


def started_item(obj: dict[str, Any]) -> str | None:
    """The Safekeep item a restore started to write into this item of the target (None: not
    ours, or written before restores marked it)."""
    return _stamped(obj, STARTED_PROPERTY)


def stamped_job(obj: dict[str, Any]) -> str | None:
    """The restore job that wrote an item of the target (None: not ours, or restored before
    restores stamped their job)."""
    return _stamped(obj, JOB_PROPERTY)


def in_place(source_id: Any, target_id: Any, folder_mode: str) -> bool:
    """Restoring into the account and folders the items came from: an item whose Graph id
    still exists there is the item itself."""
    return bool(source_id == target_id and folder_mode == "original")


@dataclass
class TargetIndex:
    """What one target folder holds, as far as identity goes (filled from one listing)."""

    ids: set[str] = field(default_factory=set)
    stamped: dict[str, list[str]] = field(default_factory=dict)  # Safekeep item -> ids
    jobs: dict[str, str] = field(default_factory=dict)  # id -> the restore job that wrote it
    # Safekeep item -> copies a restore created but never stamped (left incomplete)
    incomplete: dict[str, list[str]] = field(default_factory=dict)

    def add(self, obj: dict[str, Any]) -> str | None:
        """Index one item of the target; its Safekeep item id if it is a restored copy."""
        target_id = str(obj["id"])
        self.ids.add(target_id)
        item = stamped_item(obj)
        if item:
            self.stamped.setdefault(item, []).append(target_id)
        elif begun := started_item(obj):
            self.incomplete.setdefault(begun, []).append(target_id)
        job = stamped_job(obj)
        if job:
            self.jobs[target_id] = job.lower()
        return item

    def leftovers(self, version: ItemVersion, job_id: uuid.UUID | None = None) -> list[str]:
        """Incomplete copies of this item an earlier restore left here (not restored: a
        whole copy replaces them); with ``job_id``, only those that job left (a retried
        ``keep_both`` job: an attempt stopped while making them, its worker lost)."""
        found = self.incomplete.get(str(version.item_id), [])
        if job_id is None:
            return list(found)
        return [t for t in found if self.jobs.get(t) == str(job_id)]

    def remember(
        self, version: ItemVersion, target_id: str, job_id: uuid.UUID | None = None
    ) -> None:
        self.ids.add(target_id)
        self.stamped.setdefault(str(version.item_id), []).append(target_id)
        if job_id is not None:
            self.jobs[target_id] = str(job_id)

    def restored_by(self, version: ItemVersion, job_id: uuid.UUID) -> str | None:
        """The copy of this item that restore job ``job_id`` wrote here, if any (an earlier
        attempt of the same job)."""
        mine = str(job_id)
        for target_id in self.stamped.get(str(version.item_id), []):
            if self.jobs.get(target_id) == mine:
                return target_id
        return None

    def forget(self, target_ids: list[str]) -> None:
        self.ids.difference_update(target_ids)
        for target_id in target_ids:
            self.jobs.pop(target_id, None)
        for item, found in list(self.stamped.items()):
            self.stamped[item] = [t for t in found if t not in target_ids]
        for item, found in list(self.incomplete.items()):
            self.incomplete[item] = [t for t in found if t not in target_ids]

    def existing(self, version: ItemVersion, graph_id: str | None) -> list[str]:
        """Ids in this folder that are this item (``graph_id``, given when restoring in
        place) or copies of it restored earlier."""
        found = list(self.stamped.get(str(version.item_id), []))
        if graph_id and graph_id in self.ids and graph_id not in found:
            found.insert(0, graph_id)
        return found
