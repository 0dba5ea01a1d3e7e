"""Teams structure on Graph v1.0: groups that are teams, team settings, members, channels,
channel members, tabs, the files folder, and the import (migration) API's team and channel
side. Messages and chats are in ``routes_teams_messages``.

Handlers are module-level functions registered by ``register``; each passes Teams
throttling (``teams_throttle``) before it runs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from graphsim import teams as tm
from graphsim.core import (
    DIRECTORY_MAX_TOP,
    Engine,
    FilterParser,
    check_directory_paging,
    collection,
    entity_resp,
    tenant_of,
    user_of,
)
from graphsim.http import GraphError, Handler, Req, Resp, Router, selected
from graphsim.mail import parse_graph_datetime
from graphsim.state import Tenant, iso, utcnow
from graphsim.teams_json import channel_json, group_json, member_json, tab_json, team_json
from graphsim.teams_throttle import TeamsThrottler

MIGRATION = "migration"
KNOWN_APPS = {
    "com.microsoft.teamspace.tab.web": "Website",
    "com.microsoft.teamspace.tab.wiki": "Wiki",
    "com.microsoft.teamspace.tab.planner": "Tasks by Planner and To Do",
    "com.microsoft.teamspace.tab.files.sharepoint": "SharePoint",
    "0d820ecd-def2-4297-adad-78056cde7c78": "OneNote",
}


# -- plumbing --------------------------------------------------------------------------------


def throttler(engine: Engine) -> TeamsThrottler:
    found = engine.caches.get("teams_throttler")
    if found is None:
        found = engine.caches["teams_throttler"] = TeamsThrottler()
    assert isinstance(found, TeamsThrottler)
    return found


def limited(category: str, handler: Handler) -> Handler:
    """Teams throttling before the handler: by request type, and per team or channel."""

    def run(engine: Engine, req: Req) -> Resp:
        if engine.throttler.config.mode != "off":
            scope = req.params.get("channel") or req.params.get("team")
            try:
                throttler(engine).admit(req, category, scope)
            except GraphError:
                engine.throttler.counters.throttled += 1
                raise
        return handler(engine, req)

    run.__name__ = getattr(handler, "__name__", "teams_handler")
    return run


def not_found(what: str = "team") -> GraphError:
    return GraphError(404, "NotFound", f"No {what} found with the given id.")


def team_of(req: Req) -> tm.Team:
    tenant = tenant_of(req)
    team = tm.teamwork(tenant).teams.get(req.params.get("team", "") or req.params["group"])
    if team is None or team.deleted:
        raise not_found("team")
    return team


def channel_of(req: Req) -> tuple[tm.Team, tm.Channel]:
    team = team_of(req)
    channel = team.channels.get(req.params["channel"])
    if channel is None:
        raise not_found("channel")
    return team, channel


def bad(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def bound_user(tenant: Tenant, body: dict[str, Any]) -> str:
    """``user@odata.bind: ".../users('id')"`` (or ``userId``) -> a user id of the tenant."""
    bind = str(body.get("user@odata.bind") or "")
    found = re.search(r"users\('?([^')]+)'?\)", bind) or re.search(r"users/([^/?]+)$", bind)
    key = found.group(1) if found else str(body.get("userId") or "")
    user = tenant.user(key) if key else None
    if user is None:
        raise GraphError(404, "NotFound", f"User '{key}' was not found in the directory.")
    return user.id


def roles_of(body: dict[str, Any]) -> list[str]:
    roles = body.get("roles") or []
    if not isinstance(roles, list) or any(r not in ("owner", "guest") for r in roles):
        raise bad("roles must be a list of 'owner' or 'guest'.")
    return [str(r) for r in roles]


def when_of(body: dict[str, Any], key: str = "createdDateTime") -> datetime | None:
    value = body.get(key)
    if value is None:
        return None
    try:
        return parse_graph_datetime(str(value))
    except ValueError as exc:
        raise bad(f"Invalid {key} '{value}'.") from exc


def filtered_selected(req: Req, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``$filter`` then ``$select`` over rendered groups or channels (no ``$orderby`` here)."""
    expression = req.query.get("$filter")
    if expression:
        predicate = FilterParser(expression).parse()
        values = [v for v in values if predicate(v)]
    return [selected(v, req.select()) for v in values]


# -- groups ----------------------------------------------------------------------------------


def list_groups(engine: Engine, req: Req) -> Resp:
    check_directory_paging(req)
    tenant = tenant_of(req)
    values = [group_json(tenant, t) for t in tm.teamwork(tenant).listed()]
    values = filtered_selected(req, values)
    return collection(req, engine, "groups", values, default=100, maximum=DIRECTORY_MAX_TOP)


