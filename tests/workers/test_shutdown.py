"""A worker's shutdown ends even when closing what its actors opened does not: the clean-up
is bounded, names what was still waiting, and the worker stops (a ``safekeep serve`` child
once outlived its parent this way, stuck closing while backups were still running)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware.asyncio import AsyncIO
from structlog.testing import capture_logs

from safekeep.workers import broker as queue_setup


def test_a_clean_up_that_never_ends_does_not_keep_the_worker_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closing = threading.Event()

    async def never_closes() -> None:
        closing.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(queue_setup, "close_runtimes", never_closes)
    monkeypatch.setattr(queue_setup, "CLOSE_TIMEOUT_SECONDS", 0.5)
    broker = StubBroker()
    broker.add_middleware(AsyncIO())
    broker.add_middleware(queue_setup.CloseRuntimes())
    broker.emit_after("process_boot")
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    stopper = threading.Thread(target=worker.stop, kwargs={"timeout": 5_000}, daemon=True)
    with capture_logs() as logs:
        stopper.start()
        stopper.join(60)
    assert closing.is_set()
    assert not stopper.is_alive()  # without the bound, stop() waited for ever
    timed_out = [entry for entry in logs if entry["event"] == "worker_cleanup_timed_out"]
    assert len(timed_out) == 1 and isinstance(timed_out[0]["pending"], list)
