"""Streaming holds a bounded window, not the item: checked with tracemalloc on 128 MiB.

tracemalloc sees every Python allocation (all bytes objects, in every thread), which is where
chunk data lives; zstd's and OpenSSL's internal buffers are small and fixed per call.
"""

import random
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

from safekeep.storage import TenantRepository, open_blobstore

MiB = 1024 * 1024
TOTAL = 128 * MiB


async def generated(total: int) -> AsyncIterator[bytes]:
    rnd = random.Random(77)
    for _ in range(total // MiB):
        yield rnd.randbytes(MiB)


async def test_put_and_read_of_a_large_stream_use_bounded_memory(tmp_path: Path) -> None:
    store = open_blobstore(tmp_path.as_uri())
    await store.open()
    repo = TenantRepository(store, tenant_id="t", data_key=b"m" * 32)
    tracemalloc.start()
    try:
        ref = await repo.put_stream(generated(TOTAL))
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        seen = 0
        async for piece in repo.read(ref):
            seen += len(piece)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await store.close()
    assert ref.size == seen == TOTAL
    # Window (8 MiB) and its joined copy, plus the 16 MiB upload budget with sealed copies:
    # about 42 MiB measured, far from the 128 MiB a non-streaming path would hold.
    assert put_peak < 56 * MiB, put_peak / MiB
    # read_ahead (3) chunks and their blobs.
    assert read_peak < 40 * MiB, read_peak / MiB
