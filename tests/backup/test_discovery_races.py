"""A user deleted from the directory between discovery's listing and its probes is missing
from that discovery (as if no longer listed), instead of failing the discovery of every other
user; and Exchange's answer for a user it does not know, 404 ``ErrorInvalidUser`` on an
Outlook route, means the user is gone, not that it lacks a mailbox."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from safekeep.backup.context import graph_client
from safekeep.backup.jobs import discover as discovery
from safekeep.graph import directory
from safekeep.graph.client import GraphClient
from safekeep.graph.errors import UserNotFound
from safekeep.tenants.models import AccountKind
from tests.backup.harness import EngineHarness


async def test_a_user_deleted_during_discovery_does_not_fail_it(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed_by_graph = directory.list_users
    ghost = str(uuid.uuid4())

    async def listed_then_one_deleted(graph: GraphClient) -> list[dict[str, Any]]:
        users = await listed_by_graph(graph)
        # listed with a licence a moment ago, deleted in Entra ID before its probes: graphsim
        # does not know it, as Microsoft would not any more
        return [*users, {**users[0], "id": ghost, "userPrincipalName": "gone@contoso.example"}]

    monkeypatch.setattr(discovery.directory, "list_users", listed_then_one_deleted)
    accounts = await engine.discover()  # asserts the job succeeded
    users = {a.graph_id for a in accounts if a.kind == AccountKind.user}
    assert ghost not in users
    assert users == set(engine.sim.tenant().users)


async def test_an_unknown_user_on_an_outlook_route_is_exchanges_error_invalid_user(
    engine: EngineHarness,
) -> None:
    ghost = str(uuid.uuid4())
    async with graph_client(engine.runtime, engine.tenant) as graph:
        for path, code in (
            (f"/users/{ghost}/mailFolders/inbox", "ErrorInvalidUser"),
            (f"/users/{ghost}/contactFolders/delta", "ErrorInvalidUser"),
            (f"/users/{ghost}", "Request_ResourceNotFound"),
        ):
            with pytest.raises(UserNotFound) as caught:
                await graph.get_json(path)
            assert caught.value.code == code, path
        with pytest.raises(UserNotFound):
            await directory.has_mailbox(graph, ghost)
