"""The simulated directory and mailboxes, drives and sites: plain data plus change tracking.

Every mutation takes the tenant's next sequence number. Delta queries are answered from
those numbers: a collection's changes since a token are its live members whose ``seq`` is
newer, plus tombstones (members that were deleted or moved out) newer than the token. This
returns each changed item once, and a move shows as ``@removed`` in the old folder and as a
change in the new one, as Exchange does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from graphsim import ids
from graphsim.content import Content

if TYPE_CHECKING:
    from graphsim.teams import Teamwork

Found = TypeVar("Found")


def by_id_or_name(
    objects: dict[str, Found], key: str, names: Callable[[Found], tuple[str, ...]]
) -> Found | None:
    """An object by its id, else by one of its names whatever the case (a UPN; a domain or a
    tenant name; a list's display name): how the control API and tests may name things."""
    found = objects.get(key)
    if found is not None:
        return found
    lowered = key.lower()
    return next((o for o in objects.values() if lowered in (n.lower() for n in names(o))), None)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Sku:
    sku_id: str
    part_number: str
    prepaid: int
    service_plans: list[dict[str, str]]


@dataclass
class User:
    id: str
    upn: str
    display_name: str
    given_name: str
    surname: str
    job_title: str
    department: str
    office_location: str
    mobile_phone: str
    usage_location: str
    preferred_language: str
    created: datetime
    account_enabled: bool = True
    licenses: list[str] = field(default_factory=list)
    mailbox_enabled: bool = True
    # An Exchange application access policy (or RBAC for Applications) that leaves this
    # mailbox out of the app's scope: every Outlook request for it answers 403.
    app_access_denied: bool = False
    drive_id: str | None = None
    user_type: str = "Member"
    well_known: dict[str, str] = field(default_factory=dict)  # name -> mail folder id
    contacts_root: str = ""
    default_calendar: str = ""
    msgfolderroot: str = ""
    contact_folders_root: str = ""


@dataclass
class PropertyLog:
    """What changed in an Outlook item's or folder's Graph shape, and when: kept only while
    the tenant's partial delta updates are on (``graphsim.changes``)."""

    since: int  # the change number the log starts at: what changed before it is not known
    prints: dict[str, str]  # property -> fingerprint of its value now
    stamps: dict[str, int] = field(default_factory=dict)  # property -> its last change


@dataclass
class Folder:
    """A mail folder, contact folder or calendar."""

    id: str
    user_id: str
    kind: str  # "mail" | "contact" | "calendar"
    display_name: str
    parent_id: str | None
    seq: int
    created: datetime
    modified: datetime
    change_key: str
    well_known: str | None = None
    hidden: bool = False
    props: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False
    log: PropertyLog | None = None  # partial delta updates only


@dataclass
class Attachment:
    id: str
    kind: str  # "file" | "item" | "reference"
    name: str
    content_type: str | None
    modified: datetime
    content: Content | None = None
    content_id: str | None = None
    is_inline: bool = False
    item: Any = None  # MailSpec for attached messages, dict for event/contact items
    item_type: str = "message"
    source_url: str | None = None
    provider: str = "oneDriveBusiness"
    permission: str = "edit"
    is_folder: bool = False

    def size(self) -> int:
        if self.content is not None:
            return self.content.size + 200
        if self.kind == "reference":
            return 0
        return 4096


@dataclass
class OItem:
    """An Exchange item: message, event or contact. ``props`` holds its Graph-shaped fields."""

    id: str
    kind: str  # "message" | "event" | "contact"
    user_id: str
    folder_id: str
    seq: int
    created: datetime
    modified: datetime
    change_key: str
    props: dict[str, Any] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    deleted: bool = False
    # messages only
    spec: Any = None  # graphsim.mail.MailSpec
    raw_mime: bytes | None = None
    # the change number at which it entered its folder (created or moved in): delta's
    # changeType=created tells those from updates
    joined: int = 0
    # events only: instance overrides (date key -> props) and cancelled instance dates
    exceptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    # events only: attachments an exception carries itself (date key -> its own list)
    instance_attachments: dict[str, list[Attachment]] = field(default_factory=dict)
    # single-value extended properties written by clients (lower-case id -> {id, value})
    extended: dict[str, dict[str, str]] = field(default_factory=dict)
    # set on the stand-in for one exception of a series: the series master it belongs to
    master_id: str | None = None
    log: PropertyLog | None = None  # partial delta updates only


@dataclass
class Version:
    id: str
    content: Content
    modified: datetime
    modified_by: str


@dataclass
class DriveItem:
    id: str
    drive_id: str
    name: str
    parent_id: str | None
    is_folder: bool
    seq: int
    created: datetime
    modified: datetime
    created_by: str
    modified_by: str
    content: Content | None = None
    mime_type: str = "application/octet-stream"
    revision: int = 1
    versions: list[Version] = field(default_factory=list)  # older versions, newest first
    deleted: bool = False
    list_item_id: str | None = None
    # fileSystemInfo as the client reported it; None follows the service times. On business
    # drives a client-set lastModifiedDateTime is also the item's own (SharePoint "Modified").
    fs_created: datetime | None = None
    fs_modified: datetime | None = None


@dataclass
class Drive:
    id: str
    owner_kind: str  # "user" | "site"
    owner_id: str
    name: str
    drive_type: str  # "business" | "documentLibrary"
    root_id: str
    created: datetime
    web_url: str
    items: dict[str, DriveItem] = field(default_factory=dict)
    children: dict[str, dict[str, str]] = field(default_factory=dict)  # parent -> lname -> id
    list_id: str = ""
    quota_total: int = 1 << 40

    @property
    def author(self) -> str:
        """Who a change made without a signed-in user is put down to: a OneDrive's owner;
        nobody ("") for a site's library."""
        return self.owner_id if self.owner_kind == "user" else ""

    def child_named(self, parent_id: str, name: str) -> DriveItem | None:
        item_id = self.children.get(parent_id, {}).get(name.lower())
        return self.items.get(item_id) if item_id else None

    def attach(self, item: DriveItem) -> None:
        self.items[item.id] = item
        if item.parent_id is not None:
            self.children.setdefault(item.parent_id, {})[item.name.lower()] = item.id
        if item.is_folder:
            self.children.setdefault(item.id, {})

    def detach(self, item: DriveItem) -> None:
        if item.parent_id is not None:
            siblings = self.children.get(item.parent_id, {})
            if siblings.get(item.name.lower()) == item.id:
                del siblings[item.name.lower()]

    def path_of(self, item: DriveItem) -> str:
        names: list[str] = []
        current: DriveItem | None = item
        while current is not None and current.parent_id is not None:
            names.append(current.name)
            current = self.items.get(current.parent_id)
        return "/" + "/".join(reversed(names))


@dataclass
class ListItem:
    id: str
    list_id: str
    fields: dict[str, Any]
    seq: int
    created: datetime
    modified: datetime
    created_by: str
    modified_by: str
    revision: int = 1
    deleted: bool = False
    drive_item_id: str | None = None


@dataclass
class SpList:
    id: str
    site_id: str
    name: str
    display_name: str
    template: str
    created: datetime
    modified: datetime
    columns: list[dict[str, Any]] = field(default_factory=list)
    items: dict[str, ListItem] = field(default_factory=dict)
    next_item: int = 1
    drive_id: str | None = None
    hidden: bool = False
    description: str = ""

    def live_item(self, item_id: str) -> ListItem | None:
        """The item, unless unknown or deleted (a deleted one stays, delta's tombstone)."""
        item = self.items.get(item_id)
        return item if item is not None and not item.deleted else None


@dataclass
class Site:
    id: str
    hostname: str
    name: str
    display_name: str
    web_url: str
    created: datetime
    modified: datetime
    description: str = ""
    personal: bool = False
    is_root: bool = False
    drive_ids: list[str] = field(default_factory=list)
    list_ids: list[str] = field(default_factory=list)


@dataclass
class Tenant:
    id: str
    index: int
    name: str
    domain: str
    created: datetime
    seed: int
    users: dict[str, User] = field(default_factory=dict)
    skus: dict[str, Sku] = field(default_factory=dict)
    consented_apps: set[str] = field(default_factory=set)
    consent_denied: bool = False
    folders: dict[str, Folder] = field(default_factory=dict)
    items: dict[str, OItem] = field(default_factory=dict)
    members: dict[str, dict[str, None]] = field(default_factory=dict)  # folder -> item ids
    tombs: dict[str, dict[str, int]] = field(default_factory=dict)  # collection -> id -> seq
    drives: dict[str, Drive] = field(default_factory=dict)
    sites: dict[str, Site] = field(default_factory=dict)
    lists: dict[str, SpList] = field(default_factory=dict)
    seq: int = 0
    counter: int = 0
    sync_epochs: dict[str, int] = field(default_factory=dict)
    licensed_seats: int = 0
    occurrences: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> master, date
    teamwork: Teamwork | None = None  # teams, channels, chats (graphsim.teams), made on first use
    # Incremental delta rounds send updated contacts, messages and folders as their changed
    # properties only (graphsim.changes); off: whole objects, as before.
    partial_updates: bool = False

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def new_name(self, kind: str) -> str:
        """A seed-stable name for runtime-created objects, fed to ``ids``."""
        self.counter += 1
        return f"{self.seed}:{self.index}:{kind}:{self.counter}"

    def user(self, key: str) -> User | None:
        return by_id_or_name(self.users, key, lambda u: (u.upn,))

    # -- Exchange items -----------------------------------------------------------------

    def add_folder(self, folder: Folder) -> None:
        self.folders[folder.id] = folder
        self.members.setdefault(folder.id, {})
        self.tombs.get(self.folder_collection(folder.user_id, folder.kind), {}).pop(folder.id, None)
        self.track(folder, created=True)

    def track(self, obj: OItem | Folder, *, created: bool = False) -> None:
        """Note which properties the change just made touched (partial delta updates)."""
        if self.partial_updates:
            from graphsim import changes  # it renders with the routes, which import this

            changes.note(self, obj, created=created)

    @staticmethod
    def folder_collection(user_id: str, kind: str) -> str:
        return f"{kind}folders:{user_id}"

    def touch_folder(self, folder: Folder) -> None:
        folder.seq = self.next_seq()
        folder.modified = utcnow()
        folder.change_key = ids.change_key(folder.id, folder.seq)
        self.track(folder)

    def delete_folder(self, folder: Folder) -> None:
        """Delete a folder and everything under it (hard delete, as after emptying)."""
        for child in [f for f in self.folders.values() if f.parent_id == folder.id]:
            self.delete_folder(child)
        for item_id in list(self.members.get(folder.id, {})):
            self.delete_item(self.items[item_id])
        seq = self.next_seq()
        folder.deleted = True
        del self.folders[folder.id]
        self.tombs.setdefault(self.folder_collection(folder.user_id, folder.kind), {})[
            folder.id
        ] = seq

    def add_item(self, item: OItem) -> None:
        item.joined = item.seq
        self.items[item.id] = item
        self.members.setdefault(item.folder_id, {})[item.id] = None
        self.tombs.get(item.folder_id, {}).pop(item.id, None)
        self.track(item, created=True)

    def touch_item(self, item: OItem) -> None:
        item.seq = self.next_seq()
        item.modified = utcnow()
        item.change_key = ids.change_key(item.id, item.seq)
        if not item.deleted:
            self.track(item)

    def move_item(self, item: OItem, folder_id: str) -> None:
        if folder_id == item.folder_id:
            return
        self.members.get(item.folder_id, {}).pop(item.id, None)
        old, item.folder_id = item.folder_id, folder_id  # the change touches parentFolderId
        self.touch_item(item)
        self.tombs.setdefault(old, {})[item.id] = item.seq
        item.joined = item.seq
        self.members.setdefault(folder_id, {})[item.id] = None
        self.tombs.get(folder_id, {}).pop(item.id, None)

    def delete_item(self, item: OItem) -> None:
        self.members.get(item.folder_id, {}).pop(item.id, None)
        self.touch_item(item)
        item.deleted = True
        self.tombs.setdefault(item.folder_id, {})[item.id] = item.seq
        if item.kind != "event":
            # Events stay (flagged) so calendarView delta can name their removed instances.
            del self.items[item.id]

    def folder_items(self, folder_id: str) -> list[OItem]:
        return [self.items[i] for i in self.members.get(folder_id, {})]

    def user_folders(self, user_id: str, kind: str) -> list[Folder]:
        return [f for f in self.folders.values() if f.user_id == user_id and f.kind == kind]

    def epoch(self, owner: str) -> str:
        return f"{self.sync_epochs.get('*', 0)}.{self.sync_epochs.get(owner, 0)}"


@dataclass
class World:
    """Everything the simulator knows; guarded by ``lock`` (handlers and Python callers)."""

    seed: int
    tenants: dict[str, Tenant] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def tenant(self, key: str) -> Tenant | None:
        return by_id_or_name(self.tenants, key, lambda t: (t.domain, t.name))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.RLock()
