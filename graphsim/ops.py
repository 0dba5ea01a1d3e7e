"""Mutations shared by the generator, Graph handlers and the control API.

Keeping them in one place means a change made "as a user would" through the control API is
recorded exactly like one made through Graph, so delta sees both the same way.
"""

from __future__ import annotations

import mimetypes
import uuid
from datetime import datetime
from typing import Any

from graphsim import ids
from graphsim.content import (
    SP_PROPERTIES_NS,
    BytesContent,
    Content,
    FileContent,
    with_properties_part,
)
from graphsim.mail import MailSpec, conversation_id
from graphsim.state import (
    Attachment,
    Drive,
    DriveItem,
    Folder,
    ListItem,
    OItem,
    Site,
    SpList,
    Tenant,
    User,
    Version,
    utcnow,
)

WELL_KNOWN_MAIL = {
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "archive": "Archive",
    "outbox": "Outbox",
    "conversationhistory": "Conversation History",
    "clutter": "Clutter",
    "scheduled": "Scheduled",
}
HIDDEN_WELL_KNOWN = {
    "searchfolders": "Finder",
    "conflicts": "Conflicts",
    "localfailures": "Local Failures",
    "serverfailures": "Server Failures",
    "syncissues": "Sync Issues",
    "recoverableitemsdeletions": "Deletions",
}
TOP_LEVEL_HIDDEN = {"clutter", "scheduled"}


def new_folder(
    tenant: Tenant,
    user: User,
    kind: str,
    name: str,
    parent_id: str | None,
    *,
    well_known: str | None = None,
    hidden: bool = False,
    key: str | None = None,
    when: datetime | None = None,
    props: dict[str, Any] | None = None,
) -> Folder:
    when = when or utcnow()
    seq = tenant.next_seq()
    folder_id = ids.outlook_id(tenant.seed, tenant.id, user.id, kind, key or tenant.new_name("f"))
    folder = Folder(
        id=folder_id,
        user_id=user.id,
        kind=kind,
        display_name=name,
        parent_id=parent_id,
        seq=seq,
        created=when,
        modified=when,
        change_key=ids.change_key(folder_id, seq),
        well_known=well_known,
        hidden=hidden,
        props=props or {},
    )
    tenant.add_folder(folder)
    return folder


def provision_mailbox(tenant: Tenant, user: User, when: datetime) -> None:
    """Create the folder tree every Exchange mailbox starts with."""
    root = new_folder(
        tenant,
        user,
        "mail",
        "Top of Information Store",
        None,
        well_known="msgfolderroot",
        key="msgfolderroot",
        when=when,
    )
    user.msgfolderroot = root.id
    user.well_known["msgfolderroot"] = root.id
    for name, display in WELL_KNOWN_MAIL.items():
        folder = new_folder(
            tenant,
            user,
            "mail",
            display,
            root.id,
            well_known=name,
            key=name,
            when=when,
            hidden=name in TOP_LEVEL_HIDDEN,
        )
        user.well_known[name] = folder.id
    for name, display in HIDDEN_WELL_KNOWN.items():
        folder = new_folder(
            tenant,
            user,
            "mail",
            display,
            None,
            well_known=name,
            key=name,
            when=when,
            hidden=True,
        )
        user.well_known[name] = folder.id
    contacts_root = new_folder(
        tenant,
        user,
        "contact",
        "Contacts",
        None,
        well_known="contacts",
        key="contacts",
        when=when,
    )
    user.contacts_root = contacts_root.id
    calendar = new_folder(
        tenant,
        user,
        "calendar",
        "Calendar",
        None,
        well_known="calendar",
        key="calendar",
        when=when,
        props={
            "color": "auto",
            "hexColor": "",
            "isDefaultCalendar": True,
            "isRemovable": False,
            "canShare": True,
            "canViewPrivateItems": True,
            "canEdit": True,
            "isTallyingResponses": True,
            "allowedOnlineMeetingProviders": ["teamsForBusiness"],
            "defaultOnlineMeetingProvider": "teamsForBusiness",
        },
    )
    user.default_calendar = calendar.id


