"""A benchmark's worker in a process of its own: what ``safekeep worker`` runs, fed by the
benchmark's process through this process's stdin.

Settings arrive pickled on stdin, then lists of queue messages (``outbox.Message``), each
pickled, until ``None`` or the end of the stream. The embedded queue lives in the worker's
process, so the benchmark cannot send to it otherwise; on Redis this would be the broker.

Only the worker's modules are imported here, not the benchmark's (the API app, httpx
clients, boto3's default session for making buckets), so the CPU and memory a benchmark
reads from this process's ``/proc`` entry are the worker's alone. Started by
``bench.common.WorkerProcess``.
"""

from __future__ import annotations

import argparse
import pickle
import sys

from safekeep import logging as safekeep_logging
from safekeep.settings import Settings
from safekeep.workers import broker
from safekeep.workers.process import start_worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    # A pipe only the benchmark that started us holds, as multiprocessing's own pipes are.
    inbox = sys.stdin.buffer
    settings = pickle.load(inbox)  # noqa: S301
    if not isinstance(settings, Settings):
        raise SystemExit("bench.worker: expected pickled Settings first on stdin")
    safekeep_logging.configure(settings.log_level, json=settings.log_json)
    worker = start_worker(settings, threads=args.threads)
    try:
        while True:
            try:
                batch = pickle.load(inbox)  # noqa: S301
            except EOFError:
                break
            if batch is None:
                break
            broker.send_messages(batch)
    finally:
        worker.stop(timeout=30_000)


if __name__ == "__main__":
    main()
