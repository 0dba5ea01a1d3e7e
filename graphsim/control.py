"""Actions on the simulated world that a user or an admin would take, outside of Graph.

The Python API (``Simulator`` methods) and the HTTP control API under ``/_sim/`` both call
these functions, and they record changes exactly like Graph writes do so that delta sees
them.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from graphsim import ids, ops
from graphsim.calendar import fmt_dt, parse_dt
from graphsim.content import BytesContent, GeneratedContent
from graphsim.generator import ANCHOR, add_user, contact_props, event_props
from graphsim.mail import Addr, parse_mime
from graphsim.routes_mail import apply_message_patch, resolve_folder
from graphsim.state import (
    Drive,
    DriveItem,
    OItem,
    Site,
    SpList,
    Tenant,
    User,
    World,
    by_id_or_name,
    utcnow,
)


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def need_tenant(world: World, key: str) -> Tenant:
    tenant = world.tenant(key)
    if tenant is None:
        raise ControlError(404, f"unknown tenant {key!r}")
    return tenant


def need_user(tenant: Tenant, key: str) -> User:
    user = tenant.user(key)
    if user is None:
        raise ControlError(404, f"unknown user {key!r}")
    return user


def tenant_summary(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "domain": tenant.domain,
        "consented": bool(tenant.consented_apps),
        "users": [
            {
                "id": u.id,
                "userPrincipalName": u.upn,
                "displayName": u.display_name,
                "licensed": bool(u.licenses),
                "mailboxEnabled": u.mailbox_enabled,
                "driveId": u.drive_id,
                "accountEnabled": u.account_enabled,
            }
            for u in sorted(tenant.users.values(), key=lambda u: u.upn)
        ],
        "sites": [
            {
                "id": s.id,
                "name": s.name,
                "webUrl": s.web_url,
                "personal": s.personal,
                "driveIds": list(s.drive_ids),
                "listIds": list(s.list_ids),
            }
            for s in tenant.sites.values()
        ],
        "skus": [{"skuId": s.sku_id, "skuPartNumber": s.part_number} for s in tenant.skus.values()],
    }


def recount_seats(tenant: Tenant) -> None:
    tenant.licensed_seats = sum(1 for u in tenant.users.values() if u.licenses)


def create_user(
    tenant: Tenant, display_name: str, *, licensed: bool = True, sku_id: str | None = None
) -> User:
    given, _, surname = display_name.partition(" ")
    user = add_user(
        tenant,
        given=given or display_name,
        surname=surname or "User",
        licensed=licensed,
        key=tenant.new_name("user"),
        when=utcnow(),
        sku_id=sku_id,
    )
    recount_seats(tenant)
    return user


def assign_licence(tenant: Tenant, user: User, sku_id: str | None = None) -> None:
    sku = sku_id or next(iter(tenant.skus))
    if sku not in tenant.skus:
        raise ControlError(400, f"unknown sku {sku}")
    if sku not in user.licenses:
        user.licenses.append(sku)
    if not user.msgfolderroot:
        ops.provision_mailbox(tenant, user, utcnow())
    user.mailbox_enabled = True
    if user.drive_id is None:
        short = tenant.domain.split(".")[0]
        path = "/personal/" + user.upn.replace("@", "_").replace(".", "_")
        site = ops.new_site(
            tenant, path.rsplit("/", 1)[-1], user.display_name, path, utcnow(), personal=True
        )
        drive = tenant.drives[site.drive_ids[0]]
        drive.owner_kind, drive.owner_id, drive.name = "user", user.id, "OneDrive"
        drive.web_url = f"https://{short}-my.sharepoint.com{path}/Documents"
        user.drive_id = drive.id
    recount_seats(tenant)


def remove_licence(
    tenant: Tenant, user: User, sku_id: str | None = None, *, keep_access: bool = False
) -> None:
    """Remove a licence; with none left the mailbox and OneDrive stop answering."""
    if sku_id:
        if sku_id in user.licenses:
            user.licenses.remove(sku_id)
    else:
        user.licenses.clear()
    if not user.licenses and not keep_access:
        user.mailbox_enabled = False
        if user.drive_id:
            tenant.drives.pop(user.drive_id, None)
            user.drive_id = None
    recount_seats(tenant)


def add_mime_message(
    tenant: Tenant,
    user: User,
    raw: bytes,
    folder: str = "inbox",
    *,
    received: datetime | None = None,
    is_read: bool = False,
) -> OItem:
    if not user.mailbox_enabled:
        raise ControlError(409, "the user has no mailbox")
    target = _folder(tenant, user, folder, "mail")
    name = tenant.new_name("import")
    spec, attachments = parse_mime(raw, received=received or utcnow(), id_parts=(name,))
    return ops.new_item(
        tenant,
        user,
        "message",
        target,
        spec=spec,
        raw_mime=raw,
        attachments=attachments,
        when=spec.received,
        props={"isRead": is_read, "isDraft": folder.lower() == "drafts", "categories": []},
    )


def _folder(tenant: Tenant, user: User, key: str, kind: str) -> str:
    try:
        return resolve_folder(tenant, user, key, kind).id
    except Exception:
        for folder in tenant.user_folders(user.id, kind):
            if folder.display_name.lower() == key.lower():
                return folder.id
        raise ControlError(404, f"unknown {kind} folder {key!r}") from None


def add_mail_folder(tenant: Tenant, user: User, name: str, parent: str = "msgfolderroot") -> str:
    parent_id = _folder(tenant, user, parent, "mail")
    return ops.new_folder(tenant, user, "mail", name, parent_id).id


def user_drive(tenant: Tenant, user: User | None, drive_id: str | None) -> Drive:
    if drive_id:
        drive = tenant.drives.get(drive_id)
    elif user is not None and user.drive_id:
        drive = tenant.drives.get(user.drive_id)
    else:
        drive = None
    if drive is None:
        raise ControlError(404, "no such drive")
    return drive


def add_file(
    tenant: Tenant, drive: Drive, path: str, *, data: bytes | None = None, size: int | None = None
) -> DriveItem:
    folder_path, _, name = path.strip("/").rpartition("/")
    if not name:
        raise ControlError(400, "path must name a file")
    by = drive.author
    parent = ops.drive_folder_path(tenant, drive, folder_path, by)
    if data is not None:
        content: Any = BytesContent.of(data)
    else:
        content = GeneratedContent(
            size=size if size is not None else 1024,
            seed=f"{tenant.seed}:added:{tenant.new_name('file')}",
        )
    existing = drive.child_named(parent.id, name)
    if existing is not None and not existing.deleted:
        ops.replace_content(tenant, drive, existing, content, by)
        return existing
    return ops.new_drive_item(tenant, drive, parent, name, content=content, by=by)


def add_event(
    tenant: Tenant,
    user: User,
    *,
    subject: str,
    start: datetime,
    end: datetime,
    recurrence: dict[str, Any] | None = None,
    attendees: list[str] | None = None,
    body: str = "",
    location: str = "",
    calendar: str = "calendar",
) -> OItem:
    folder = _folder(tenant, user, calendar, "calendar")
    props = event_props(
        subject=subject,
        body=body or f"<html><body><p>{subject}</p></body></html>",
        start=start,
        end=end,
        organizer=Addr(user.display_name, user.upn),
        attendees=[Addr(a.split("@")[0], a) for a in attendees or []],
        location=location,
        recurrence=recurrence,
        categories=[],
        is_all_day=False,
    )
    event = ops.new_item(tenant, user, "event", folder, props=props)
    event.props["iCalUId"] = (
        "040000008200E00074C5B7101A82E008" + ids.digest(event.id, size=28).hex().upper()
    )
    return event


def add_contact(
    tenant: Tenant,
    user: User,
    *,
    given_name: str,
    surname: str,
    emails: list[str] | None = None,
    folder: str = "contacts",
) -> OItem:
    folder_id = _folder(tenant, user, folder, "contact")
    props = contact_props(random.Random(f"{given_name}{surname}"), given_name, surname)
    if emails is not None:
        props["emailAddresses"] = [
            {"name": f"{given_name} {surname}", "address": e} for e in emails
        ]
    return ops.new_item(tenant, user, "contact", folder_id, props=props)


def add_site(tenant: Tenant, name: str) -> Site:
    slug = "".join(ch for ch in name if ch.isalnum()) or "site"
    site = ops.new_site(tenant, slug, name, f"/sites/{slug}", utcnow(), description=f"{name} site")
    ops.new_list(
        tenant,
        site,
        "Issue tracker",
        "Issue tracker",
        "genericList",
        utcnow(),
        columns=[
            {"name": "Title", "displayName": "Title", "text": {}},
            {"name": "Status", "displayName": "Status", "text": {}},
        ],
    )
    return site


def need_list(tenant: Tenant, list_id: str) -> SpList:
    splist = by_id_or_name(tenant.lists, list_id, lambda s: (s.display_name,))
    if splist is None:
        raise ControlError(404, f"unknown list {list_id!r}")
    return splist


def need_drive_item(tenant: Tenant, item_id: str) -> tuple[Drive, DriveItem]:
    for drive in tenant.drives.values():
        item = drive.items.get(item_id)
        if item is not None and not item.deleted:
            return drive, item
    raise ControlError(404, f"unknown item {item_id!r}")


def edit_item(
    tenant: Tenant, item_id: str, changes: dict[str, Any], *, list_id: str | None = None
) -> None:
    if list_id:
        li = need_list(tenant, list_id).live_item(item_id)
        if li is None:
            raise ControlError(404, "unknown list item")
        li.fields.update(changes or {"Title": str(li.fields.get("Title", "")) + " (edited)"})
        ops.touch_list_item(tenant, li, li.modified_by)
        return
    item = tenant.items.get(item_id)
    if item is not None and not item.deleted:
        if item.kind == "message":
            apply_message_patch(tenant, item, changes or {"isRead": not item.props.get("isRead")})
        else:
            if not changes:
                changes = (
                    {"subject": str(item.props.get("subject", "")) + " (edited)"}
                    if item.kind == "event"
                    else {"jobTitle": "Edited " + str(item.props.get("jobTitle") or "")}
                )
            for key, value in changes.items():
                item.props[key] = value
            if item.kind == "contact" and ("givenName" in changes or "surname" in changes):
                item.props["displayName"] = (
                    f"{item.props.get('givenName', '')} {item.props.get('surname', '')}".strip()
                )
            tenant.touch_item(item)
        return
    drive, ditem = need_drive_item(tenant, item_id)
    by = drive.author
    if "name" in changes:
        ops.move_drive_item(tenant, drive, ditem, None, str(changes["name"]), by)
    if "content" in changes or not changes:
        if ditem.is_folder:
            raise ControlError(400, "folders have no content")
        data = changes.get("content")
        if data is None:
            assert ditem.content is not None
            old = ditem.content
            if old.size <= 1 << 20:
                data = old.read() + b"\nedited " + utcnow().isoformat().encode() + b"\n"
        content: Any = (
            BytesContent.of(data)
            if data is not None
            else GeneratedContent(
                size=ditem.content.size if ditem.content else 0,
                seed=f"{tenant.seed}:edit:{tenant.new_name('edit')}",
            )
        )
        ops.replace_content(tenant, drive, ditem, content, by)


def move_item(tenant: Tenant, item_id: str, destination: str) -> None:
    item = tenant.items.get(item_id)
    if item is not None and not item.deleted:
        user = tenant.users[item.user_id]
        kind = {"message": "mail", "contact": "contact", "event": "calendar"}[item.kind]
        tenant.move_item(item, _folder(tenant, user, destination, kind))
        return
    drive, ditem = need_drive_item(tenant, item_id)
    by = drive.author
    target = drive.items.get(destination)
    if target is None:
        target = ops.drive_folder_path(tenant, drive, destination, by)
    if not target.is_folder:
        raise ControlError(400, "destination is not a folder")
    ops.move_drive_item(tenant, drive, ditem, target, None, by)


def delete_item(
    tenant: Tenant, item_id: str, *, hard: bool = False, list_id: str | None = None
) -> None:
    if list_id:
        li = need_list(tenant, list_id).live_item(item_id)
        if li is None:
            raise ControlError(404, "unknown list item")
        ops.delete_list_item(tenant, li)
        return
    item = tenant.items.get(item_id)
    if item is not None and not item.deleted:
        user = tenant.users[item.user_id]
        deleted_items = user.well_known.get("deleteditems")
        if (
            item.kind == "message"
            and not hard
            and item.folder_id != deleted_items
            and deleted_items
        ):
            tenant.move_item(item, deleted_items)
        else:
            tenant.delete_item(item)
        return
    for folder in list(tenant.folders.values()):
        if folder.id == item_id:
            tenant.delete_folder(folder)
            return
    ops.delete_drive_item(tenant, *need_drive_item(tenant, item_id))


def ransomware(tenant: Tenant, user: User, count: int, extension: str = ".locked") -> list[str]:
    """Overwrite ``count`` of the user's files with random bytes under new names."""
    if not user.drive_id or user.drive_id not in tenant.drives:
        raise ControlError(404, "the user has no drive")
    drive = tenant.drives[user.drive_id]
    files = sorted(
        (i for i in drive.items.values() if not i.deleted and not i.is_folder), key=lambda i: i.id
    )
    rng = random.Random(f"{tenant.seed}:ransom:{tenant.new_name('ransom')}")
    victims = rng.sample(files, min(count, len(files)))
    for item in victims:
        assert item.content is not None
        noise = GeneratedContent(
            size=max(item.content.size, 16), seed=f"ransom:{rng.getrandbits(64):x}"
        )
        ops.replace_content(tenant, drive, item, noise, user.id)
        new_name = item.name + extension
        while drive.child_named(item.parent_id or "", new_name) is not None:
            new_name = f"{rng.getrandbits(24):x}{extension}"
        ops.move_drive_item(tenant, drive, item, None, new_name, user.id)
    return [i.id for i in victims]


def expire_delta_tokens(tenant: Tenant, owner: str | None = None) -> None:
    key = owner or "*"
    tenant.sync_epochs[key] = tenant.sync_epochs.get(key, 0) + 1


def default_window() -> tuple[datetime, datetime]:
    return ANCHOR - timedelta(days=365), ANCHOR + timedelta(days=365)


def shift(value: dict[str, str], delta: timedelta) -> dict[str, str]:
    return fmt_dt(parse_dt(value) + delta)
