"""SharePoint sites, their drives, lists and list items (with delta)."""

from __future__ import annotations

from typing import Any

from graphsim import ops
from graphsim.core import (
    Engine,
    apply_select,
    collection,
    delta_page,
    delta_resp,
    entity_resp,
    json_resp,
    read_delta_token,
    tenant_of,
)
from graphsim.http import GraphError, Req, Resp, Router, nested_select, parse_expand
from graphsim.routes_drive import _identity, drive_json
from graphsim.state import ListItem, Site, SpList, Tenant, iso

LATEST_TOKEN = "latest"  # noqa: S105 - the documented token value, not a secret


def site_json(site: Site) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": site.id,
        "createdDateTime": iso(site.created),
        "lastModifiedDateTime": iso(site.modified),
        "name": site.name,
        "webUrl": site.web_url,
        "displayName": site.display_name,
        "description": site.description,
        "isPersonalSite": site.personal,
        "siteCollection": {"hostname": site.hostname},
    }
    if site.is_root:
        out["root"] = {}
    return out


def get_site(tenant: Tenant, key: str) -> Site:
    if key == "root":
        for site in tenant.sites.values():
            if site.is_root:
                return site
    found = tenant.sites.get(key)
    if found is not None:
        return found
    for candidate in tenant.sites.values():
        if candidate.id.split(",")[1:2] == [key] or candidate.web_url.lower().endswith(key.lower()):
            return candidate
    raise GraphError(404, "itemNotFound", "Requested site could not be found")


def get_list(tenant: Tenant, site: Site, key: str) -> SpList:
    for list_id in site.list_ids:
        splist = tenant.lists[list_id]
        if key in (splist.id, splist.name) or key.lower() == splist.display_name.lower():
            return splist
    raise GraphError(404, "itemNotFound", "The specified list was not found")


def addressed_list_item(req: Req) -> tuple[Tenant, Site, SpList, ListItem]:
    """The tenant, site, list and live item a ``/sites/{site}/lists/{list}/items/{item}``
    path names; an unknown or deleted item answers 404."""
    tenant, s = addressed_site(req)
    splist = get_list(tenant, s, req.params["list"])
    item = splist.live_item(req.params["item"])
    if item is None:
        raise GraphError(404, "itemNotFound", "The specified list item was not found")
    return tenant, s, splist, item


def list_json(tenant: Tenant, site: Site, splist: SpList) -> dict[str, Any]:
    last = max((i.modified for i in splist.items.values()), default=splist.modified)
    return {
        "@odata.etag": f'"{splist.id},{len(splist.items)}"',
        "id": splist.id,
        "createdDateTime": iso(splist.created),
        "lastModifiedDateTime": iso(last),
        "name": splist.name,
        "displayName": splist.display_name,
        "description": splist.description,
        "webUrl": f"{site.web_url}/Lists/{splist.name.replace(' ', '%20')}"
        if splist.drive_id is None
        else f"{site.web_url}/{splist.name.replace(' ', '%20')}",
        "eTag": f'"{splist.id},{len(splist.items)}"',
        "createdBy": {"user": {"displayName": "System Account"}},
        "parentReference": {"siteId": site.id},
        "list": {
            "contentTypesEnabled": False,
            "hidden": splist.hidden,
            "template": splist.template,
        },
    }


def item_json(
    tenant: Tenant,
    site: Site,
    splist: SpList,
    item: ListItem,
    fields: dict[str, str] | None,
    select: list[str] | None = None,
) -> dict[str, Any]:
    """A listItem; ``fields`` holds the nested options of ``$expand=fields`` (None: not
    expanded). ``select`` applies to the item, never to the expanded fields."""
    etag = f'"{splist.id[:8]}-{item.id},{item.revision}"'
    out: dict[str, Any] = {
        "@odata.etag": etag,
        "createdDateTime": iso(item.created),
        "eTag": etag,
        "id": item.id,
        "lastModifiedDateTime": iso(item.modified),
        "webUrl": f"{site.web_url}/Lists/{splist.name.replace(' ', '%20')}"
        f"/DispForm.aspx?ID={item.id}",
        "createdBy": _identity(tenant, item.created_by),
        "lastModifiedBy": _identity(tenant, item.modified_by),
        "parentReference": {"id": splist.id, "siteId": site.id},
        "contentType": {
            "id": "0x0100" + splist.id.replace("-", "").upper()[:32],
            "name": "Document" if splist.drive_id else "Item",
        },
    }
    if item.deleted:
        out["deleted"] = {"state": "deleted"}
        out.pop("@odata.etag")
        return out
    out = apply_select(out, select)
    if fields is not None:
        values = {
            "@odata.etag": etag,
            "id": item.id,
            **item.fields,
            "Modified": iso(item.modified),
            "Created": iso(item.created),
            "ContentType": "Document" if splist.drive_id else "Item",
            "_UIVersionString": f"{item.revision}.0",
            "Attachments": False,
            "Edit": "",
            "LinkTitle": item.fields.get("Title", ""),
        }
        wanted = nested_select(fields)
        if wanted is not None:
            names = {w.lower() for w in wanted}
            values = {k: v for k, v in values.items() if k.startswith("@") or k.lower() in names}
        out["fields@odata.context"] = "fields/$entity"
        out["fields"] = values
    return out


