"""For every route: anonymous (401), wrong scope (403), another MSP's ids (404), unknown ids
(404), and a tenant-limited key reaching outside its tenants (404).

None of these requests may change anything, so one world serves the whole module; that
each really changed nothing is checked at the end (test_nothing_changed)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from safekeep.api.app import create_app
from tests.api.conftest import World
from tests.api.routes import PUBLIC, ROUTES, WRONG_SCOPE, Route, fill

PROBLEM = "application/problem+json"
WITH_IDS = [r for r in ROUTES if r.ids]  # the routes that name a resource by its id


def assert_problem(r: httpx.Response, *statuses: int) -> None:
    """Refused with one of ``statuses`` and a problem+json body, as every refusal is."""
    assert r.status_code in statuses, r.text
    assert r.headers["content-type"] == PROBLEM


def each_of(routes: list[Route]) -> pytest.MarkDecorator:
    """Run the test once per route, named by its method and path."""
    return pytest.mark.parametrize("route", routes, ids=lambda r: f"{r.method} {r.path}")


async def call(
    client: httpx.AsyncClient, route: Route, ids: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    return await client.request(
        route.method,
        route.url(ids),
        params=route.query,
        json=fill(route.body, ids) if route.body is not None else None,
        headers=headers,
    )


def test_every_route_listed() -> None:
    paths = create_app().openapi()["paths"]
    served = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    listed = {(r.method, r.path) for r in ROUTES} | PUBLIC
    assert served == listed, f"unlisted: {served - listed}; stale: {listed - served}"


@each_of(ROUTES)
async def test_anonymous_is_401(
    module_client: httpx.AsyncClient, module_world: World, route: Route
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer sk_not_a_real_key"},
        {"Authorization": "Basic eA=="},
    ):
        r = await call(module_client, route, module_world.a.ids(), headers)
        assert_problem(r, 401)
        assert r.json()["type"].endswith("/unauthorized")


@each_of(ROUTES)
async def test_wrong_scope_is_403(
    module_client: httpx.AsyncClient, module_world: World, route: Route
) -> None:
    headers = await module_world.key([WRONG_SCOPE[route.scope]])
    r = await call(module_client, route, module_world.a.ids(), headers)
    assert_problem(r, 403)


@each_of(WITH_IDS)
async def test_other_msps_ids_are_404(
    module_client: httpx.AsyncClient, module_world: World, route: Route
) -> None:
    """MSP A's admin key with MSP B's ids: nothing of B exists for A."""
    r = await call(module_client, route, module_world.b.ids(), module_world.a.msp.headers)
    assert_problem(r, 404)


@each_of(WITH_IDS)
async def test_another_msps_ids_answer_as_ids_that_exist_nowhere(
    module_client: httpx.AsyncClient, module_world: World, route: Route
) -> None:
    """Not only the status: the whole refusal of MSP B's ids is the one of ids that exist
    nowhere, so no answer tells A that B's tenant or account exists (the purge route
    looked the tenant up unscoped first: "No such account" for B's, "No such tenant" for
    none)."""
    theirs = await call(module_client, route, module_world.b.ids(), module_world.a.msp.headers)
    ids = {k: str(uuid.uuid4()) for k in module_world.a.ids()}
    nowhere = await call(module_client, route, ids, module_world.a.msp.headers)
    assert (theirs.status_code, theirs.json()["detail"]) == (
        nowhere.status_code,
        nowhere.json()["detail"],
    )


@each_of(WITH_IDS)
async def test_unknown_ids_are_404(
    module_client: httpx.AsyncClient, module_world: World, route: Route
) -> None:
    ids = {k: str(uuid.uuid4()) for k in module_world.a.ids()}
    r = await call(module_client, route, ids, module_world.a.msp.headers)
    assert_problem(r, 404, 422)  # 422 where the body names an unknown account


@each_of([r for r in WITH_IDS if {"tenant_id", "job_id", "export_id"} & set(r.ids)])
async def test_tenant_limited_key_sees_only_its_tenants(
    module_client: httpx.AsyncClient, module_world: World, route: Route
) -> None:
    """A key limited to tenant A1 (a client portal's) gets 404 for A's other tenant."""
    headers = await module_world.key(["admin"], tenant_ids=[module_world.a.tenant.id])
    ids = {**module_world.a.ids(), "tenant_id": str(module_world.a.other_tenant.id)}
    if "job_id" in route.ids or "export_id" in route.ids:
        ids = module_world.a.ids()  # jobs and exports of A1 are visible...
        headers = await module_world.key(
            ["admin"], tenant_ids=[module_world.a.other_tenant.id]
        )  # ...not to A2's key
    r = await call(module_client, route, ids, headers)
    assert r.status_code == 404, r.text


def _msp_wide() -> list[Route]:
    """The routes whose key must not be limited to some tenants (``KeyRequired(...,
    unlimited=True)``: webhooks, API keys and the like, which are the MSP's as a whole)."""
    from fastapi.routing import APIRoute

    from safekeep.api.auth import KeyRequired

    def needs_whole_msp(dependant: Any) -> bool:
        call = dependant.call
        if isinstance(call, KeyRequired) and call.unlimited:
            return True
        return any(needs_whole_msp(d) for d in dependant.dependencies)

    wide: set[tuple[str, str]] = set()
    for route in create_app().routes:
        contexts = getattr(route, "effective_route_contexts", None)
        for context in contexts() if contexts is not None else ():
            api_route = context.original_route
            if isinstance(api_route, APIRoute) and needs_whole_msp(api_route.dependant):
                wide |= {(method, context.path) for method in context.methods or ()}
    return [r for r in ROUTES if (r.method, r.path) in wide]


MSP_WIDE = _msp_wide()


def test_the_msp_wide_routes_are_found() -> None:
    paths = {(r.method, r.path) for r in MSP_WIDE}
    assert {
        ("POST", "/v1/webhooks/{webhook_id}/ping"),
        ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"),
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/tenants"),  # a new client is the MSP's, not a portal's
    } <= paths, paths


@each_of(MSP_WIDE)
async def test_a_key_limited_to_some_tenants_is_refused_what_is_the_whole_msps(
    module_client: httpx.AsyncClient, module_world: World, route: Route
) -> None:
    """An admin key a client portal holds (limited to its tenants) cannot manage or read
    what belongs to the MSP as a whole: 403, nothing done."""
    headers = await module_world.key(["admin"], tenant_ids=[module_world.a.tenant.id])
    r = await call(module_client, route, module_world.a.ids(), headers)
    assert_problem(r, 403)


@each_of([r for r in ROUTES if r.body is not None])
async def test_a_field_the_body_does_not_name_is_422(
    module_client: httpx.AsyncClient, module_world: World, route: Route
) -> None:
    """A valid body with one field more (a misspelling, a field of another route): refused by
    name, with the key that could do the rest, and nothing done (test_nothing_changed)."""
    ids = module_world.a.ids()
    body = {**fill(route.body, ids), "evnets": ["export.ready"]}
    r = await module_client.request(
        route.method,
        route.url(ids),
        params=route.query,
        json=body,
        headers=module_world.a.msp.headers,
    )
    assert_problem(r, 422)
    assert [e["loc"] for e in r.json()["errors"]] == [["body", "evnets"]], r.text


async def test_nothing_changed(module_world: World) -> None:
    """Runs last: none of the refused requests above wrote anything (keys made by the
    world.key helper are the only new rows)."""
    from tests.api.conftest import fingerprint

    after = await fingerprint(module_world.runtime)
    before = module_world.before
    assert before is not None
    assert after.tenants == before.tenants
    added = {n: c - before.counts[n] for n, c in after.counts.items() if c != before.counts[n]}
    assert set(added) <= {"api_key"}, added
    revoked = dict(after.keys)
    assert all(revoked[k] == v for k, v in before.keys)
