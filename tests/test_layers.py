"""Layers point one way, and no module-level import cycle remains (docs/architecture.md).

An AST walk over ``safekeep/`` and ``graphsim/`` (no import is executed). The layer rule counts
every import wherever it sits, inside a function or under ``TYPE_CHECKING`` included: an import
of a higher layer tucked into a function is still a dependency on it. The cycle rule counts only
imports that run when a module is imported (module level, outside ``TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.source import parse

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("safekeep", "graphsim")

# Plain shared modules the lowest layers may use: they hold error types, retry/disposition
# helpers and the service registry's declarations, and import nothing of ours.
PLAIN = (
    "safekeep.transient",
    "safekeep.disposition",
    "safekeep.errors",
    "safekeep.registry",
    "safekeep.text",
    "safekeep.instants",
)
LOW = ("safekeep.graph", "safekeep.storage", "safekeep.search")
ENTRY_POINTS = ("safekeep.cli", "safekeep.serve")

# importer (package or module) -> what it must never import, at any level
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "safekeep.tenants": (
        "safekeep.backup",
        "safekeep.workers",
        "safekeep.api",
        "safekeep.billing",
        "safekeep.runtime",
        *ENTRY_POINTS,
    ),
    "safekeep.backup": ("safekeep.workers", "safekeep.api", *ENTRY_POINTS),
    "safekeep.billing": ("safekeep.workers", "safekeep.api", "safekeep.backup", *ENTRY_POINTS),
    "safekeep.workers": ("safekeep.api", *ENTRY_POINTS),
    "safekeep.api": ENTRY_POINTS,
    # runtime, db and settings sit below the engine: they are handed to it, never the reverse.
    "safekeep.runtime": (
        "safekeep.backup",
        "safekeep.workers",
        "safekeep.api",
        "safekeep.billing",
        *ENTRY_POINTS,
    ),
    "safekeep.db": ("safekeep.",),
    # the declarations are plain facts: the engine behind them is imported by name, lazily
    "safekeep.registry": ("safekeep.",),
    "safekeep.settings": ("safekeep.",),
    "graphsim": ("safekeep",),
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    runs_at_import: bool  # module level and outside ``if TYPE_CHECKING:``


def _within(name: str, prefix: str) -> bool:
    """``name`` is ``prefix`` or inside it; a prefix ending in ``.`` matches any child."""
    if prefix.endswith("."):
        return name.startswith(prefix)
    return name == prefix or name.startswith(prefix + ".")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(
    module: str, source: str, *, is_package: bool, known: Iterable[str] = ()
) -> list[Import]:
    """Every import of our packages in ``source``. ``from pkg import name`` names the
    submodule ``pkg.name`` when that is a module we know, else ``pkg``."""
    modules = set(known)
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def add(name: str, node: ast.stmt, runs: bool) -> None:
        if name.split(".")[0] in PACKAGES:
            found.append(Import(module, name, node.lineno, runs))

    def visit(node: ast.AST, runs: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, runs)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parts = package.split(".")
                    base = parts[: len(parts) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    add(sub if sub in modules else target, child, runs)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), runs)
            else:
                visit(child, runs)

    visit(parse(source), True)
    return found


def layer_violations(imports: Iterable[Import]) -> list[str]:
    found = []
    for imp in imports:
        if _within(imp.importer, "safekeep.api") or imp.importer in ENTRY_POINTS:
            pass
        elif _within(imp.imported, "safekeep.api"):
            found.append(f"{imp.importer}:{imp.line} imports {imp.imported} (only api is above)")
            continue
        if any(_within(imp.importer, low) for low in LOW):
            own = next(low for low in LOW if _within(imp.importer, low))
            if not (_within(imp.imported, own) or imp.imported in PLAIN):
                found.append(
                    f"{imp.importer}:{imp.line} imports {imp.imported} "
                    f"(the low layers import only themselves and {', '.join(PLAIN)})"
                )
            continue
        if imp.imported in PLAIN:  # they import nothing of ours: any layer may use them
            continue
        for importer, forbidden in FORBIDDEN.items():
            if _within(imp.importer, importer):
                for higher in forbidden:
                    if _within(imp.imported, higher):
                        found.append(
                            f"{imp.importer}:{imp.line} imports {imp.imported} "
                            f"({importer} never imports {higher.rstrip('.')})"
                        )
    return found


def module_cycles(imports: Iterable[Import]) -> list[list[str]]:
    """Strongly connected groups (of two or more modules, or one importing itself) in the
    graph of imports that run at import time (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.runs_at_import:
            # Importing a.b.c runs a/__init__ and a/b/__init__ first (those not already
            # running because the importer lives inside them).
            parts = imp.imported.split(".")
            targets = {".".join(parts[:k]) for k in range(2, len(parts))}
            targets = {t for t in targets if not _within(imp.importer, t)} | {imp.imported}
            for target in targets:
                graph.setdefault(imp.importer, set()).add(target)
                graph.setdefault(target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def project_sources() -> dict[str, tuple[str, bool]]:
    """Module name -> (source, is_package) for every module of our packages."""
    sources = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            sources[name] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def all_imports(sources: Mapping[str, tuple[str, bool]]) -> list[Import]:
    known = set(sources)
    return [
        imp
        for name, (source, is_package) in sources.items()
        for imp in imports_of(name, source, is_package=is_package, known=known)
    ]


def test_no_lower_layer_imports_a_higher_one() -> None:
    imports = all_imports(project_sources())
    assert len(imports) > 500  # the walk saw the project, not an empty folder
    assert layer_violations(imports) == []


def test_no_module_level_import_cycle() -> None:
    assert module_cycles(all_imports(project_sources())) == []


def test_the_engine_does_not_look_its_runtime_up() -> None:
    """Only the workers' adapter and the entry points (the API's lifespan among them) ask for
    the process's runtime or build one."""
    allowed = ("safekeep.workers", "safekeep.api.app", *ENTRY_POINTS)
    users = {
        name
        for name, (source, _) in project_sources().items()
        if ("current_runtime" in source or "Runtime.build" in source)
        and not any(_within(name, a) for a in allowed)
    }
    assert users == set()


# One package per concept in each layer (docs/architecture.md, "Where does X live"): a module
# named after a concept lives in one of that concept's packages, not wherever it was first needed.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "job": (
        "safekeep.tenants.models.job",  # tables: job, job_task, job_issue
        "safekeep.tenants.models.job_task",
        "safekeep.tenants.models.job_issue",
        "safekeep.tenants.job",  # domain: repository, service (start_job)
        "safekeep.backup.jobs",  # engine: lifecycle, one module per job kind, request service
        "safekeep.api.jobs",  # API: router, schemas
    ),
    "billing": (
        "safekeep.tenants.models.billing",
        "safekeep.billing",  # service, repository, Stripe client, events, usage
        "safekeep.api.billing",
    ),
    "catalog": (
        "safekeep.tenants.catalog",  # domain: the queries (repository)
        "safekeep.backup.catalog",  # engine: the snapshot writer
    ),
}

