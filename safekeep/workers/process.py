"""Running Dramatiq workers: as their own process (`safekeep worker`) or inside `serve`."""

from __future__ import annotations

import gc
import signal
import threading

import dramatiq
import structlog

from safekeep.settings import Settings
from safekeep.workers import broker as queue
from safekeep.workers.context import configure
from safekeep.workers.memory import tune_allocator

log = structlog.get_logger(__name__)


def start_worker(
    settings: Settings, *, threads: int = 8, queues: list[str] | None = None
) -> dramatiq.Worker:
    tune_allocator()
    configure(settings, send=queue.send_messages)
    broker = queue.configure(settings)
    worker = dramatiq.Worker(
        broker, queues=set(queues) if queues else None, worker_threads=threads, worker_timeout=500
    )
    worker.start()
    # What is imported and built by now lives as long as the process: frozen, it is no longer
    # walked by every full collection during backups (about half of their collector time).
    gc.collect()
    gc.freeze()
    log.info("worker_started", threads=threads, queues=queues or "all")
    return worker


def run_worker(settings: Settings, *, threads: int = 8, queues: list[str] | None = None) -> None:
    worker = start_worker(settings, threads=threads, queues=queues)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("worker_stopping", signal=signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    worker.stop(timeout=30_000)
