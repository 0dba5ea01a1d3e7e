"""Users, licences and the organisation: what discovery during onboarding reads."""

from __future__ import annotations

from typing import Any

from graphsim.core import Engine, collection, odata_filter, ordered, tenant_of, user_of
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


def _filter(users: list[User], tenant: Tenant, expression: str | None) -> list[User]:
    if not expression:
        return users
    if "assignedlicenses/$count" in expression.lower().replace(" ", ""):
        return [u for u in users if u.licenses]
    predicate = odata_filter(expression)
    assert predicate is not None
    return [u for u in users if predicate(user_json(tenant, u))]


def register(router: Router) -> None:
    @router.add("GET", "/users", "directory")
    def list_users(engine: Engine, req: Req) -> Resp:
        tenant = tenant_of(req)
        users = sorted(tenant.users.values(), key=lambda u: u.upn)
        users = ordered(
            req, _filter(users, tenant, req.query.get("$filter")), lambda u: user_json(tenant, u)
        )
        values = [shape_user(tenant, u, req.select()) for u in users]
        return collection(req, engine, "users", values, default=100, maximum=999)

    @router.add("GET", "/users/{user}", "directory")
    def get_user(engine: Engine, req: Req) -> Resp:
        tenant = tenant_of(req)
        user = user_of(req)
        body = shape_user(tenant, user, req.select())
        return Resp(200, {"@odata.context": f"{req.graph_base}/$metadata#users/$entity", **body})

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
