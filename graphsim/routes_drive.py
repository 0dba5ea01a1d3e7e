"""OneDrive and document libraries: items, delta, content, versions and uploads."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from graphsim import ops
from graphsim.content import Content, ContentSink, store_bytes
from graphsim.core import (
    Engine,
    apply_select,
    collection,
    delta_links,
    delta_page,
    delta_resp,
    entity_resp,
    json_resp,
    ordered,
    read_delta_token,
    tenant_of,
)
from graphsim.http import GraphError, Req, Resp, Router
from graphsim.mail import parse_graph_datetime
from graphsim.state import Drive, DriveItem, Tenant, User, iso
from graphsim.uploads import UploadSession, new_session_id

SIMPLE_UPLOAD_LIMIT = 250 * 1024 * 1024


LATEST_TOKEN = "latest"  # noqa: S105 - the documented token value, not a secret


def _identity(tenant: Tenant, user_id: str) -> dict[str, Any]:
    user = tenant.users.get(user_id)
    if user is None:
        return {"user": {"displayName": "System Account"}}
    return {"user": {"email": user.upn, "id": user.id, "displayName": user.display_name}}


def get_drive(tenant: Tenant, drive_id: str) -> Drive:
    drive = tenant.drives.get(drive_id)
    if drive is None:
        raise GraphError(404, "itemNotFound", "The resource could not be found.")
    return drive


def get_drive_item(drive: Drive, item_id: str) -> DriveItem:
    item = drive.items.get(item_id)
    if item is None or item.deleted:
        raise GraphError(404, "itemNotFound", "The resource could not be found.")
    return item


def drive_json(tenant: Tenant, drive: Drive) -> dict[str, Any]:
    used = sum(
        i.content.size for i in drive.items.values() if i.content is not None and not i.deleted
    )
    owner: dict[str, Any]
    if drive.owner_kind == "user":
        owner = _identity(tenant, drive.owner_id)
    else:
        site = tenant.sites.get(drive.owner_id)
        owner = {"group": {"displayName": site.display_name if site else "Site"}}
    last = max((i.modified for i in drive.items.values()), default=drive.created)
    return {
        "id": drive.id,
        "driveType": drive.drive_type,
        "name": drive.name,
        "description": "",
        "createdDateTime": iso(drive.created),
        "lastModifiedDateTime": iso(last),
        "webUrl": drive.web_url,
        "createdBy": {"user": {"displayName": "System Account"}},
        "owner": owner,
        "quota": {
            "deleted": 0,
            "remaining": drive.quota_total - used,
            "state": "normal",
            "total": drive.quota_total,
            "used": used,
            "fileCount": sum(
                1 for i in drive.items.values() if i.content is not None and not i.deleted
            ),
        },
    }


def download_url(
    engine: Engine, tenant: Tenant, drive: Drive, item: DriveItem, version: str | None = None
) -> str:
    token = engine.sign(
        {
            "k": "dl",
            "t": tenant.id,
            "d": drive.id,
            "i": item.id,
            "v": version,
            "e": time.time() + engine.config.download_url_lifetime_s,
        }
    )
    return f"{engine.base_url}/_download/{token}"


def item_json(
    engine: Engine, tenant: Tenant, drive: Drive, item: DriveItem, *, in_delta: bool = False
) -> dict[str, Any]:
    guid = _guid(item)
    parent = drive.items.get(item.parent_id) if item.parent_id else None
    site_id = drive.owner_id if drive.owner_kind == "site" else None
    if site_id is None:
        site_id = next((s.id for s in tenant.sites.values() if drive.id in s.drive_ids), None)
    out: dict[str, Any] = {
        "@odata.etag": f'"{{{guid}}},{item.revision}"',
        "createdDateTime": iso(item.created),
        "eTag": f'"{{{guid}}},{item.revision}"',
        "id": item.id,
        "lastModifiedDateTime": iso(item.modified),
        "name": item.name,
        "webUrl": drive.web_url + (drive.path_of(item) if item.parent_id else ""),
        # The cTag follows the content only: renames, moves and new times leave it alone.
        "cTag": f'"c:{{{guid}}},{_content_version(item)}"',
        "size": item.content.size if item.content is not None else _folder_size(drive, item),
        "createdBy": _identity(tenant, item.created_by),
        "lastModifiedBy": _identity(tenant, item.modified_by),
        "parentReference": {"driveType": drive.drive_type, "driveId": drive.id},
        "fileSystemInfo": {
            "createdDateTime": iso(item.fs_created or item.created),
            "lastModifiedDateTime": iso(item.fs_modified or item.modified),
        },
    }
    if site_id:
        out["parentReference"]["siteId"] = site_id
    if parent is not None:
        out["parentReference"]["id"] = parent.id
        parent_path = drive.path_of(parent) if parent.parent_id else ""
        if not in_delta:
            out["parentReference"]["name"] = parent.name if parent.parent_id else drive.name
        if not (in_delta and (item.deleted or parent.deleted)):
            # Business drives return the path in delta too (what clients such as Corso
            # read); Graph's delta page says not to rely on it after an ancestor's rename.
            out["parentReference"]["path"] = f"/drives/{drive.id}/root:{parent_path}"
    if item.parent_id is None:
        out["root"] = {}
        out["name"] = "root"
    if in_delta:
        # Business drives' delta leaves out the cTag of a created or changed item, and the
        # cTag and name of a deleted one (driveItem: delta, Remarks): a client compares
        # content by hashes there, and tracks items by id.
        del out["cTag"]
        if item.deleted:
            del out["name"]
    if item.deleted:
        out["deleted"] = {"state": "deleted"}
        out.pop("@odata.etag", None)
        if item.is_folder:
            out["folder"] = {"childCount": 0}
        else:
            out["file"] = {"mimeType": item.mime_type}
        return out
    if item.is_folder:
        out["folder"] = {
            "childCount": sum(
                1
                for cid in drive.children.get(item.id, {}).values()
                if not drive.items[cid].deleted
            )
        }
    else:
        assert item.content is not None
        qx, _sha256 = item.content.hashes()
        out["@microsoft.graph.downloadUrl"] = download_url(engine, tenant, drive, item)
        # quickXorHash only: the only hash business drives give (sha1Hash and crc32Hash are
        # personal OneDrive's; sha256Hash is documented as not supported).
        out["file"] = {"mimeType": item.mime_type, "hashes": {"quickXorHash": qx}}
    return out


def _exclude_parents(req: Req) -> bool:
    """``Prefer: deltaExcludeParent`` (or the header of that name the delta page lists)."""
    return "deltaexcludeparent" in req.prefer() or "deltaexcludeparent" in req.headers


def _ancestors(
    drive: Drive, state: Any, live: list[tuple[int, str, DriveItem]]
) -> list[tuple[int, str, Any, bool]]:
    """The unchanged folders above the items changed in this round, up to the root, as
    OneDrive for Business returns them in an incremental delta (unless
    ``deltaExcludeParent``). Each comes once, just before the first changed item below it:
    its key sorts ahead of that item's (same change number, ``!`` before any id, outer
    folders first), so pages and their cursors stay stable."""
    changed = {i for seq, i, _obj in live if state.since < seq <= state.upto}
    placed: dict[str, tuple[int, str, Any, bool]] = {}
    for seq, item_id, obj in sorted(live, key=lambda e: (e[0], e[1])):
        if item_id not in changed:
            continue
        chain: list[DriveItem] = []
        parent_id = obj.parent_id
        while parent_id:
            parent = drive.items.get(parent_id)
            if parent is None or parent.deleted:
                break
            chain.append(parent)
            parent_id = parent.parent_id
        for depth, folder in enumerate(reversed(chain)):
            if folder.id in changed or folder.id in placed:
                continue
            placed[folder.id] = (seq, f"!{depth:04d}{folder.id}", folder, False)
    return list(placed.values())


def _sort_fields(item: DriveItem) -> dict[str, Any]:
    """What ``$orderby`` on children may name, without hashing every file to sort them."""
    return {
        "name": item.name,
        "size": item.content.size if item.content is not None else 0,
        "createdDateTime": iso(item.created),
        "lastModifiedDateTime": iso(item.modified),
        "fileSystemInfo": {
            "createdDateTime": iso(item.fs_created or item.created),
            "lastModifiedDateTime": iso(item.fs_modified or item.modified),
        },
    }


def select_item(obj: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """``$select`` on a driveItem: the pre-authenticated download URL is an instance
    annotation that comes only when named (``$select=id,@microsoft.graph.downloadUrl``)."""
    if not select:
        return obj
    out = apply_select(obj, select)
    if not DOWNLOAD_URL & {s.lower() for s in select}:
        out.pop("@microsoft.graph.downloadUrl", None)
    return out


# Either name selects the pre-authenticated URL (``content.downloadUrl`` is what the SDKs'
# samples and Corso ask for; the answer carries it as the instance annotation).
DOWNLOAD_URL = {"@microsoft.graph.downloadurl", "content.downloadurl"}


def _content_version(item: DriveItem) -> int:
    if item.is_folder:
        return item.revision
    return len(item.versions) + 1


def file_system_info(value: Any) -> tuple[datetime | None, datetime | None]:
    """The client times of a ``fileSystemInfo`` facet (absent ones are None).

    ``lastAccessedDateTime`` is accepted and dropped: business drives do not keep it.
    """
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise GraphError(400, "invalidRequest", "fileSystemInfo must be an object.")
    times: list[datetime | None] = []
    for key in ("createdDateTime", "lastModifiedDateTime"):
        raw = value.get(key)
        if raw is None:
            times.append(None)
            continue
        try:
            times.append(parse_graph_datetime(str(raw)).replace(microsecond=0))
        except ValueError as exc:
            raise GraphError(
                400, "invalidRequest", f"Invalid value for fileSystemInfo.{key}: {raw!r}."
            ) from exc
    return times[0], times[1]


def _folder_size(drive: Drive, folder: DriveItem) -> int:
    total = 0
    stack = [folder.id]
    while stack:
        current = stack.pop()
        for child_id in drive.children.get(current, {}).values():
            child = drive.items[child_id]
            if child.deleted:
                continue
            if child.content is not None:
                total += child.content.size
            else:
                stack.append(child.id)
    return total


def check_if_match(req: Req, item: DriveItem) -> None:
    """``if-match``: the item's eTag or cTag, else 412 (a concurrent change would be lost)."""
    wanted = req.headers.get("if-match")
    if not wanted or wanted.strip() == "*":
        return
    guid = _guid(item)
    current = {
        f'"{{{guid}}},{item.revision}"',
        f'"c:{{{guid}}},{_content_version(item)}"',
    }
    given = {t.strip().removeprefix("W/") for t in wanted.split(",")}
    given = {t if t.startswith('"') else f'"{t}"' for t in given}
    # An eTag holds a comma itself: compare the whole header too.
    if current & given or wanted.strip().removeprefix("W/") in current:
        return
    raise GraphError(
        412,
        "resourceModified",
        "The resource being updated has changed since the caller last read it, usually an "
        "eTag mismatch.",
    )


