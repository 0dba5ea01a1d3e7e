"""Fixtures shared by the service tests."""

from __future__ import annotations

from typing import Any

import pytest

from safekeep.backup.services.mail import mime


@pytest.fixture
def header_parses(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every header the MIME helpers parse (name, value), in order, as they parse it."""
    parsed: list[tuple[str, str]] = []
    real = mime._HeaderClasses.__call__

    def counting(self: Any, name: str, value: str) -> Any:
        parsed.append((name, value))
        return real(self, name, value)

    monkeypatch.setattr(mime._HeaderClasses, "__call__", counting)
    mime._parsed.cache_clear()  # what earlier tests parsed is not parsed again
    return parsed
