"""The worker's allocator settings take on glibc (the platform the image runs on)."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from safekeep.workers.memory import tune_allocator


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
def test_glibc_takes_the_allocator_settings() -> None:
    assert ctypes.util.find_library("c")
    assert tune_allocator() is True
