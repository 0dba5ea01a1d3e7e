"""The security suite attacks a live server: uvicorn on a real port, served with the options
``safekeep serve`` and the Helm chart use, building its own runtime in its lifespan like a
production api pod, on the test's own database (a clone per test) with two MSPs in it.

Fixtures:
- ``world``: MSPs A and B with data of every kind (``tests.api.conftest.build_world``);
- ``live``: the server's base URL with that world (default settings: development, private
  webhook targets refused);
- ``start_server(**overrides)``: another server on the same database with some settings
  changed (production, ``webhook_allow_private_targets``), stopped after the test;
- ``deliver_as(delivery_id, **overrides)``: the webhook actor run in this process (it stands
  in for a worker) on the same database, with the given settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from safekeep.api.app import create_app
from safekeep.api.serving import uvicorn_options
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.workers import context
from safekeep.workers.webhooks import deliver
from tests.api.conftest import World, build_world
from tests.fixtures.live import serve_app

PROBLEM = "application/problem+json"


@dataclass
class Live:
    base: str
    world: World
    settings: Settings

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=30)


@pytest.fixture
async def world(runtime: Runtime) -> World:
    return World(await build_world(runtime, "alpha"), await build_world(runtime, "beta"), runtime)


@pytest.fixture
def start_server(scaleout_settings: Settings) -> Iterator[Callable[..., str]]:
    with ExitStack() as servers:

        def start(**overrides: Any) -> str:
            app = create_app(scaleout_settings.model_copy(update=overrides))
            return servers.enter_context(serve_app(app, **uvicorn_options()))

        yield start


@pytest.fixture
def live(world: World, start_server: Callable[..., str], scaleout_settings: Settings) -> Live:
    return Live(start_server(), world, scaleout_settings)


Deliver = Callable[..., Awaitable[None]]


@pytest.fixture
def deliver_as(runtime: Runtime) -> Iterator[Deliver]:
    """Run the webhook actor on the test's database, as a worker whose settings differ from
    the defaults by ``overrides`` (a worker process is configured like the API)."""

    async def deliver_one(delivery_id: str, **overrides: Any) -> None:
        settings = runtime.settings.model_copy(update=overrides)
        worker = dataclasses.replace(runtime, settings=settings)
        context.configure(settings, factory=lambda _settings: worker)
        context.forget_runtimes()
        await deliver(delivery_id)

    yield deliver_one
    context.forget_runtimes()
