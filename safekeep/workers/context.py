"""What an actor runs with: a runtime for its event loop and a unit of work.

Async actors run on Dramatiq's event-loop thread; database engines and HTTP clients are bound
to the loop that made them, so each loop gets its own Runtime, built from the settings the
process was configured with.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.runtime import Runtime
from safekeep.settings import Settings, get_settings
from safekeep.tenants import outbox

RuntimeFactory = Callable[[Settings], Runtime]

_settings: Settings | None = None
_factory: RuntimeFactory = Runtime.build
_runtimes: dict[asyncio.AbstractEventLoop, Runtime] = {}


def configure(settings: Settings, factory: RuntimeFactory | None = None) -> None:
    """Set what runtimes are built from (call before workers start)."""
    global _settings, _factory
    _settings = settings
    _factory = factory or Runtime.build


def current_runtime() -> Runtime:
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None:
        runtime = _factory(_settings or get_settings())
        _runtimes[loop] = runtime
    return runtime


async def close_runtimes() -> None:
    """Close the runtime of the running loop (tests and shutdown)."""
    loop = asyncio.get_running_loop()
    runtime = _runtimes.pop(loop, None)
    if runtime is not None:
        await runtime.close()


def forget_runtimes() -> None:
    _runtimes.clear()


@asynccontextmanager
async def unit_of_work(runtime: Runtime | None = None) -> AsyncIterator[AsyncSession]:
    """A session that commits when the block ends cleanly, then sends collected messages."""
    runtime = runtime or current_runtime()
    with outbox.collect() as box:
        async with runtime.db.session() as session:
            yield session
        if box.messages:
            runtime.send(box.messages)
