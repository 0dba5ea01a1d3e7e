"""Worker tests call the actors' functions in-process, on the test's runtime."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from safekeep.runtime import Runtime
from safekeep.workers import context
from tests.workers.receiver import Receiver, running_receiver


@pytest.fixture
def worker_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Make ``current_runtime()`` (what actors use) return the test's runtime."""
    context.configure(runtime.settings, factory=lambda _settings: runtime)
    context.forget_runtimes()
    yield runtime
    context.forget_runtimes()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as state:
        yield state