def new_item(
    tenant: Tenant,
    user: User,
    kind: str,
    folder_id: str,
    *,
    props: dict[str, Any] | None = None,
    spec: MailSpec | None = None,
    raw_mime: bytes | None = None,
    attachments: list[Attachment] | None = None,
    when: datetime | None = None,
    key: str | None = None,
) -> OItem:
    when = when or utcnow()
    seq = tenant.next_seq()
    item_id = ids.outlook_id(tenant.seed, tenant.id, user.id, kind, key or tenant.new_name(kind))
    item = OItem(
        id=item_id,
        kind=kind,
        user_id=user.id,
        folder_id=folder_id,
        seq=seq,
        created=when,
        modified=when,
        change_key=ids.change_key(item_id, seq),
        props=props or {},
        spec=spec,
        raw_mime=raw_mime,
        attachments=attachments or [],
    )
    if spec is not None and "conversationId" not in item.props:
        item.props["conversationId"] = conversation_id(spec)
    for index, att in enumerate(item.attachments):
        if not att.id:
            att.id = ids.attachment_id(item.id, index)
    tenant.add_item(item)
    return item


# -- drives ----------------------------------------------------------------------------------


def new_drive(
    tenant: Tenant,
    owner_kind: str,
    owner_id: str,
    name: str,
    drive_type: str,
    web_url: str,
    when: datetime,
    key: str,
) -> Drive:
    drive_id = ids.drive_id(tenant.seed, tenant.id, key)
    root_id = ids.drive_item_id(tenant.seed, drive_id, "root")
    drive = Drive(
        id=drive_id,
        owner_kind=owner_kind,
        owner_id=owner_id,
        name=name,
        drive_type=drive_type,
        root_id=root_id,
        created=when,
        web_url=web_url,
    )
    root = DriveItem(
        id=root_id,
        drive_id=drive_id,
        name="root",
        parent_id=None,
        is_folder=True,
        seq=tenant.next_seq(),
        created=when,
        modified=when,
        created_by=owner_id,
        modified_by=owner_id,
    )
    drive.attach(root)
    tenant.drives[drive_id] = drive
    return drive


def guess_mime(name: str) -> str:
    known = {
        ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        ".md": "text/markdown",
        ".eml": "message/rfc822",
        ".ics": "text/calendar",
        ".vcf": "text/vcard",
    }
    ext = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return known.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


# Office Open XML packages a document library rewrites on arrival (property promotion and
# demotion: SharePoint writes the library's properties into the file it stores).
OFFICE_OPEN_XML = frozenset(
    {"docx", "docm", "dotx", "xlsx", "xlsm", "xltx", "pptx", "pptm", "potx"}
)
REWRITE_LIMIT = 100 * 1024 * 1024  # bigger uploads are stored as sent


