"""Messages for workers, held until the unit of work that created their rows commits.

Services call ``enqueue("run_backup", job_id)``; the edge that owns the session (a request, an
actor, a CLI command) opens a ``collect()`` block around its unit of work and sends what was
collected only after its commit succeeds. A rollback drops them. This module knows nothing of
Dramatiq: it names actors, the edge sends.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    actor: str
    args: tuple[Any, ...]
    delay_ms: int | None = None


@dataclass
class Outbox:
    messages: list[Message] = field(default_factory=list)


_current: contextvars.ContextVar[Outbox | None] = contextvars.ContextVar("outbox", default=None)


class NoOutbox(RuntimeError):
    """A service enqueued outside a unit of work: a programming error, never user input."""


def enqueue(actor: str, *args: Any, delay_ms: int | None = None) -> None:
    box = _current.get()
    if box is None:
        raise NoOutbox(f"enqueue({actor!r}) outside an outbox.collect() block")
    box.messages.append(Message(actor, tuple(args), delay_ms))


@contextmanager
def collect() -> Iterator[Outbox]:
    box = Outbox()
    token = _current.set(box)
    try:
        yield box
    finally:
        _current.reset(token)
