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

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("safekeep", "graphsim")

# Plain shared modules the lowest layers may use: they hold error types, retry/disposition
# helpers and the service registry's declarations, and import nothing of ours.
PLAIN = ("safekeep.transient", "safekeep.disposition", "safekeep.errors", "safekeep.registry")
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

    visit(ast.parse(source), True)
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
        "safekeep.errors, safekeep.registry)",
        "safekeep.storage.keys:2 imports safekeep.search "
        "(the low layers import only themselves and safekeep.transient, safekeep.disposition, "
        "safekeep.errors, safekeep.registry)",
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