def get_group(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    body = selected(group_json(tenant, team_of(req)), req.select())
    return entity_resp(req, "groups", body)


def group_owners(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    team = team_of(req)
    values = [
        {
            "@odata.type": "#microsoft.graph.user",
            "id": uid,
            "displayName": tenant.users[uid].display_name,
            "userPrincipalName": tenant.users[uid].upn,
        }
        for uid, roles in team.members.items()
        if "owner" in roles and uid in tenant.users
    ]
    return collection(req, engine, "directoryObjects", values, default=100, maximum=999)


# -- teams -----------------------------------------------------------------------------------


def list_teams(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    values = [selected(team_json(tenant, t), req.select()) for t in tm.teamwork(tenant).listed()]
    return collection(req, engine, "teams", values, default=100, maximum=100)


def joined_teams(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    user = user_of(req)
    values = [
        selected(team_json(tenant, t), req.select())
        for t in tm.teamwork(tenant).teams.values()
        if not t.deleted and user.id in t.members
    ]
    return collection(req, engine, "teams", values, default=100, maximum=100)


def get_team(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    body = selected(team_json(tenant, team_of(req)), req.select())
    return entity_resp(req, "teams", body)


def patch_team(engine: Engine, req: Req) -> Resp:
    team = team_of(req)
    body = req.json()
    allowed = {*tm.SETTING_GROUPS, "displayName", "description", "visibility"}
    unknown = sorted(set(body) - allowed - {"@odata.type"})
    if unknown:
        raise bad(f"Property '{unknown[0]}' cannot be updated on a team.")
    for group in tm.SETTING_GROUPS:
        values = body.get(group)
        if values is None:
            continue
        if not isinstance(values, dict) or set(values) - set(team.settings[group]):
            raise bad(f"Invalid {group}.")
        team.settings[group].update(values)
    team.display_name = str(body.get("displayName", team.display_name))
    team.description = str(body.get("description", team.description))
    team.seq = tenant_of(req).next_seq()
    return Resp(204)


def create_team(engine: Engine, req: Req) -> Resp:
    """``POST /teams``: 202 with the async operation in ``Location``. In migration mode the
    team keeps its given ``createdDateTime`` and needs no members until completion; else an
    application must name one owner among ``members``."""
    tenant = tenant_of(req)
    body = req.json()
    name = str(body.get("displayName") or "").strip()
    if not name:
        raise bad("displayName is required to create a team.")
    migration = body.get("@microsoft.graph.teamCreationMode") == MIGRATION
    created = when_of(body)
    if created is not None and not migration:
        raise bad("createdDateTime can be set only in migration mode.")
    owners: list[str] = []
    members: list[str] = []
    for entry in body.get("members") or []:
        uid = bound_user(tenant, entry)
        (owners if "owner" in roles_of(entry) else members).append(uid)
    if not migration and not owners:
        raise bad("An application creating a team must name one owner in 'members'.")
    team = tm.new_team(
        tenant,
        name,
        owners=owners,
        members=members,
        description=str(body.get("description") or ""),
        visibility=str(body.get("visibility") or "private").lower(),
        when=created,
        migration=migration,
    )
    for group in tm.SETTING_GROUPS:
        if isinstance(body.get(group), dict):
            team.settings[group].update(body[group])
    op_id = str(uuid.uuid4())
    tm.teamwork(tenant).operations[op_id] = {
        "id": op_id,
        "operationType": "createTeam",
        "createdDateTime": iso(utcnow()),
        "status": "succeeded",
        "lastActionDateTime": iso(utcnow()),
        "attemptsCount": 1,
        "targetResourceId": team.id,
        "targetResourceLocation": f"/teams('{team.id}')",
        "error": None,
    }
    headers = {
        "Location": f"/teams('{team.id}')/operations('{op_id}')",
        "Content-Location": f"/teams('{team.id}')",
    }
    return Resp(202, None, headers)


def get_operation(engine: Engine, req: Req) -> Resp:
    team = team_of(req)
    op = tm.teamwork(tenant_of(req)).operations.get(req.params["operation"])
    if op is None or op["targetResourceId"] != team.id:
        raise not_found("operation")
    return Resp(200, dict(op))


def complete_team_migration(engine: Engine, req: Req) -> Resp:
    team = team_of(req)
    if team.migration != "inProgress":
        raise bad("The team is not in migration mode.")
    open_channels = [c.display_name for c in team.channels.values() if c.migration == "inProgress"]
    if open_channels:
        raise bad(f"Complete the migration of channel '{open_channels[0]}' first.")
    team.migration = "completed"
    return Resp(204)


# -- members ---------------------------------------------------------------------------------


def list_team_members(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    team = team_of(req)
    values = [
        selected(member_json(tenant, team.id, uid, roles), req.select())
        for uid, roles in team.members.items()
    ]
    return collection(req, engine, "teams('x')/members", values, default=100, maximum=999)


def add_team_member(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    team = team_of(req)
    if team.migration == "inProgress":
        raise bad("Members cannot be added to a team in migration mode.")
    body = req.json()
    uid = bound_user(tenant, body)
    team.members[uid] = roles_of(body)
    team.seq = tenant.next_seq()
    return Resp(201, member_json(tenant, team.id, uid, team.members[uid]))


def channel_members_of(team: tm.Team, channel: tm.Channel) -> dict[str, list[str]]:
    """A standard channel's members are the team's; private and shared keep their own."""
    return team.members if channel.membership_type == "standard" else channel.members


def list_channel_members(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    team, channel = channel_of(req)
    values = [
        selected(member_json(tenant, channel.id, uid, roles), req.select())
        for uid, roles in channel_members_of(team, channel).items()
    ]
    return collection(req, engine, "channels('x')/members", values, default=100, maximum=999)


def add_channel_member(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    team, channel = channel_of(req)
    if channel.membership_type == "standard":
        raise bad("Members of a standard channel are the team's members.")
    if channel.migration == "inProgress":
        raise bad("Members cannot be added to a channel in migration mode.")
    body = req.json()
    uid = bound_user(tenant, body)
    if uid not in team.members and channel.membership_type == "private":
        raise bad("A private channel's members must be members of the team.")
    channel.members[uid] = roles_of(body)
    channel.seq = tenant.next_seq()
    return Resp(201, member_json(tenant, channel.id, uid, channel.members[uid]))


# -- channels --------------------------------------------------------------------------------


def list_channels(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    team = team_of(req)
    values = [channel_json(tenant, team, c) for c in team.channels.values()]
    values = filtered_selected(req, values)
    return collection(req, engine, "teams('x')/channels", values, default=100, maximum=999)


def get_channel(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    team, channel = channel_of(req)
    body = selected(channel_json(tenant, team, channel), req.select())
    return entity_resp(req, "channels", body)


def create_channel(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    team = team_of(req)
    body = req.json()
    name = str(body.get("displayName") or "").strip()
    if not name or len(name) > 50 or re.search(r'[~#%&*{}+/\\:<>?|\'"]', name):
        raise bad("displayName is required, at most 50 characters, without ~#%&*{}+/\\:<>?|'\".")
    if any(c.display_name.lower() == name.lower() for c in team.channels.values()):
        raise GraphError(409, "NameAlreadyExists", "Channel name already existed.")
    kind = str(body.get("membershipType") or "standard")
    if kind not in ("standard", "private", "shared"):
        raise bad(f"Unknown membershipType '{kind}'.")
    migration = body.get("@microsoft.graph.channelCreationMode") == MIGRATION
    created = when_of(body)
    if created is not None and not migration:
        raise bad("createdDateTime can be set only in migration mode.")
    members: dict[str, list[str]] = {}
    for entry in body.get("members") or []:
        members[bound_user(tenant, entry)] = roles_of(entry)
    if kind != "standard" and not migration and not any("owner" in r for r in members.values()):
        raise bad(f"A {kind} channel created by an application needs one owner in 'members'.")
    channel = tm.new_channel(
        tenant,
        team,
        name,
        description=str(body.get("description") or ""),
        membership_type=kind,
        members=members,
        when=created,
        migration=migration,
    )
    return entity_resp(req, "channels", channel_json(tenant, team, channel), 201)


def patch_channel(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    _, channel = channel_of(req)
    body = req.json()
    if set(body) - {"displayName", "description", "@odata.type"}:
        raise bad("Only displayName and description of a channel can be updated.")
    if "displayName" in body and channel.is_general:
        raise bad("The General channel cannot be renamed.")
    channel.display_name = str(body.get("displayName", channel.display_name))
    channel.description = str(body.get("description", channel.description))
    channel.seq = tenant.next_seq()
    return Resp(204)


def delete_channel(engine: Engine, req: Req) -> Resp:
    team, channel = channel_of(req)
    if channel.is_general:
        raise bad("The General channel cannot be deleted.")
    tm.delete_channel(tenant_of(req), team, channel)
    return Resp(204)


def complete_channel_migration(engine: Engine, req: Req) -> Resp:
    _, channel = channel_of(req)
    if channel.migration != "inProgress":
        raise bad("The channel is not in migration mode.")
    channel.migration = "completed"
    channel.seq = tenant_of(req).next_seq()
    return Resp(204)


def files_folder(engine: Engine, req: Req) -> Resp:
    """The channel's folder in the team site's library (made on first use, as Teams does)."""
    from graphsim import ops
    from graphsim.routes_drive import item_json

    tenant = tenant_of(req)
    team, channel = channel_of(req)
    site = tenant.sites.get(team.site_id or "")
    if site is None or not site.drive_ids:
        raise not_found("files folder")
    drive = tenant.drives[site.drive_ids[0]]
    owner = next(iter(team.members), "")
    folder = ops.drive_folder_path(tenant, drive, channel.display_name, owner)
    return Resp(200, item_json(engine, tenant, drive, folder))


# -- tabs ------------------------------------------------------------------------------------


def list_tabs(engine: Engine, req: Req) -> Resp:
    _, channel = channel_of(req)
    expand = "teamsapp" in {e.lower() for e in req.expand()}
    values = [selected(tab_json(t, expand), req.select()) for t in channel.tabs.values()]
    return collection(req, engine, "teamsTabs", values, default=100, maximum=999)


def create_tab(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    _, channel = channel_of(req)
    body = req.json()
    bind = str(body.get("teamsApp@odata.bind") or "")
    found = re.search(r"teamsApps/([^/?]+)$", bind)
    name = str(body.get("displayName") or "").strip()
    if not found or not name:
        raise bad("A tab needs displayName and teamsApp@odata.bind.")
    app_id = found.group(1).strip("'()")
    config = body.get("configuration") or {}
    tab = new_tab(tenant, channel, name, app_id, config if isinstance(config, dict) else {})
    return Resp(201, tab_json(tab, False))


def new_tab(
    tenant: Tenant, channel: tm.Channel, name: str, app_id: str, config: dict[str, Any]
) -> dict[str, Any]:
    tab_id = str(uuid.UUID(bytes=uuid.uuid4().bytes, version=4))
    tab = {
        "id": tab_id,
        "displayName": name,
        "webUrl": f"https://teams.microsoft.com/l/entity/{app_id}/_djb2_msteams_prefix_{tab_id}",
        "configuration": {
            "entityId": config.get("entityId"),
            "contentUrl": config.get("contentUrl"),
            "removeUrl": config.get("removeUrl"),
            "websiteUrl": config.get("websiteUrl"),
        },
        "teamsApp": {
            "id": app_id,
            "externalId": None,
            "displayName": KNOWN_APPS.get(app_id, app_id),
            "distributionMethod": "store",
        },
    }
    channel.tabs[tab_id] = tab
    channel.seq = tenant.next_seq()
    return tab


# -- registration ----------------------------------------------------------------------------

ROUTES: list[tuple[str, str, str, Callable[[Engine, Req], Resp]]] = [
    ("GET", "/groups", "other_get", list_groups),
    ("GET", "/groups/{group}", "other_get", get_group),
    ("GET", "/groups/{group}/owners", "other_get", group_owners),
    ("GET", "/teams", "get_entity", list_teams),
    ("POST", "/teams", "post_teams", create_team),
    ("GET", "/users/{user}/joinedTeams", "get_entity", joined_teams),
    ("GET", "/teams/{team}", "get_entity", get_team),
    ("PATCH", "/teams/{team}", "write_entity", patch_team),
    ("GET", "/teams/{team}/operations/{operation}", "other_get", get_operation),
    ("POST", "/teams/{team}/completeMigration", "other", complete_team_migration),
    ("GET", "/teams/{team}/members", "get_members", list_team_members),
    ("POST", "/teams/{team}/members", "other", add_team_member),
    ("GET", "/teams/{team}/channels", "get_members", list_channels),
    ("POST", "/teams/{team}/channels", "write_entity", create_channel),
    ("GET", "/teams/{team}/channels/{channel}", "get_entity", get_channel),
    ("PATCH", "/teams/{team}/channels/{channel}", "write_entity", patch_channel),
    ("DELETE", "/teams/{team}/channels/{channel}", "delete_entity", delete_channel),
    (
        "POST",
        "/teams/{team}/channels/{channel}/completeMigration",
        "other",
        complete_channel_migration,
    ),
    ("GET", "/teams/{team}/channels/{channel}/filesFolder", "other_get", files_folder),
    ("GET", "/teams/{team}/channels/{channel}/members", "get_members", list_channel_members),
    ("POST", "/teams/{team}/channels/{channel}/members", "other", add_channel_member),
    ("GET", "/teams/{team}/channels/{channel}/tabs", "get_entity", list_tabs),
    ("POST", "/teams/{team}/channels/{channel}/tabs", "write_entity", create_tab),
]


def _teams_router() -> Router:
    from graphsim import routes_teams_messages

    built = Router()
    for method, template, category, handler in ROUTES + routes_teams_messages.ROUTES:
        built.add(method, template, "teams")(limited(category, handler))
    return built


router = _teams_router()