# Role names: an API resource package holds its router and schemas; a domain resource package
# its repository and service (and the helpers named here).
API_ROLES = frozenset({"router", "schemas"})
DOMAIN_ROLES = frozenset({"repository", "service"})
DOMAIN_HELPERS = {"safekeep.tenants.tenant": {"consent"}, "safekeep.tenants.webhook": {"target"}}


def concept_strays(modules: Iterable[str]) -> list[str]:
    """Modules named after a concept (their last name starts with it) outside its packages."""
    found = []
    for module in sorted(modules):
        last = module.rpartition(".")[2]
        for concept, homes in CONCEPTS.items():
            if last.startswith(concept) and not any(_within(module, h) for h in homes):
                found.append(f"{module} is a {concept} module outside {', '.join(homes)}")
    return found


def role_strays(sources: Mapping[str, tuple[str, bool]]) -> list[str]:
    found = []
    for module, (_, is_package) in sorted(sources.items()):
        parent, _, last = module.rpartition(".")
        if is_package or parent.count(".") != 2:
            continue
        if _within(parent, "safekeep.api") and last not in API_ROLES:
            found.append(f"{module}: an API resource package holds only {sorted(API_ROLES)}")
        if (
            _within(parent, "safekeep.tenants")
            and parent != "safekeep.tenants.models"
            and last not in DOMAIN_ROLES | DOMAIN_HELPERS.get(parent, set())
        ):
            found.append(f"{module}: a domain resource package holds only {sorted(DOMAIN_ROLES)}")
    return found


def test_each_concept_lives_in_its_packages() -> None:
    sources = project_sources()
    for homes in CONCEPTS.values():
        assert all(home in sources for home in homes), homes
    assert concept_strays(sources) == []
    assert concept_strays(["safekeep.backup.restore.job", "safekeep.tenants.billing"]) == [
        "safekeep.backup.restore.job is a job module outside " + ", ".join(CONCEPTS["job"]),
        "safekeep.tenants.billing is a billing module outside " + ", ".join(CONCEPTS["billing"]),
    ]


def test_resource_packages_are_named_by_role() -> None:
    assert role_strays(project_sources()) == []
    assert role_strays(
        {
            "safekeep.api.jobs.helpers": ("", False),
            "safekeep.tenants.job.lifecycle": ("", False),
            "safekeep.tenants.tenant.consent": ("", False),
            "safekeep.tenants.models.job": ("", False),
        }
    ) == [
        "safekeep.api.jobs.helpers: an API resource package holds only ['router', 'schemas']",
        "safekeep.tenants.job.lifecycle: a domain resource package holds only "
        "['repository', 'service']",
    ]


