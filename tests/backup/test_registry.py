"""The service registry (safekeep/registry.py): the declarations agree with the code they stand
for, everything that lists services derives from them, and a sixth service declared in a test
(tests/backup/profile_service.py, the worked example of docs/adding-a-service.md) is picked up
by discovery, backup, browse, search, export, restore, and the API's enums and policy schema."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, get_args

import pytest

from safekeep import registry
from safekeep.api.policy.schemas import PolicyIn, described
from safekeep.api.policy.schemas import Service as ApiService
from safekeep.backup import browse
from safekeep.backup.catalog import SearchFields
from safekeep.backup.selection import Scope, resolve_units
from safekeep.backup.services import module_for
from safekeep.backup.services.base import folder_service
from safekeep.graph import client as graph_client
from safekeep.graph.targets import scope_of
from safekeep.search.documents import SearchDocument
from safekeep.tenants.models import Account, AccountKind, Policy
from tests.backup import profile_service
from tests.backup.harness import EngineHarness
from tests.fixtures.source import parse

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = ("mail", "calendar", "contacts", "onedrive", "sharepoint", "teams")


# ---- the declarations --------------------------------------------------------------------


def test_the_six_services_are_declared_in_order() -> None:
    assert registry.names() == BUILTIN
    assert registry.of_kind("user") == ("mail", "calendar", "contacts", "onedrive", "teams")
    assert registry.of_kind("site") == ("sharepoint",)
    assert {spec.kind for spec in registry.specs()} <= {k.value for k in AccountKind}
    # Teams was added after tenants existed: new policies leave it to the MSP to switch on.
    assert registry.defaults() == BUILTIN[:-1]
    with pytest.raises(KeyError):
        registry.get("yammer")
    with pytest.raises(KeyError):
        module_for("yammer")


def test_each_engine_module_implements_its_declared_service() -> None:
    for spec in registry.specs():
        service = module_for(spec.name)
        assert service.name == spec.name
        for hook in ("collect", "search_fields", "content", "restore", "export"):
            assert callable(getattr(service, hook)), (spec.name, hook)


def test_every_service_folder_has_the_same_files() -> None:
    services = ROOT / "safekeep" / "backup" / "services"
    same = {"__init__.py", "collect.py", "search.py", "render.py", "restore.py", "export.py"}
    folders = {p.name for p in services.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(BUILTIN)
    for name in folders:
        assert same <= {f.name for f in (services / name).glob("*.py")}, name


def test_a_folder_without_the_hooks_is_no_service() -> None:
    # drive/ is shared code, not a service: it has no search.py or render.py
    with pytest.raises((ModuleNotFoundError, AttributeError)):
        folder_service("safekeep.backup.drive", folder_kinds=frozenset())


def test_probes_resolve_and_gate_the_services_that_share_them() -> None:
    assert registry.probes("user") == {
        "mail": "safekeep.graph.directory:has_mailbox",
        "onedrive": "safekeep.graph.directory:has_drive",
        "teams": "safekeep.graph.directory:has_teams",
    }
    assert registry.probes("site") == {}
    for reference in registry.probes("user").values():
        assert inspect.iscoroutinefunction(registry.resolve(reference))
    # calendar and contacts live in the mailbox: no mailbox, none of the three
    assert {s: registry.found_key(s) for s in registry.of_kind("user")} == {
        "mail": "mail",
        "calendar": "mail",
        "contacts": "mail",
        "onedrive": "onedrive",
        "teams": "teams",
    }
    user = Account(kind="user", services_found={"mail": False, "onedrive": True, "teams": True})
    # Teams is not in the mailbox: its own probe gates it (teams joined or chats)
    assert registry.covered(user.kind, user.services_found, set(BUILTIN)) == ["onedrive", "teams"]
    user.services_found = {"mail": True, "onedrive": True, "teams": False}
    assert registry.covered(user.kind, user.services_found, set(BUILTIN)) == [
        "mail",
        "calendar",
        "contacts",
        "onedrive",
    ]
    user.services_found = {"mail": True, "onedrive": False}
    assert registry.covered(
        user.kind, user.services_found, {"calendar", "onedrive", "sharepoint"}
    ) == ["calendar"]


def _graph_class(path: str) -> str:
    """The throttling class graph/ gives a request path."""
    return scope_of(path)[0]


def test_change_notifications_name_one_resource_or_a_resolver() -> None:
    """User services subscribe to one ``{user}`` resource each; a site's resources are listed
    by its resolver, an importable coroutine function taking (GraphClient, Account)."""
    declared = {s.name: s.notifications for s in registry.specs() if s.notifications}
    assert set(declared) == {"mail", "calendar", "contacts", "onedrive", "sharepoint"}
    for name, kind in declared.items():
        if kind.resolver is None:
            assert registry.get(name).kind == "user"
            assert kind.resource.startswith("users/{user}/"), name
            continue
        module, _, function = kind.resolver.partition(":")
        resolver = getattr(importlib.import_module(module), function)
        assert inspect.iscoroutinefunction(resolver), name
        assert list(inspect.signature(resolver).parameters) == ["graph", "account"]
    assert declared["sharepoint"].resolver is not None
    assert declared["sharepoint"].change_type == "updated"


def test_declared_throttle_classes_are_the_ones_graph_applies() -> None:
    assert set(get_args(registry.ThrottleClass)) == set(get_args(graph_client.Scope))
    for spec in (*registry.specs(), profile_service.SPEC):
        path = "/v1.0" + spec.graph_path.format(id="someone")
        assert _graph_class(path) == spec.throttle, spec.name
        assert _graph_class(path + "/anything") == spec.throttle, spec.name


def test_policy_switches_are_policy_columns_and_schema_fields() -> None:
    columns = Policy.__table__.columns
    fields = PolicyIn.model_fields
    declared = registry.switches()
    assert [s.name for s in declared] == [
        "include_deleted_items",
        "include_junk",
        "include_recoverable_items",
    ]
    for switch in declared:
        assert columns[switch.name].default.arg is switch.default
        assert fields[switch.name].annotation is bool
        assert fields[switch.name].default is switch.default
    # and no yes/no of a service lives in the policy without a declaration
    undeclared = {name for name in fields if name.startswith("include_")} - {
        s.name for s in declared
    }
    assert undeclared == set()


def test_declared_search_fields_are_fields_of_the_document() -> None:
    extra = {f.name for f in dataclasses.fields(SearchFields)} - {"title", "folder_path"}
    for spec in registry.specs():
        assert set(spec.search_fields) <= extra, spec.name
        assert set(spec.search_fields) <= set(SearchDocument.model_fields), spec.name


def test_every_list_of_services_derives_from_the_registry() -> None:
    assert get_args(ApiService) == BUILTIN
    assert described() == "mail, calendar, contacts, onedrive, sharepoint or teams"
    assert PolicyIn().services == list(registry.defaults())
    assert Policy.__table__.columns["services"].default.arg(None) == list(registry.defaults())
    enums = _service_enums(json.loads((ROOT / "openapi" / "openapi.json").read_text()))
    assert len(enums) >= 9  # policy, backup requests, restores, snapshots, items, search, hits
    assert all(enum == list(BUILTIN) for enum in enums)


def _service_enums(document: Any) -> list[list[str]]:
    found: list[list[str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "mail" in node.get("enum", ()):
                found.append(node["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return found


def test_no_literal_list_of_service_names_is_left() -> None:
    """Outside the registry (and graph/, which knows Graph's paths, not our services), no
    tuple, list, set or dict spells two or more service names: it would be a copy to keep
    in step by hand."""
    offenders = []
    for path in sorted((ROOT / "safekeep").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative == "safekeep/registry.py" or relative.startswith("safekeep/graph/"):
            continue
        for node in ast.walk(parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                elements = node.elts
            elif isinstance(node, ast.Dict):
                elements = [k for k in node.keys if k is not None]
            else:
                continue
            names = {str(e.value) for e in elements if isinstance(e, ast.Constant)} & set(BUILTIN)
            if len(names) >= 2:
                offenders.append(f"{relative}:{node.lineno} {sorted(names)}")
    assert offenders == []


def test_the_literal_check_would_see_one() -> None:
    node = parse('FOUND = {"calendar": "mail", "contacts": "mail"}').body[0]
    assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
    keys = {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    assert len(keys & set(BUILTIN)) == 2


def test_registered_adds_and_removes_a_service() -> None:
    with registry.registered(profile_service.SPEC):
        assert registry.names() == (*BUILTIN, "profile")
        assert registry.of_kind("user")[-1] == "profile"
        with pytest.raises(ValueError, match="already declared"):
            registry.register(profile_service.SPEC)
    assert registry.names() == BUILTIN


# ---- a sixth service, end to end -----------------------------------------------------------


async def test_a_declared_sixth_service_is_backed_up_browsed_searched_and_exported(
    engine: EngineHarness,
) -> None:
    h = engine
    with registry.registered(profile_service.SPEC):
        profile_service.probed.clear()
        accounts = await h.discover()
        users = sorted((a for a in accounts if a.kind == "user"), key=lambda a: a.graph_id)
        # discovery ran the new probe for each licensed user and stored what it found
        assert sorted(profile_service.probed) == sorted(a.graph_id for a in users if a.licensed)
        account = next(a for a in users if a.licensed)
        assert account.services_found["profile"] is True
        assert "profile" in registry.covered(
            account.kind, account.services_found, set(registry.names())
        )

        run, skipped = await h.backup(account, "profile")
        assert (skipped, run.counters.added) == (0, 1)
        again, _ = await h.backup(account, "profile")
        assert (again.counters.added, again.counters.unchanged) == (0, 1)

        sim_user = h.sim.tenant().users[account.graph_id]
        async with h.runtime.db.session() as session:
            listing = await browse.list_children(
                session, h.scope, account, "profile", at=None, folder_id=None, cursor=None, limit=10
            )
            [(_item, version)] = listing.entries
            content = await browse.content(h.runtime, session, account, version)
        assert content.media_type == "application/json"
        body = b"".join([chunk async for chunk in content.open(0, None)])
        assert json.loads(body)["id"] == account.graph_id
        assert version.name == sim_user.display_name

        assert await h.search_titles("profile", sim_user.display_name.split()[0]) == [version.name]

        units = await resolve_units(
            h.runtime,
            h.scope,
            h.tenant,
            Scope(
                type="account",
                account_id=account.id,
                service=None,
                item_ids=(),
                at=None,
                snapshot_id=None,
            ),
        )
        assert "profile" in {unit.service for unit in units}

        archive = zipfile.ZipFile(io.BytesIO(await h.export(account, "profile")))
        [entry] = [n for n in archive.namelist() if n.endswith(f"/profile/{version.name}.json")]
        assert json.loads(archive.read(entry))["id"] == account.graph_id

        report = await h.restore(account, "profile")
        assert report.summary()["skipped"] == 1
    assert registry.names() == BUILTIN


def test_the_api_enums_and_policy_schema_derive_from_the_registry() -> None:
    """In a fresh process (the API's types are built at import), a service declared before
    the API is imported is in every ``service`` enum of the OpenAPI document and accepted by
    the policy schema."""
    script = (
        "import json\n"
        "from safekeep import registry\n"
        "from tests.backup.profile_service import SPEC\n"
        "registry.register(SPEC)\n"
        "from safekeep.api.openapi_dump import document\n"
        "from safekeep.api.policy.schemas import PolicyIn\n"
        "print(json.dumps({'openapi': document(), 'default': PolicyIn().services,\n"
        "    'accepted': PolicyIn(services=['profile']).services}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["default"] == [*registry.defaults(), "profile"]
    assert out["accepted"] == ["profile"]
    enums = _service_enums(out["openapi"])
    assert len(enums) == len(
        _service_enums(json.loads((ROOT / "openapi/openapi.json").read_text()))
    )
    assert all(enum == [*BUILTIN, "profile"] for enum in enums)
    policy = out["openapi"]["components"]["schemas"]["PolicyIn"]["properties"]["services"]
    assert policy["maxItems"] == len(BUILTIN) + 1
