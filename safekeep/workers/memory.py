"""How a worker process asks glibc's allocator to give memory back.

A worker moves many buffers of a few hundred KB to a few MB (MIME, chunks, Graph pages)
across threads (the event loop, the storage pool, SQLite's thread). With glibc's defaults
each thread gets its own heap arena (up to eight per core), and the threshold above which a
buffer is mapped on its own (and unmapped when freed) rises to the largest buffer freed so far,
so later large buffers land in the heaps, fragment them and keep the resident size at its
high-water mark. Two arenas and a fixed mapping threshold keep the largest buffers out of the
heaps: freed, they go back to the system at once.

The threshold is 2 MiB. Every mapped buffer costs a page fault per 4 KiB page touched and a
``munmap``; at 256 KiB the socket reads (256 KiB plus an object header), most chunks and the
copies between them were all mapped: a full backup of mail and contacts (636 MB of MIME) took
1.2-1.7 million page faults and 8.8-9.5 s of system CPU. At 2 MiB those buffers are reused
from the heaps: 0.5-0.6 million faults, 5.0-5.9 s, for 15-20 MB more peak RSS (4 MiB: 0.4
million, but 35-40 MB more).

Elsewhere than glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

log = structlog.get_logger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 2 * 1024 * 1024
TRIM_THRESHOLD = 4 * 1024 * 1024


def tune_allocator() -> bool:
    """Apply the settings above; True when glibc took them."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = all(
        mallopt(option, value) == 1
        for option, value in (
            (M_ARENA_MAX, ARENAS),
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        )
    )
    log.debug("allocator_tuned", ok=ok)
    return ok
