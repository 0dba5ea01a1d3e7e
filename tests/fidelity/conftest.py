"""The fidelity suite's simulator (empty mailboxes: only the corpus is in them) and the
figures it prints at the end of every run, whatever pytest's capture settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graphsim import Simulator
from tests.fixtures.sim import running_sim

# kind -> (identical, total, note), filled by the tests as they run
FIGURES: dict[str, tuple[int, int, str]] = {}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    empty = {"messages": 0, "files": 0, "events": 0, "contacts": 0, "sites": 0, "list_items": 0}
    yield from running_sim(tmp_path, seed=11, users=2, **empty)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.write_sep(
        "-", "restore fidelity (delivered, backed up, hard-deleted, restored)"
    )
    for kind, (identical, total, note) in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{kind}: {identical}/{total} identical  ({note})")
