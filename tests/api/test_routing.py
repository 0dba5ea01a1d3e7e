"""Which route answers a request must not depend on the order routes are tried in.

``create_app`` includes its routers in the order of portal traffic (the job poll first), not
of their paths. That is safe only while no request path can match two routes of a shared
method: each route's path, with every parameter filled in, is matched by that route alone.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.routing import Route, compile_path

from safekeep.api.app import create_app
from safekeep.settings import Settings

_PARAM = re.compile(r"{([^}:]+)(?::([^}]+))?}")


def _probe(path: str) -> str:
    """The path with each parameter filled in by a value its convertor accepts and no literal
    segment of ours equals."""

    def value(match: re.Match[str]) -> str:
        convertor = match.group(2) or "str"
        return {"uuid": str(uuid.UUID(int=7)), "int": "7", "path": "probe/path"}.get(
            convertor, "probe-value"
        )

    return _PARAM.sub(value, path)


def _routes() -> list[tuple[str, Any, set[str]]]:
    app = create_app(Settings(_env_file=None))
    found: list[tuple[str, Any, set[str]]] = []
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            found += [(c.path, c.path_regex, set(c.methods or ())) for c in contexts()]
        elif isinstance(route, Route):
            found.append((route.path, route.path_regex, set(route.methods or ())))
    return found


def clashes(routes: list[tuple[str, Any, set[str]]]) -> list[tuple[list[str], str, list[str]]]:
    """Each route whose filled-in path another route of a shared method also matches."""
    found = []
    for path, _regex, methods in routes:
        probe = _probe(path)
        matching = [
            other
            for other, regex, other_methods in routes
            if methods & other_methods and regex.match(probe)
        ]
        if matching != [path]:
            found.append((sorted(methods), path, matching))
    return found


def test_no_request_path_matches_two_routes() -> None:
    routes = _routes()
    assert len(routes) > 60  # every router's routes, not just the first level
    assert clashes(routes) == []


def test_a_literal_segment_where_another_route_takes_a_parameter_is_a_clash() -> None:
    """The check can fail: a literal segment where a route of the same method takes a
    parameter is matched by both; of different methods, it is not a clash."""

    def route(path: str, *methods: str) -> tuple[str, Any, set[str]]:
        return path, compile_path(path)[0], set(methods)

    stats, by_id = route("/v1/jobs/stats", "GET"), route("/v1/jobs/{job_id:uuid}", "GET")
    assert clashes([stats, by_id]) == []  # a UUID convertor does not take "stats"
    loose = route("/v1/jobs/{job_id}", "GET")
    assert clashes([stats, loose]) == [
        (["GET"], "/v1/jobs/stats", ["/v1/jobs/stats", "/v1/jobs/{job_id}"])
    ]
    assert clashes([stats, route("/v1/jobs/{job_id}", "DELETE")]) == []