def _actors() -> dict[str, str]:
    """Actor name -> queue, read from ``@actor("queue", ...)`` in workers/actors.py."""
    tree = parse((ROOT / "safekeep/workers/actors.py").read_text(encoding="utf-8"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "actor":
                    queue = deco.args[0]
                    assert isinstance(queue, ast.Constant) and isinstance(queue.value, str)
                    found[node.name] = queue.value
    return found


def test_each_job_kind_has_its_engine_module_and_actor() -> None:
    """``start_job`` enqueues ``run_<kind>``, and a job of kind X runs in backup/jobs/X.py.
    Queued messages name their actor and queue: these names outlive any refactoring."""
    from safekeep.tenants.models import JobKind

    sources = project_sources()
    actors = _actors()
    for kind in JobKind:
        assert f"safekeep.backup.jobs.{kind.value}" in sources
        assert f"run_{kind.value}" in actors
    assert actors == {
        "run_discover": "default",
        "run_backup": "backup",
        "run_backup_task": "backup",
        "run_restore": "restore",
        "run_export": "export",
        "run_purge": "default",
        "sync_subscriptions": "default",
        "deliver_webhook": "webhooks",
        "index_versions": "search",
        "handle_stripe_event": "default",
    }


# The check itself can fail: synthetic modules with the violations it exists to catch.

SYNTHETIC: dict[str, tuple[str, bool]] = {
    "safekeep.backup": ("", True),
    "safekeep.backup.engine": (
        "from safekeep.tenants import models\n"
        "def run():\n"
        "    from safekeep.workers.context import current_runtime\n",
        False,
    ),
    "safekeep.graph": ("", True),
    "safekeep.graph.client": (
        "from safekeep.transient import is_transient\nfrom safekeep.tenants.models import Tenant\n",
        False,
    ),
    "safekeep.storage": ("", True),
    "safekeep.storage.keys": ("from . import errors\nfrom ..search import backend\n", False),
    "safekeep.storage.errors": ("", False),
    "safekeep.tenants": ("", True),
    "safekeep.tenants.models": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from safekeep.api.schemas import Thing\n",
        False,
    ),
    "safekeep.workers": ("", True),
    "safekeep.workers.context": ("", False),
    "safekeep.cli": ("def main():\n    import safekeep.api.app\n", False),
}


def test_the_layer_check_catches_violations_at_any_level() -> None:
    found = layer_violations(all_imports(SYNTHETIC))
    assert found == [
        "safekeep.backup.engine:3 imports safekeep.workers.context "
        "(safekeep.backup never imports safekeep.workers)",
        "safekeep.graph.client:2 imports safekeep.tenants.models "
        "(the low layers import only themselves and safekeep.transient, safekeep.disposition, "
        "safekeep.errors, safekeep.registry, safekeep.text, safekeep.instants)",
        "safekeep.storage.keys:2 imports safekeep.search "
        "(the low layers import only themselves and safekeep.transient, safekeep.disposition, "
        "safekeep.errors, safekeep.registry, safekeep.text, safekeep.instants)",
        "safekeep.tenants.models:3 imports safekeep.api.schemas (only api is above)",
    ]


def test_the_cycle_check_counts_only_imports_that_run_at_import_time() -> None:
    sources = {
        "safekeep.a": ("from safekeep import b\n", False),
        "safekeep.b": ("import safekeep.c\n", False),
        "safekeep.c": ("from safekeep.a import thing\n", False),
        "safekeep.d": ("from safekeep import e\n", False),
        "safekeep.e": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from safekeep import d\n"
            "def later():\n"
            "    from safekeep import d\n",
            False,
        ),
    }
    assert module_cycles(all_imports(sources)) == [["safekeep.a", "safekeep.b", "safekeep.c"]]


def test_a_cycle_through_a_package_init_is_a_cycle() -> None:
    sources = {
        "safekeep.pkg": ("from safekeep.pkg.inner import thing\n", True),
        "safekeep.pkg.inner": ("", False),
        "safekeep.other": ("import safekeep.pkg.inner\n", False),
        "safekeep.pkg.more": ("", False),
    }
    assert module_cycles(all_imports(sources)) == []
    sources["safekeep.pkg.inner"] = ("from safekeep.other import x\n", False)
    # other -> pkg/__init__ (run first) -> pkg.inner -> other
    assert module_cycles(all_imports(sources)) == [
        ["safekeep.other", "safekeep.pkg", "safekeep.pkg.inner"]
    ]
    sources["safekeep.pkg.inner"] = ("", False)
    sources["safekeep.pkg.more"] = ("from safekeep import other\n", False)
    sources["safekeep.pkg"] = ("from safekeep.pkg import more\n", True)
    assert module_cycles(all_imports(sources)) == [
        ["safekeep.other", "safekeep.pkg", "safekeep.pkg.more"]
    ]
