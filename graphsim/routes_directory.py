"""Users, licences and the organisation: what discovery during onboarding reads."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from graphsim.core import (
    DIRECTORY_MAX_TOP,
    Engine,
    FilterParser,
    check_directory_paging,
    collection,
    entity_resp,
    order_keys,
    ordered,
    tenant_of,
    user_of,
)
from graphsim.http import GraphError, Req, Resp, Router
from graphsim.state import Tenant, User, iso

DEFAULT_USER_FIELDS = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)


def user_json(tenant: Tenant, user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "businessPhones": [],
        "displayName": user.display_name,
        "givenName": user.given_name,
        "jobTitle": user.job_title,
        "mail": user.upn if user.mailbox_enabled or user.licenses else None,
        "mobilePhone": user.mobile_phone,
        "officeLocation": user.office_location,
        "preferredLanguage": user.preferred_language,
        "surname": user.surname,
        "userPrincipalName": user.upn,
        "accountEnabled": user.account_enabled,
        "assignedLicenses": [{"disabledPlans": [], "skuId": sku} for sku in user.licenses],
        "assignedPlans": [
            {
                "assignedDateTime": iso(user.created),
                "capabilityStatus": "Enabled",
                "service": plan["servicePlanName"].split("_")[0].lower(),
                "servicePlanId": plan["servicePlanId"],
            }
            for sku in user.licenses
            if sku in tenant.skus
            for plan in tenant.skus[sku].service_plans
        ],
        "userType": user.user_type,
        "createdDateTime": iso(user.created),
        "department": user.department,
        "usageLocation": user.usage_location,
        "mailNickname": user.upn.split("@")[0],
        "proxyAddresses": [f"SMTP:{user.upn}"] if user.licenses else [],
        "onPremisesSyncEnabled": None,
    }


def shape_user(tenant: Tenant, user: User, select: list[str] | None) -> dict[str, Any]:
    full = user_json(tenant, user)
    wanted = {s.lower() for s in (select or DEFAULT_USER_FIELDS)} | {"id"}
    return {k: v for k, v in full.items() if k.lower() in wanted}


ADVANCED_HINT = (
    "Try adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to "
    "https://aka.ms/graph-docs/advanced-queries for more information"
)
ORDERBY_DEFAULT = {"displayname", "userprincipalname"}
ORDERBY_ADVANCED = {"createddatetime"}
SEARCHABLE = {"displayname", "mail", "userprincipalname", "givenname", "surname", "mailnickname"}


def eventual(req: Req) -> bool:
    return req.headers.get("consistencylevel", "").lower() == "eventual"


def advanced(req: Req) -> bool:
    """Directory "advanced queries": ConsistencyLevel: eventual and $count=true together."""
    return eventual(req) and req.query.get("$count", "").lower() == "true"


def unsupported(message: str) -> GraphError:
    return GraphError(400, "Request_UnsupportedQuery", message)


def query_users(req: Req, tenant: Tenant, users: list[User]) -> list[User]:
    """``$filter``, ``$search`` and ``$orderby`` as the directory serves them: ``ne``,
    ``not``, ``endsWith``, ``/$count``, ``$filter`` with ``$orderby`` and sorting by
    createdDateTime only in advanced queries; ``$search`` only with ConsistencyLevel
    (aad-advanced-queries in the Graph docs)."""
    expression = req.query.get("$filter")
    order = order_keys(req.query.get("$orderby"))
    if expression and expression.strip():
        parser = FilterParser(expression)
        predicate = parser.parse()
        if parser.features and not advanced(req):
            feature = sorted(parser.features)[0]
            raise unsupported(
                f"Operator '{feature}' is not supported because the required parameters might "
                f"be missing. {ADVANCED_HINT}"
            )
        if order and not advanced(req):
            raise unsupported("Sorting not supported for current query.")
        users = [u for u in users if predicate(user_json(tenant, u))]
    search = req.query.get("$search")
    if search:
        if not eventual(req):
            raise unsupported(
                "Request with $search query parameter only works through MSGraph with a special "
                "request header: 'ConsistencyLevel: eventual'"
            )
        test = _user_search(search)
        users = [u for u in users if test(user_json(tenant, u))]
    for path, _ in order:
        name = "/".join(path).lower()
        if name in ORDERBY_ADVANCED and not advanced(req):
            raise unsupported("Sorting not supported for current query.")
        if name not in ORDERBY_DEFAULT | ORDERBY_ADVANCED:
            raise unsupported(f"Sorting by property '{'/'.join(path)}' is not supported.")
    return ordered(req, users, lambda u: user_json(tenant, u))


def _user_search(raw: str) -> Callable[[dict[str, Any]], bool]:
    """``"displayName:ali" OR "mail:ali@"``: displayName matches word starts (it is
    tokenised), the other properties match from their start."""
    groups: list[list[tuple[str, str]]] = [[]]
    for quoted, joiner, stray in re.findall(r'"([^"]*)"|\b(AND|OR)\b|(\S+)', raw):
        if stray:
            raise unsupported(f"Invalid $search query: {raw!r}.")
        if joiner == "OR":
            groups.append([])
        elif quoted:
            prop, colon, value = quoted.partition(":")
            if not colon or prop.lower() not in SEARCHABLE or not value:
                raise unsupported(f"Invalid $search query: {raw!r}.")
            groups[-1].append((prop.lower(), value.lower()))
    if not all(groups):
        raise unsupported(f"Invalid $search query: {raw!r}.")

    def matches(prop: str, value: str, fields: dict[str, str]) -> bool:
        text = fields.get(prop, "")
        if prop == "displayname":
            return any(w.startswith(value) for w in re.split(r"[\s\-_.]+", text))
        return text.startswith(value)

    def test(user: dict[str, Any]) -> bool:
        fields = {k.lower(): str(v or "").lower() for k, v in user.items()}
        return any(all(matches(p, v, fields) for p, v in group) for group in groups)

    return test


router = Router()


@router.add("GET", "/users", "directory")
def list_users(engine: Engine, req: Req) -> Resp:
    check_directory_paging(req)
    tenant = tenant_of(req)
    users = sorted(tenant.users.values(), key=lambda u: u.upn)
    users = query_users(req, tenant, users)
    values = [shape_user(tenant, u, req.select()) for u in users]
    # Without ConsistencyLevel the directory ignores $count=true (no @odata.count).
    return collection(
        req, engine, "users", values, default=100, maximum=DIRECTORY_MAX_TOP, count=advanced(req)
    )


@router.add("GET", "/users/$count", "directory")
def count_users(engine: Engine, req: Req) -> Resp:
    if not eventual(req):
        raise GraphError(400, "Request_BadRequest", "$count is not currently supported.")
    tenant = tenant_of(req)
    users = query_users(req, tenant, sorted(tenant.users.values(), key=lambda u: u.upn))
    return Resp(200, str(len(users)).encode(), {"Content-Type": "text/plain"})


@router.add("GET", "/users/{user}", "directory")
def get_user(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    user = user_of(req)
    body = shape_user(tenant, user, req.select())
    return entity_resp(req, "users", body)


@router.add("GET", "/users/{user}/mailboxSettings", "exchange")
def mailbox_settings(engine: Engine, req: Req) -> Resp:
    user = user_of(req)
    if not user.mailbox_enabled:
        raise GraphError(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    return Resp(
        200,
        {
            "@odata.context": f"{req.graph_base}/$metadata#users('{user.id}')/mailboxSettings",
            "archiveFolder": user.well_known.get("archive"),
            "timeZone": "UTC",
            "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
            "dateFormat": "dd.MM.yyyy",
            "timeFormat": "HH:mm",
            "userPurpose": "user",
            "language": {"locale": "en-US", "displayName": "English (United States)"},
            "automaticRepliesSetting": {"status": "disabled", "externalAudience": "all"},
            "workingHours": {
                "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "startTime": "08:00:00.0000000",
                "endTime": "17:00:00.0000000",
                "timeZone": {"name": "UTC"},
            },
        },
    )


@router.add("GET", "/subscribedSkus", "directory")
def subscribed_skus(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    values = []
    for sku in tenant.skus.values():
        consumed = sum(1 for u in tenant.users.values() if sku.sku_id in u.licenses)
        values.append(
            {
                "accountName": tenant.domain.split(".")[0],
                "accountId": tenant.id,
                "appliesTo": "User",
                "capabilityStatus": "Enabled",
                "consumedUnits": consumed,
                "id": f"{tenant.id}_{sku.sku_id}",
                "prepaidUnits": {
                    "enabled": max(sku.prepaid, consumed),
                    "suspended": 0,
                    "warning": 0,
                    "lockedOut": 0,
                },
                "servicePlans": [dict(p) for p in sku.service_plans],
                "skuId": sku.sku_id,
                "skuPartNumber": sku.part_number,
                "subscriptionIds": [],
            }
        )
    return collection(req, engine, "subscribedSkus", values, default=100, maximum=999)


@router.add("GET", "/organization", "directory")
def organization(engine: Engine, req: Req) -> Resp:
    tenant = tenant_of(req)
    return collection(
        req,
        engine,
        "organization",
        [
            {
                "id": tenant.id,
                "displayName": tenant.name,
                "tenantType": "AAD",
                "createdDateTime": iso(tenant.created),
                "countryLetterCode": "CH",
                "verifiedDomains": [
                    {
                        "capabilities": "Email, OfficeCommunicationsOnline",
                        "isDefault": True,
                        "isInitial": True,
                        "name": tenant.domain,
                        "type": "Managed",
                    }
                ],
            }
        ],
    )