def _guid(item: DriveItem) -> str:
    return "-".join((item.id[2:10], item.id[10:14], item.id[14:18], item.id[18:22], item.id[22:34]))


def _conflict(req: Req, body: dict[str, Any] | None = None) -> str:
    value = req.query.get("@microsoft.graph.conflictBehavior")
    if body:
        value = body.get("@microsoft.graph.conflictBehavior") or value
        item = body.get("item")
        if isinstance(item, dict):
            value = item.get("@microsoft.graph.conflictBehavior") or value
    value = (value or "").lower()
    if value and value not in ("fail", "replace", "rename"):
        raise GraphError(400, "invalidRequest", f"Invalid conflictBehavior '{value}'.")
    return value


def renamed(drive: Drive, parent: DriveItem, name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    n = 1
    while True:
        candidate = f"{stem} {n}" + (f".{ext}" if ext else "")
        if drive.child_named(parent.id, candidate) is None:
            return candidate
        n += 1


def _validate_name(name: str) -> None:
    bad = set('"*:<>?/\\|')
    if not name or name.strip() != name or any(c in bad for c in name) or name in (".", ".."):
        raise GraphError(400, "invalidRequest", "The provided name contains invalid characters.")


def claim_name(
    drive: Drive, parent: DriveItem, name: str, behaviour: str
) -> tuple[str, DriveItem | None]:
    """Graph's ``@microsoft.graph.conflictBehavior`` where ``name`` may be taken under
    ``parent``: "fail" answers 409, "rename" picks a free name; otherwise the live item in the
    way comes back for the caller to replace (None when the name is free)."""
    existing = drive.child_named(parent.id, name)
    if existing is None or existing.deleted:
        return name, None
    if behaviour == "fail":
        raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
    if behaviour == "rename":
        return renamed(drive, parent, name), None
    return name, existing


def put_file(
    engine: Engine,
    tenant: Tenant,
    drive: Drive,
    parent: DriveItem,
    name: str,
    content: Content,
    behaviour: str,
    by: str,
) -> tuple[DriveItem, int]:
    _validate_name(name)
    name, existing = claim_name(drive, parent, name, behaviour)
    if existing is not None:
        if existing.is_folder:
            raise GraphError(409, "nameAlreadyExists", "A folder with this name already exists.")
        ops.replace_content(tenant, drive, existing, content, by)
        return existing, 200
    item = ops.new_drive_item(tenant, drive, parent, name, content=content, by=by)
    return item, 201


def landed(engine: Engine, tenant: Tenant, drive: Drive, name: str, content: Content) -> Content:
    """What the drive stores for uploaded ``content`` named ``name``: a document library
    writes its properties into Office files (``ops.arrived``); anything else as sent."""
    rewritten = ops.arrived(tenant, drive, name, content)
    return content if rewritten is None else store_bytes(rewritten, engine.spill_dir)


def addressed_item(req: Req) -> tuple[Tenant, Drive, DriveItem]:
    """The tenant, drive and item a ``/drives/{drive}/items/{item}...`` path names."""
    tenant = tenant_of(req)
    drive = get_drive(tenant, req.params["drive"])
    return tenant, drive, get_drive_item(drive, req.params["item"])


def _user(tenant: Tenant, key: str) -> User:
    user = tenant.user(key)
    if user is None:
        raise GraphError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
    return user


router = Router()


@router.add("GET", "/users/{user}/drive", "sharepoint")
def user_drive(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    user = _user(tenant, req.params["user"])
    if not user.drive_id or user.drive_id not in tenant.drives:
        raise GraphError(404, "ResourceNotFound", "User's mysite not found.")
    return entity_resp(req, "drives", drive_json(tenant, tenant.drives[user.drive_id]))


@router.add("GET", "/users/{user}/drives", "sharepoint")
def user_drives(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    user = _user(tenant, req.params["user"])
    drives = [tenant.drives[user.drive_id]] if user.drive_id in tenant.drives else []
    return collection(req, engine, "drives", [drive_json(tenant, d) for d in drives], default=200)


@router.add("GET", "/drives/{drive}", "sharepoint")
def get_drive_route(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    return json_resp(drive_json(tenant, get_drive(tenant, req.params["drive"])))


@router.add("GET", "/drives/{drive}/items/{item}", "sharepoint")
def get_item_route(engine: Engine, req: Req) -> Resp:
    tenant, drive, item = addressed_item(req)
    body = select_item(item_json(engine, tenant, drive, item), req.select())
    if "children" in [e.split("(")[0] for e in req.expand()]:
        body["children"] = [
            item_json(engine, tenant, drive, drive.items[c])
            for c in drive.children.get(item.id, {}).values()
            if not drive.items[c].deleted
        ]
    return entity_resp(req, f"drives('{drive.id}')/items", body)


@router.add("GET", "/drives/{drive}/items/{item}/children", "sharepoint")
def children(engine: Engine, req: Req) -> Resp:
    tenant, drive, item = addressed_item(req)
    kids = ordered(
        req,
        sorted(
            (
                drive.items[c]
                for c in drive.children.get(item.id, {}).values()
                if not drive.items[c].deleted
            ),
            key=lambda i: i.name.lower(),
        ),
        _sort_fields,
    )
    return collection(
        req,
        engine,
        f"drives('{drive.id}')/items('{item.id}')/children",
        kids,
        render=lambda k: select_item(item_json(engine, tenant, drive, k), req.select()),
        default=200,
        maximum=1000,
    )


@router.add("GET", "/drives/{drive}/items/{item}/delta", "sharepoint")
def delta(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    drive = get_drive(tenant, req.params["drive"])
    if req.params["item"] != drive.root_id:
        raise GraphError(
            400, "invalidRequest", "Delta is only supported on the root of a business drive."
        )
    path = f"/drives/{drive.id}/root/delta"
    token = req.query.get("token") or req.query.get("$deltatoken") or req.query.get("$skiptoken")
    latest = token == LATEST_TOKEN  # "now on" without the items: a link to start from
    state = read_delta_token(
        req,
        engine,
        collection=drive.id,
        owner=drive.id,
        style="onedrive",
        path=path,
        query={} if latest else {"select": req.query.get("$select", "")},
        default_size=200,
        max_size=1000,
        token=None if latest else token,
    )
    if latest:
        state.since = state.upto
        body: dict[str, Any] = {
            "@odata.context": f"{req.graph_base}/$metadata#Collection(driveItem)",
            "value": [],
        }
        body.update(delta_links(req, engine, state, [], False))
        return json_resp(body)
    select = [s for s in str(state.query.get("select", "")).split(",") if s]
    live = [(i.seq, i.id, i) for i in drive.items.values() if not i.deleted]
    removed = ((i.seq, i.id, i) for i in drive.items.values() if i.deleted)
    extra = [] if state.fresh or _exclude_parents(req) else _ancestors(drive, state, live)
    page, more = delta_page(state, live, removed, extra=extra)
    values = [
        select_item(item_json(engine, tenant, drive, obj, in_delta=True), select or None)
        for _seq, _id, obj, _gone in page
    ]
    return delta_resp(req, engine, state, page, more, entity="driveItem", values=values)


@router.add("GET", "/drives/{drive}/items/{item}/content", "sharepoint")
def content(engine: Engine, req: Req) -> Resp:
    tenant, drive, item = addressed_item(req)
    if item.is_folder:
        raise GraphError(400, "invalidRequest", "Cannot download a folder.")
    return Resp(302, None, {"Location": download_url(engine, tenant, drive, item)})


def by_user(req: Req, drive: Drive) -> str:
    return drive.author


@router.add("PUT", "/drives/{drive}/items/{item}/content", "sharepoint")
def replace(engine: Engine, req: Req) -> Resp:
    tenant, drive, item = addressed_item(req)
    check_if_match(req, item)
    if item.is_folder:
        raise GraphError(400, "invalidRequest", "Cannot upload content to a folder.")
    behaviour = _conflict(req)
    if behaviour == "fail":
        raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
    data = landed(engine, tenant, drive, item.name, store_bytes(req.body, engine.spill_dir))
    if behaviour == "rename" and item.parent_id is not None:
        parent = drive.items[item.parent_id]
        copy = ops.new_drive_item(
            tenant,
            drive,
            parent,
            renamed(drive, parent, item.name),
            content=data,
            by=by_user(req, drive),
        )
        return json_resp(item_json(engine, tenant, drive, copy), 201)
    ops.replace_content(tenant, drive, item, data, by_user(req, drive))
    return json_resp(item_json(engine, tenant, drive, item), 200)


@router.add("PUT", "/drives/{drive}/items/{item}/children/{name}/content", "sharepoint")
def simple_upload(engine: Engine, req: Req) -> Resp:
    tenant, drive, parent = addressed_item(req)
    if req.params.get("_mkdirs"):
        parent = ops.drive_folder_path(
            tenant, drive, req.params["_mkdirs"], by_user(req, drive), start=parent
        )
    if len(req.body) > SIMPLE_UPLOAD_LIMIT:
        raise GraphError(413, "invalidRequest", "Use an upload session for files over 250 MB.")
    item, status = put_file(
        engine,
        tenant,
        drive,
        parent,
        req.params["name"],
        landed(engine, tenant, drive, req.params["name"], store_bytes(req.body, engine.spill_dir)),
        _conflict(req) or "replace",
        by_user(req, drive),
    )
    return json_resp(item_json(engine, tenant, drive, item), status)


def start_session(
    engine: Engine,
    req: Req,
    drive: Drive,
    parent: DriveItem,
    name: str,
    existing: DriveItem | None,
) -> Resp:
    tenant = tenant_of(req)
    body = req.json()
    behaviour = _conflict(req, body) or ("replace" if existing is not None else "fail")
    _validate_name(name)
    clash = drive.child_named(parent.id, name)
    if existing is None and behaviour == "fail" and clash is not None and not clash.deleted:
        raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
    raw_spec = body.get("item")
    if raw_spec is not None and not isinstance(raw_spec, dict):
        raise GraphError(400, "invalidRequest", "item must be an object.")
    item_spec: dict[str, Any] = raw_spec or {}
    # driveItemUploadableProperties: the client's times are applied when the file lands.
    created, modified = file_system_info(item_spec.get("fileSystemInfo"))
    session_id = new_session_id()
    by = by_user(req, drive)

    def commit(data: Content) -> Resp:
        data = landed(engine, tenant, drive, existing.name if existing else name, data)
        if existing is not None and not existing.deleted:
            ops.replace_content(tenant, drive, existing, data, by)
            item, status = existing, 200
        else:
            # A name taken meanwhile answers 409 and keeps the session (Graph keeps it
            # until it expires so that the client can recover).
            item, status = put_file(engine, tenant, drive, parent, name, data, behaviour, by)
        engine.upload_sessions.pop(session_id, None)
        ops.set_file_times(tenant, drive, item, created, modified)
        return json_resp(item_json(engine, tenant, drive, item), status)

    session = UploadSession(
        id=session_id,
        kind="drive",
        tenant_id=tenant.id,
        expires=time.time() + engine.config.upload_session_lifetime_s,
        commit=commit,
        sink=ContentSink(engine.spill_dir),
        defer_commit=bool(body.get("deferCommit", False)),
    )
    if "fileSize" in item_spec:
        session.total = int(item_spec["fileSize"])
    engine.upload_sessions[session_id] = session
    return json_resp(
        {
            "@odata.context": f"{req.graph_base}/$metadata#microsoft.graph.uploadSession",
            "uploadUrl": f"{engine.base_url}/_upload/{session_id}",
            **session.status_body(),
        },
        200,
    )


@router.add(
    "POST", "/drives/{drive}/items/{item}/children/{name}/createUploadSession", "sharepoint"
)
def session_new(engine: Engine, req: Req) -> Resp:
    tenant, drive, parent = addressed_item(req)
    if req.params.get("_mkdirs"):
        parent = ops.drive_folder_path(
            tenant, drive, req.params["_mkdirs"], by_user(req, drive), start=parent
        )
    return start_session(engine, req, drive, parent, req.params["name"], None)


@router.add("POST", "/drives/{drive}/items/{item}/createUploadSession", "sharepoint")
def session_existing(engine: Engine, req: Req) -> Resp:
    _tenant, drive, item = addressed_item(req)
    check_if_match(req, item)
    if item.is_folder or item.parent_id is None:  # the root is a folder too
        raise GraphError(400, "invalidRequest", "Cannot upload content to a folder.")
    behaviour = _conflict(req, req.json())
    if behaviour == "fail":
        raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
    if behaviour == "rename":
        return start_session(engine, req, drive, drive.items[item.parent_id], item.name, None)
    return start_session(engine, req, drive, drive.items[item.parent_id], item.name, item)


@router.add("POST", "/drives/{drive}/items/{item}/children", "sharepoint")
def create_child(engine: Engine, req: Req) -> Resp:
    tenant, drive, parent = addressed_item(req)
    body = req.json()
    name = str(body.get("name") or "")
    _validate_name(name)
    if "folder" not in body:
        raise GraphError(400, "invalidRequest", "Only folders can be created here; upload files.")
    name, existing = claim_name(drive, parent, name, _conflict(req, body) or "fail")
    if existing is not None and existing.is_folder:
        return json_resp(item_json(engine, tenant, drive, existing), 201)
    folder = ops.new_drive_item(tenant, drive, parent, name, content=None, by=by_user(req, drive))
    return json_resp(item_json(engine, tenant, drive, folder), 201)


@router.add("PATCH", "/drives/{drive}/items/{item}", "sharepoint")
def patch_item(engine: Engine, req: Req) -> Resp:
    tenant, drive, item = addressed_item(req)
    check_if_match(req, item)
    body = req.json()
    parent = None
    ref = body.get("parentReference")
    if isinstance(ref, dict) and ref.get("id"):
        parent = get_drive_item(drive, str(ref["id"]))
        if not parent.is_folder:
            raise GraphError(400, "invalidRequest", "The destination is not a folder.")
    name = body.get("name")
    if name is not None:
        _validate_name(str(name))
    target_parent = parent or (drive.items[item.parent_id] if item.parent_id else None)
    target_name = str(name) if name else item.name
    if target_parent is not None:
        clash = drive.child_named(target_parent.id, target_name)
        if clash is not None and clash.id != item.id and not clash.deleted:
            raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
    created, modified = file_system_info(body.get("fileSystemInfo"))
    ops.move_drive_item(
        tenant, drive, item, parent, str(name) if name else None, by_user(req, drive)
    )
    ops.set_file_times(tenant, drive, item, created, modified)
    return json_resp(item_json(engine, tenant, drive, item))


@router.add("DELETE", "/drives/{drive}/items/{item}", "sharepoint")
def delete_item(engine: Engine, req: Req) -> Resp:
    tenant, drive, item = addressed_item(req)
    check_if_match(req, item)
    if item.parent_id is None:
        raise GraphError(403, "accessDenied", "The root cannot be deleted.")
    ops.delete_drive_item(tenant, drive, item)
    return Resp(204)


def versions_of(drive: Drive, item: DriveItem) -> list[dict[str, Any]]:
    assert item.content is not None
    current = {
        "id": f"{len(item.versions) + 1}.0",
        "content": item.content,
        "modified": item.modified,
        "by": item.modified_by,
    }
    return [current] + [
        {"id": v.id, "content": v.content, "modified": v.modified, "by": v.modified_by}
        for v in item.versions
    ]


def version_json(tenant: Tenant, v: dict[str, Any]) -> dict[str, Any]:
    return {
        "@microsoft.graph.downloadUrl": None,
        "id": v["id"],
        "lastModifiedDateTime": iso(v["modified"]),
        "size": v["content"].size,
        "lastModifiedBy": _identity(tenant, v["by"]),
    }


@router.add("GET", "/drives/{drive}/items/{item}/versions", "sharepoint")
def versions(engine: Engine, req: Req) -> Resp:
    tenant, drive, item = addressed_item(req)
    if item.is_folder:
        raise GraphError(400, "invalidRequest", "Folders have no versions.")
    values = []
    for v in versions_of(drive, item):
        body = version_json(tenant, v)
        body["@microsoft.graph.downloadUrl"] = download_url(
            engine,
            tenant,
            drive,
            item,
            None if v["id"] == f"{len(item.versions) + 1}.0" else v["id"],
        )
        values.append(body)
    return collection(
        req, engine, f"drives('{drive.id}')/items('{item.id}')/versions", values, default=200
    )


def find_version(drive: Drive, item: DriveItem, version_id: str) -> dict[str, Any]:
    for v in versions_of(drive, item):
        if v["id"] == version_id:
            return v
    raise GraphError(404, "itemNotFound", "The version could not be found.")


@router.add("GET", "/drives/{drive}/items/{item}/versions/{version}", "sharepoint")
def version(engine: Engine, req: Req) -> Resp:
    tenant, drive, item = addressed_item(req)
    return json_resp(version_json(tenant, find_version(drive, item, req.params["version"])))


@router.add("GET", "/drives/{drive}/items/{item}/versions/{version}/content", "sharepoint")
def version_content(engine: Engine, req: Req) -> Resp:
    tenant, drive, item = addressed_item(req)
    v = find_version(drive, item, req.params["version"])
    current = v["id"] == f"{len(item.versions) + 1}.0"
    return Resp(
        302,
        None,
        {"Location": download_url(engine, tenant, drive, item, None if current else v["id"])},
    )


@router.add("POST", "/drives/{drive}/items/{item}/versions/{version}/restoreVersion", "sharepoint")
def restore_version(engine: Engine, req: Req) -> Resp:
    tenant, drive, item = addressed_item(req)
    v = find_version(drive, item, req.params["version"])
    ops.replace_content(tenant, drive, item, v["content"], by_user(req, drive))
    return Resp(204)


@router.add("GET", "/drives/{drive}/items/{item}/permissions", "sharepoint")
def permissions(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    drive = get_drive(tenant, req.params["drive"])
    get_drive_item(drive, req.params["item"])
    owner = _identity(tenant, drive.owner_id)
    return collection(
        req,
        engine,
        "permissions",
        [
            {
                "id": "aTowIy5mfG1lbWJlcnNoaXB8",
                "roles": ["owner"],
                "grantedToV2": owner,
                "grantedTo": owner,
                "shareId": "owner",
            }
        ],
    )
