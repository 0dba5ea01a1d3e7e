"""A benchmark run's scratch directory, made once the file system has settled.

Standard library only: ``bench.storage``'s child process imports it, and reports its own
peak RSS (``bench.common`` brings httpx and the settings, about 20 MB more).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# On ext4 without a journal (this build machine's disk), the kernel will not hand out an inode
# freed less than about a minute ago and checks each such inode in turn while making a file
# (fs/ext4/ialloc.c, ``recently_deleted``): a run that makes thousands of files right after
# an earlier run removed thousands paid 25-30% more worker CPU (bench.backup's full of mail
# and contacts, 11.4 CPU-s quiet, 14.3 and 14.8 right after, 13.3 at 30 s, 11.3 at 90 s).
SETTLE_S = 90.0
_REMOVED = Path(tempfile.gettempdir()) / "safekeep-bench-removed"


def frees_inodes_late(
    path: Path,
    *,
    mountinfo: Path = Path("/proc/self/mountinfo"),
    journals: Path = Path("/proc/fs/jbd2"),
) -> bool:
    """Whether ``path`` is on ext4 without a journal (``journals`` lists a journaled ext4
    file system's device, as ``vda1-8``; without one, freed inodes are held back a minute)."""
    dev = os.stat(path).st_dev
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        mounts = mountinfo.read_text().splitlines()
    except OSError:
        return False
    for line in mounts:
        mount, _, fs = line.partition(" - ")
        if mount.split()[2] != wanted:
            continue
        kind = fs.split()
        if len(kind) < 2 or kind[0] != "ext4":
            return False
        device = Path(kind[1]).name
        return not (
            journals.is_dir() and any(j.name.startswith(f"{device}-") for j in journals.iterdir())
        )
    return False


def settle_seconds(now: float | None = None) -> float:
    """How long to wait before making a run's files: the rest of ``SETTLE_S`` since a
    benchmark last removed its scratch directory, on a file system that frees inodes late."""
    try:
        removed = _REMOVED.stat().st_mtime
    except FileNotFoundError:
        return 0.0
    if not frees_inodes_late(_REMOVED.parent):
        return 0.0
    now = time.time() if now is None else now
    return max(0.0, min(SETTLE_S, removed + SETTLE_S - now))


@contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A benchmark run's own temporary directory (its data, graphsim's state), removed after
    it; made only once an earlier run's removal can no longer cost this run CPU."""
    wait = settle_seconds()
    if wait > 0:
        print(
            f"[bench] waiting {wait:.0f} s: an earlier run removed its files less than "
            f"{SETTLE_S:.0f} s ago, and on ext4 without a journal making files this soon "
            "after costs more CPU",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(wait)
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path)
        _REMOVED.touch()
