"""The simulator's code stays in small, module-level pieces: no function over ~80 lines,
and every Graph route registered by a module-level handler (not inside a closure), so a
reader finds a handler by name and a new area is one module plus a line in ``server.py``."""

from __future__ import annotations

import ast
from pathlib import Path

import graphsim
from graphsim import server
from tests.fixtures.source import parse

MAX_LINES = 80
PACKAGE = Path(graphsim.__file__).parent


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function, nested ones included, longer than
    ``limit`` lines (decorators not counted, docstrings and comments counted)."""
    found = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def nested_route_handlers(source: str) -> list[str]:
    """Functions defined inside another function and decorated with ``<router>.add(...)``."""
    found = []
    for outer in ast.walk(parse(source)):
        if not isinstance(outer, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(outer):
            if inner is outer or not isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for decorator in inner.decorator_list:
                call = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(call, ast.Attribute) and call.attr == "add":
                    found.append(f"{outer.name}.{inner.name}")
    return found


def test_the_checks_catch_what_they_look_for() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    assert long_functions(f"def big() -> None:\n{body}\n") == [("big", 1, MAX_LINES + 1)]
    assert long_functions(f"def small() -> None:\n{body}\n", limit=MAX_LINES + 1) == []
    closure = (
        "def register(router):\n"
        "    @router.add('GET', '/x', 'exchange')\n"
        "    def handler(engine, req):\n"
        "        return None\n"
    )
    assert nested_route_handlers(closure) == ["register.handler"]
    assert nested_route_handlers("@router.add('GET', '/x', 'e')\ndef h(e, r):\n    pass\n") == []


def test_no_graphsim_function_is_longer_than_the_limit() -> None:
    offenders = {
        f"{path.name}:{line} {name} ({length} lines)"
        for path in sorted(PACKAGE.glob("*.py"))
        for name, line, length in long_functions(path.read_text(encoding="utf-8"))
    }
    assert not offenders, f"split these functions (limit {MAX_LINES} lines): {sorted(offenders)}"


def test_route_handlers_are_module_level() -> None:
    offenders = [
        f"{path.name}: {name}"
        for path in sorted(PACKAGE.glob("*.py"))
        for name in nested_route_handlers(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, offenders


def test_every_area_router_is_joined_once_in_order() -> None:
    joined = server.graph_router().routes
    expected = [route for router in server.GRAPH_ROUTERS for route in router.routes]
    assert joined == expected
    assert len({id(r) for r in server.GRAPH_ROUTERS}) == len(server.GRAPH_ROUTERS)
    templates = {f"{r.method} {r.template}" for r in joined}
    # One route of each area, as a guard against an area module dropped from the list.
    for probe in (
        "GET /users/{user}/messages/{item}",
        "GET /drives/{drive}/items/{item}/children",
        "GET /users/{user}/events/{item}/attachments",
        "GET /sites/{site}/lists",
        "GET /users",
        "POST /$batch",
    ):
        assert probe in templates, probe