def _fields_options(expand: str) -> dict[str, str] | None:
    return parse_expand(expand).get("fields")


def _expand_raw(req: Req) -> str:
    return req.query.get("$expand") or req.query.get("expand") or ""


def addressed_site(req: Req) -> tuple[Tenant, Site]:
    """The tenant and the site a ``/sites/{site}...`` path names."""
    tenant = tenant_of(req)
    return tenant, get_site(tenant, req.params["site"])


router = Router()


@router.add("GET", "/sites", "sharepoint")
def sites(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    search = req.query.get("search")
    values = [site_json(s) for s in tenant.sites.values() if not s.personal or search == "*"]
    if search and search != "*":
        values = [v for v in values if search.lower() in (v["displayName"] + v["name"]).lower()]
    return collection(req, engine, "sites", values, default=200)


@router.add("GET", "/sites/getAllSites", "sharepoint")
def all_sites(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    return collection(
        req, engine, "sites", [site_json(s) for s in tenant.sites.values()], default=200
    )


@router.add("GET", "/sites/{site}", "sharepoint")
def site(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    return json_resp(apply_select(site_json(get_site(tenant, req.params["site"])), req.select()))


@router.add("GET", "/sites/{site}/drive", "sharepoint")
def site_drive(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    return json_resp(drive_json(tenant, tenant.drives[s.drive_ids[0]]))


@router.add("GET", "/sites/{site}/drives", "sharepoint")
def site_drives(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    return collection(
        req,
        engine,
        "drives",
        [drive_json(tenant, tenant.drives[d]) for d in s.drive_ids if d in tenant.drives],
        default=200,
    )


@router.add("GET", "/sites/{site}/lists", "sharepoint")
def lists(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    return collection(
        req,
        engine,
        "lists",
        [apply_select(list_json(tenant, s, tenant.lists[i]), req.select()) for i in s.list_ids],
        default=200,
    )


@router.add("POST", "/sites/{site}/lists", "sharepoint")
def create_list(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    splist = new_list_from_json(tenant, s, req.json())
    return entity_resp(req, f"sites('{s.id}')/lists", list_json(tenant, s, splist), 201)


@router.add("GET", "/sites/{site}/lists/{list}", "sharepoint")
def get_list_route(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    splist = get_list(tenant, s, req.params["list"])
    return json_resp(apply_select(list_json(tenant, s, splist), req.select()))


@router.add("DELETE", "/sites/{site}/lists/{list}", "sharepoint")
def delete_list(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    ops.delete_list(tenant, s, get_list(tenant, s, req.params["list"]))
    return Resp(204)


@router.add("GET", "/sites/{site}/lists/{list}/drive", "sharepoint")
def list_drive(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    splist = get_list(tenant, s, req.params["list"])
    drive = tenant.drives.get(splist.drive_id or "")
    if drive is None:
        raise GraphError(404, "itemNotFound", "The resource could not be found.")
    body = apply_select(drive_json(tenant, drive), req.select())
    return entity_resp(req, "drives", body)


@router.add("GET", "/sites/{site}/lists/{list}/columns", "sharepoint")
def columns(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    splist = get_list(tenant, s, req.params["list"])
    values = [
        {
            "id": f"{splist.id[:8]}-col-{n}",
            "columnGroup": "Custom Columns",
            "description": "",
            "enforceUniqueValues": False,
            "hidden": False,
            "indexed": False,
            "readOnly": False,
            "required": c["name"] == "Title",
            **c,
        }
        for n, c in enumerate(splist.columns)
    ]
    return collection(req, engine, "columns", values, default=200)


@router.add("GET", "/sites/{site}/lists/{list}/contentTypes", "sharepoint")
def content_types(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    splist = get_list(tenant, s, req.params["list"])
    name = "Document" if splist.drive_id else "Item"
    return collection(
        req,
        engine,
        "contentTypes",
        [
            {
                "id": "0x0100" + splist.id.replace("-", "").upper()[:32],
                "name": name,
                "hidden": False,
                "group": "List Content Types",
                "description": f"Create a new {name.lower()}.",
                "readOnly": False,
                "sealed": False,
            }
        ],
    )


@router.add("GET", "/sites/{site}/lists/{list}/items", "sharepoint")
def items(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    splist = get_list(tenant, s, req.params["list"])
    fields = _fields_options(_expand_raw(req))
    live = [i for i in sorted(splist.items.values(), key=lambda i: int(i.id)) if not i.deleted]
    return collection(
        req,
        engine,
        "listItems",
        live,
        default=200,
        maximum=5000,
        render=lambda i: item_json(tenant, s, splist, i, fields, req.select()),
    )


@router.add("GET", "/sites/{site}/lists/{list}/items/delta", "sharepoint")
def items_delta(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    splist = get_list(tenant, s, req.params["list"])
    path = f"/sites/{s.id}/lists/{splist.id}/items/delta"
    token = req.query.get("token") or req.query.get("$deltatoken") or req.query.get("$skiptoken")
    state = read_delta_token(
        req,
        engine,
        collection=f"list:{splist.id}",
        owner=splist.id,
        style="onedrive",
        path=path,
        # The links carry the query ($expand=fields with its own $select, $select).
        query={"expand": _expand_raw(req), "select": req.query.get("$select", "")},
        default_size=200,
        max_size=1000,
        token=None if token == LATEST_TOKEN else token,
    )
    if token == LATEST_TOKEN:
        state.since = state.upto
    if state.query.get("fields"):  # links issued before the query kept $expand's options
        state.query = {"expand": "fields", "select": ""}
    fields = _fields_options(str(state.query.get("expand") or ""))
    select = [p for p in str(state.query.get("select") or "").split(",") if p] or None
    live = ((i.seq, i.id, i) for i in splist.items.values() if not i.deleted)
    removed = ((i.seq, i.id, i) for i in splist.items.values() if i.deleted)
    page, more = ([], False) if token == LATEST_TOKEN else delta_page(state, live, removed)
    values = [item_json(tenant, s, splist, obj, fields, select) for _s, _i, obj, _g in page]
    return delta_resp(req, engine, state, page, more, entity="listItem", values=values)


@router.add("GET", "/sites/{site}/lists/{list}/items/{item}", "sharepoint")
def get_item(engine: Engine, req: Req) -> Resp:
    tenant, s, splist, item = addressed_list_item(req)
    return json_resp(
        item_json(tenant, s, splist, item, _fields_options(_expand_raw(req)), req.select())
    )


@router.add("POST", "/sites/{site}/lists/{list}/items", "sharepoint")
def create_item(engine: Engine, req: Req) -> Resp:
    tenant, s = addressed_site(req)
    splist = get_list(tenant, s, req.params["list"])
    if splist.drive_id:
        raise GraphError(400, "invalidRequest", "Files must be uploaded through the drive.")
    fields = req.json().get("fields")
    if not isinstance(fields, dict):
        raise GraphError(400, "invalidRequest", "A fields object is required.")
    _check_fields(splist, fields)
    item = ops.new_list_item(tenant, splist, fields, "")
    return json_resp(item_json(tenant, s, splist, item, {}), 201)


@router.add("PATCH", "/sites/{site}/lists/{list}/items/{item}/fields", "sharepoint")
def patch_fields(engine: Engine, req: Req) -> Resp:
    tenant, s, splist, item = addressed_list_item(req)
    fields = req.json()
    _check_fields(splist, fields)
    item.fields.update(fields)
    ops.touch_list_item(tenant, item, "")
    return json_resp(item_json(tenant, s, splist, item, {})["fields"])


@router.add("DELETE", "/sites/{site}/lists/{list}/items/{item}", "sharepoint")
def delete_item(engine: Engine, req: Req) -> Resp:
    tenant, _site, _list, item = addressed_list_item(req)
    ops.delete_list_item(tenant, item)
    return Resp(204)


# SPListTemplateType names (camel-cased, as listInfo.template gives them) a list can be
# created from; system lists (sharingLinks, accessRequest, ...) cannot.
CREATABLE_TEMPLATES = {
    "genericList",
    "documentLibrary",
    "survey",
    "links",
    "announcements",
    "contacts",
    "events",
    "tasks",
    "discussionBoard",
    "pictureLibrary",
    "xmlForm",
    "webPageLibrary",
    "ganttTasks",
    "issueTracking",
    "customGrid",
    "promotedLinks",
    "tasksWithTimelineAndHierarchy",
    "assetLibrary",
}
LIBRARY_TEMPLATES = {
    "documentLibrary",
    "pictureLibrary",
    "xmlForm",
    "webPageLibrary",
    "assetLibrary",
}
COLUMN_TYPES = (
    "boolean",
    "calculated",
    "choice",
    "currency",
    "dateTime",
    "geolocation",
    "hyperlinkOrPicture",
    "lookup",
    "number",
    "personOrGroup",
    "contentApprovalStatus",
    "term",
    "text",
    "thumbnail",
)
_COLUMN_PROPS = (
    "description",
    "required",
    "hidden",
    "indexed",
    "readOnly",
    "enforceUniqueValues",
    "columnGroup",
    "defaultValue",
    "validation",
)
NOT_ACCEPTABLE = "One of the provided arguments is not acceptable."
DUPLICATE_TITLE = (
    "A list, survey, discussion board, or document library with the specified title already "
    "exists in this Web site.  Please choose another title."
)


def new_list_from_json(tenant: Tenant, site: Site, body: dict[str, Any]) -> SpList:
    """``POST /sites/{s}/lists``: a list from its template plus the columns given.

    The server names the list (its URL segment) from displayName; a document library also
    gets its drive, reachable at ``/lists/{id}/drive`` (the create answer does not hold it).
    """
    if "name" in body:
        raise GraphError(
            400,
            "invalidRequest",
            "Cannot define a 'name' for a list as it is assigned by the server. Instead, "
            "provide 'displayName'",
        )
    display = body.get("displayName")
    if not isinstance(display, str) or not display.strip():
        raise GraphError(400, "invalidRequest", "The displayName property is required.")
    display = display.strip()
    info = body.get("list")
    if info is not None and not isinstance(info, dict):
        raise GraphError(400, "invalidRequest", NOT_ACCEPTABLE)
    template = str((info or {}).get("template") or "genericList")
    if template not in CREATABLE_TEMPLATES:
        raise GraphError(400, "invalidRequest", NOT_ACCEPTABLE)
    existing = [tenant.lists[i] for i in site.list_ids if i in tenant.lists]
    if any(lst.display_name.lower() == display.lower() for lst in existing):
        raise GraphError(409, "nameAlreadyExists", DUPLICATE_TITLE)
    columns: list[dict[str, Any]] = [{"name": "Title", "displayName": "Title", "text": {}}]
    raw_columns = body.get("columns") or []
    if not isinstance(raw_columns, list):
        raise GraphError(400, "invalidRequest", NOT_ACCEPTABLE)
    for raw in raw_columns:
        columns.append(_column_from_json(raw, columns))
    name = _url_name(display, {lst.name.lower() for lst in existing})
    return ops.add_list(
        tenant,
        site,
        name,
        display,
        template,
        columns=columns,
        description=str(body.get("description") or ""),
        library=template in LIBRARY_TEMPLATES,
    )


def _column_from_json(raw: Any, columns: list[dict[str, Any]]) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise GraphError(400, "invalidRequest", NOT_ACCEPTABLE)
    name = raw["name"]
    if any(c["name"].lower() == name.lower() for c in columns):
        raise GraphError(400, "invalidRequest", f'A duplicate field name "{name}" was found.')
    facets = [t for t in COLUMN_TYPES if t in raw]
    if len(facets) > 1:
        raise GraphError(400, "invalidRequest", NOT_ACCEPTABLE)
    column: dict[str, Any] = {"name": name, "displayName": str(raw.get("displayName") or name)}
    column.update({k: raw[k] for k in _COLUMN_PROPS if k in raw})
    kind = facets[0] if facets else "text"
    facet = raw.get(kind) if facets else {}
    column[kind] = facet if isinstance(facet, dict) else {}
    return column


def _url_name(display: str, taken: set[str]) -> str:
    """The URL segment SharePoint derives from a title: reserved characters dropped and a
    number appended while the name is taken."""
    base = "".join(c for c in display if c not in '~"#%&*:<>?/\\{|}').strip(" .") or "List"
    name, n = base, 1
    while name.lower() in taken:
        name, n = f"{base}{n}", n + 1
    return name


def _check_fields(splist: SpList, fields: dict[str, Any]) -> None:
    known = {c["name"] for c in splist.columns}
    for name in fields:
        if name not in known and not name.startswith("@"):
            raise GraphError(400, "invalidRequest", f"Field '{name}' is not recognized")
