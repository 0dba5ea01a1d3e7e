"""Fixtures for engine tests: a small simulated tenant and a harness connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from graphsim import Simulator
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.workers import context
from tests.backup.harness import EngineHarness, connect, sim_settings
from tests.fixtures.app import SentMessages


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    """A small, consented tenant: 3 users, a few dozen messages and files, no big files."""
    with Simulator(
        seed=7,
        users=3,
        messages=24,
        files=12,
        sites=1,
        list_items=6,
        large_files=False,
        state_dir=tmp_path / "graphsim",
    ) as simulator:
        yield simulator


async def _harness(settings: Settings, sim: Simulator) -> AsyncIterator[EngineHarness]:
    runtime = Runtime.build(sim_settings(settings, sim), send=SentMessages())
    try:
        yield await connect(runtime, sim)
    finally:
        context.forget_runtimes()
        await runtime.close()


@pytest.fixture
async def engine(embedded_settings: Settings, sim: Simulator) -> AsyncIterator[EngineHarness]:
    """The embedded column (SQLite, local folder, FTS5) connected to ``sim``."""
    async for harness in _harness(embedded_settings, sim):
        yield harness


@pytest.fixture
async def scaleout_engine(
    scaleout_settings: Settings, sim: Simulator
) -> AsyncIterator[EngineHarness]:
    """The scale-out column (PostgreSQL, SeaweedFS, OpenSearch) connected to ``sim``."""
    async for harness in _harness(scaleout_settings, sim):
        yield harness