def arrived(tenant: Tenant, drive: Drive, name: str, content: Content) -> bytes | None:
    """What a document library stores instead of an uploaded Office file, or None when it
    keeps the bytes as sent.

    SharePoint (not OneDrive for Business) writes its properties into the Office documents
    uploaded to a library, so the stored file's size and hashes differ from the bytes sent
    (rclone: "Sharepoint ... silently modifies uploaded files, mainly Office files"). Here:
    a ``customXml`` part with the library's content type id and columns is added or
    replaced, every other part keeps its bytes. Only uploads through Graph arrive here
    (generated data is what the library already holds), only kept bytes (``BytesContent``,
    ``FileContent``) up to ``REWRITE_LIMIT``, only valid zip packages."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if drive.drive_type != "documentLibrary" or ext not in OFFICE_OPEN_XML:
        return None
    if not isinstance(content, BytesContent | FileContent) or content.size > REWRITE_LIMIT:
        return None
    splist = tenant.lists.get(drive.list_id)
    return with_properties_part(content.read(), library_properties(drive, splist))


def library_properties(drive: Drive, splist: SpList | None) -> bytes:
    """SharePoint's ``p:properties`` document for a file of this library: its content type
    id (Document, 0x0101, made the library's own) and an empty value per column."""
    list_id = splist.id if splist is not None else drive.id
    content_type = "0x010100" + uuid.uuid5(uuid.NAMESPACE_URL, list_id).hex.upper()
    schema = "{" + str(uuid.uuid5(uuid.NAMESPACE_OID, list_id)) + "}"
    columns = "".join(
        f'<{name} xmlns="{schema}" xsi:nil="true"/>'
        for name in (str(c.get("name") or "") for c in (splist.columns if splist else []))
        if name.isidentifier() and name != "Title"
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<p:properties xmlns:p="{SP_PROPERTIES_NS}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<documentManagement>"
        '<ContentTypeId xmlns="http://schemas.microsoft.com/sharepoint/v3">'
        f"{content_type}</ContentTypeId>{columns}"
        "</documentManagement></p:properties>"
    ).encode()


def new_drive_item(
    tenant: Tenant,
    drive: Drive,
    parent: DriveItem,
    name: str,
    *,
    content: Content | None,
    by: str,
    when: datetime | None = None,
    key: str | None = None,
) -> DriveItem:
    when = when or utcnow()
    item = DriveItem(
        id=ids.drive_item_id(tenant.seed, drive.id, key or tenant.new_name("di")),
        drive_id=drive.id,
        name=name,
        parent_id=parent.id,
        is_folder=content is None,
        seq=tenant.next_seq(),
        created=when,
        modified=when,
        created_by=by,
        modified_by=by,
        content=content,
        mime_type=guess_mime(name) if content is not None else "",
    )
    drive.attach(item)
    sync_library_item(tenant, drive, item)
    return item


def drive_folder_path(
    tenant: Tenant,
    drive: Drive,
    path: str,
    by: str,
    when: datetime | None = None,
    start: DriveItem | None = None,
) -> DriveItem:
    """Return the folder at ``path`` under ``start`` (the root), creating missing folders."""
    current = start or drive.items[drive.root_id]
    for name in [p for p in path.split("/") if p]:
        found = drive.child_named(current.id, name)
        if found is None or found.deleted:
            found = new_drive_item(tenant, drive, current, name, content=None, by=by, when=when)
        current = found
    return current


def touch_drive_item(tenant: Tenant, drive: Drive, item: DriveItem, by: str) -> None:
    item.seq = tenant.next_seq()
    item.modified = utcnow()
    item.modified_by = by
    item.revision += 1
    sync_library_item(tenant, drive, item)


def replace_content(
    tenant: Tenant, drive: Drive, item: DriveItem, content: Content, by: str
) -> None:
    """New content makes the current one a version, newest first, ids "N.0"."""
    if item.content is not None:
        item.versions.insert(
            0,
            Version(
                id=f"{len(item.versions) + 1}.0",
                content=item.content,
                modified=item.modified,
                modified_by=item.modified_by,
            ),
        )
    item.content = content
    # New bytes without a client-reported time: fileSystemInfo's modified time is now again
    # (its created time stays), as the fileSystemInfo reference says.
    item.fs_modified = None
    touch_drive_item(tenant, drive, item, by)


def set_file_times(
    tenant: Tenant,
    drive: Drive,
    item: DriveItem,
    created: datetime | None,
    modified: datetime | None,
) -> None:
    """Apply a client's ``fileSystemInfo``.

    On business drives the client's modified time also becomes the item's own
    ``lastModifiedDateTime`` (SharePoint's "Modified" column), which is what restores rely
    on to put a file's date back; the item's ``createdDateTime`` stays the service's.
    """
    if created is not None:
        item.fs_created = created
    if modified is not None:
        item.fs_modified = modified
        item.modified = modified
    sync_library_item(tenant, drive, item)


def delete_drive_item(tenant: Tenant, drive: Drive, item: DriveItem) -> None:
    for child_id in list(drive.children.get(item.id, {}).values()):
        child = drive.items.get(child_id)
        if child is not None and not child.deleted:
            delete_drive_item(tenant, drive, child)
    drive.detach(item)
    item.deleted = True
    item.seq = tenant.next_seq()
    item.modified = utcnow()
    if item.list_item_id and drive.list_id in tenant.lists:
        li = tenant.lists[drive.list_id].items.get(item.list_item_id)
        if li is not None:
            delete_list_item(tenant, li)


def move_drive_item(
    tenant: Tenant,
    drive: Drive,
    item: DriveItem,
    parent: DriveItem | None,
    name: str | None,
    by: str,
) -> None:
    drive.detach(item)
    if parent is not None:
        item.parent_id = parent.id
    if name:
        item.name = name
        if item.content is not None:
            item.mime_type = guess_mime(name)
    drive.attach(item)
    touch_drive_item(tenant, drive, item, by)


def sync_library_item(tenant: Tenant, drive: Drive, item: DriveItem) -> None:
    """A document library's files are also items of its list."""
    if not drive.list_id or drive.list_id not in tenant.lists or item.parent_id is None:
        return
    splist = tenant.lists[drive.list_id]
    if item.list_item_id is None:
        item.list_item_id = str(splist.next_item)
        splist.next_item += 1
        splist.items[item.list_item_id] = ListItem(
            id=item.list_item_id,
            list_id=splist.id,
            fields={},
            seq=item.seq,
            created=item.created,
            modified=item.modified,
            created_by=item.created_by,
            modified_by=item.modified_by,
            drive_item_id=item.id,
        )
    li = splist.items[item.list_item_id]
    li.fields = {
        "FileLeafRef": item.name,
        "Title": item.name.rsplit(".", 1)[0] if not item.is_folder else item.name,
        "ContentType": "Folder" if item.is_folder else "Document",
        "FileSizeDisplay": str(item.content.size) if item.content else "",
    }
    li.seq = item.seq
    li.modified = item.modified
    li.modified_by = item.modified_by
    li.revision = item.revision


def new_list_item(
    tenant: Tenant, splist: SpList, fields: dict[str, Any], by: str, when: datetime | None = None
) -> ListItem:
    when = when or utcnow()
    item_id = str(splist.next_item)
    splist.next_item += 1
    item = ListItem(
        id=item_id,
        list_id=splist.id,
        fields=dict(fields),
        seq=tenant.next_seq(),
        created=when,
        modified=when,
        created_by=by,
        modified_by=by,
    )
    splist.items[item_id] = item
    return item


def delete_list_item(tenant: Tenant, item: ListItem) -> None:
    item.deleted = True
    item.seq = tenant.next_seq()


def touch_list_item(tenant: Tenant, item: ListItem, by: str) -> None:
    item.seq = tenant.next_seq()
    item.modified = utcnow()
    item.modified_by = by
    item.revision += 1


def new_site(
    tenant: Tenant,
    name: str,
    display_name: str,
    path: str,
    when: datetime,
    *,
    personal: bool = False,
    is_root: bool = False,
    description: str = "",
    owner: str = "",
) -> Site:
    short = tenant.domain.split(".")[0]
    hostname = f"{short}-my.sharepoint.com" if personal else f"{short}.sharepoint.com"
    collection = ids.guid(tenant.seed, tenant.id, "sitecollection", path)
    web = ids.guid(tenant.seed, tenant.id, "web", path)
    site = Site(
        id=f"{hostname},{collection},{web}",
        hostname=hostname,
        name=name,
        display_name=display_name,
        web_url=f"https://{hostname}{path}",
        created=when,
        modified=when,
        description=description,
        personal=personal,
        is_root=is_root,
    )
    tenant.sites[site.id] = site
    library = new_list(tenant, site, "Shared Documents", "Documents", "documentLibrary", when)
    url = f"{site.web_url}/Shared%20Documents"
    drive = new_library_drive(tenant, site, library, url, when, key=f"site:{path}")
    if personal:
        drive.drive_type = "business"
    return site


def new_library_drive(
    tenant: Tenant, site: Site, library: SpList, web_url: str, when: datetime, *, key: str
) -> Drive:
    """A document library's drive, linked both ways with its list and listed on its site."""
    drive = new_drive(
        tenant, "site", site.id, library.display_name, "documentLibrary", web_url, when, key=key
    )
    drive.list_id = library.id
    library.drive_id = drive.id
    site.drive_ids.append(drive.id)
    return drive


def new_list(
    tenant: Tenant,
    site: Site,
    name: str,
    display_name: str,
    template: str,
    when: datetime,
    *,
    columns: list[dict[str, Any]] | None = None,
    hidden: bool = False,
    key: str | None = None,
) -> SpList:
    splist = SpList(
        id=ids.guid(tenant.seed, site.id, "list", key or name),
        site_id=site.id,
        name=name,
        display_name=display_name,
        template=template,
        created=when,
        modified=when,
        columns=columns or [{"name": "Title", "displayName": "Title", "text": {}}],
        hidden=hidden,
    )
    tenant.lists[splist.id] = splist
    site.list_ids.append(splist.id)
    return splist


def add_list(
    tenant: Tenant,
    site: Site,
    name: str,
    display_name: str,
    template: str,
    *,
    columns: list[dict[str, Any]],
    description: str = "",
    library: bool = False,
) -> SpList:
    """A list created at run time (a new GUID each time, as SharePoint gives); a library
    gets its own drive."""
    when = utcnow()
    splist = new_list(
        tenant,
        site,
        name,
        display_name,
        template,
        when,
        columns=columns,
        key=tenant.new_name("list"),
    )
    splist.description = description
    if library:
        url = f"{site.web_url}/{name.replace(' ', '%20')}"
        new_library_drive(tenant, site, splist, url, when, key=f"list:{splist.id}")
    return splist


def delete_list(tenant: Tenant, site: Site, splist: SpList) -> None:
    """A deleted list takes its items and, for a library, its drive with it."""
    if splist.id in site.list_ids:
        site.list_ids.remove(splist.id)
    tenant.lists.pop(splist.id, None)
    if splist.drive_id:
        if splist.drive_id in site.drive_ids:
            site.drive_ids.remove(splist.drive_id)
        tenant.drives.pop(splist.drive_id, None)
