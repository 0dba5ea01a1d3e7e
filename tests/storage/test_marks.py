"""The garbage collector's marks: an exact set of chunk names that lives on disk past its
cache."""

from __future__ import annotations

import hashlib
import random
from contextlib import aclosing

from safekeep.storage.marks import QUERY_BATCH, ChunkMarks


def names(n: int, seed: int) -> list[str]:
    return [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in range(n)]


async def test_marks_answer_exactly_which_names_were_added() -> None:
    added = names(1200, seed=1)
    others = names(1200, seed=2)
    async with aclosing(ChunkMarks()) as marks:
        await marks.add(added[:700])
        await marks.add(added[500:])  # overlapping batches: each name counts once
        await marks.add([])
        assert await marks.count() == len(added)
        asked = added[::3] + others[::3]
        random.Random(7).shuffle(asked)
        assert await marks.marked(asked) == set(added[::3])
        assert await marks.marked(others) == set()
        assert await marks.marked([]) == set()


async def test_marks_beyond_their_cache_stay_exact() -> None:
    """With a cache of 64 KiB, 20,000 names (640 KB of keys) spill to SQLite's temporary
    file; every one is still found, and no other name is."""
    added = names(20_000, seed=3)
    async with aclosing(ChunkMarks(cache_bytes=64 * 1024)) as marks:
        for start in range(0, len(added), 1000):
            await marks.add(added[start : start + 1000])
        assert await marks.count() == len(added)
        asked = added + names(5_000, seed=4)
        assert len(asked) > QUERY_BATCH  # answered over several queries
        assert await marks.marked(asked) == set(added)
