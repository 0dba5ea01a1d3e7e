"""What an actor runs with: the runtime of its event loop.

Async actors run on Dramatiq's event-loop thread; database engines and HTTP clients are bound
to the loop that made them, so each loop gets its own Runtime, built from the settings and the
sender the process was configured with. Only this package (actors, the scheduler, process
set-up) looks a runtime up here; the engine receives it as an argument.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from safekeep.runtime import Runtime, Sender
from safekeep.settings import Settings

RuntimeFactory = Callable[[Settings], Runtime]

_settings: Settings | None = None
_factory: RuntimeFactory | None = None
_runtimes: dict[asyncio.AbstractEventLoop, Runtime] = {}


class NotConfigured(RuntimeError):
    pass


def configure(
    settings: Settings, *, send: Sender | None = None, factory: RuntimeFactory | None = None
) -> None:
    """Set what runtimes are built from (call before workers start): either a ``factory``, or
    the ``send`` that runtimes built from ``settings`` hand their collected messages to."""
    global _settings, _factory
    if factory is None:
        if send is None:
            raise TypeError("configure needs a sender or a runtime factory")
        sender = send

        def factory(s: Settings) -> Runtime:
            return Runtime.build(s, send=sender)

    _settings = settings
    _factory = factory


def current_runtime() -> Runtime:
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None:
        if _factory is None or _settings is None:
            raise NotConfigured("safekeep.workers.context.configure was not called")
        runtime = _factory(_settings)
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
