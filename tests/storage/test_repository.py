"""The tenant repository on every store: round trips, ranges, dedup, concurrency, tamper."""

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from safekeep.storage import (
    BlobNotFound,
    BlobStore,
    ContentRef,
    IntegrityError,
    TenantRepository,
    generate_data_key,
)
from safekeep.storage.chunking import MAX_CHUNK, MIN_CHUNK

MiB = 1024 * 1024


def repo(store: BlobStore, tenant: str = "tenant-a", key: bytes | None = None) -> TenantRepository:
    return TenantRepository(
        store, tenant_id=tenant, data_key=key or KEYS.setdefault(tenant, generate_data_key())
    )


KEYS: dict[str, bytes] = {}
# Each tenant's chunker has its own seed (from its random data key), so cut points vary from run
# to run; no chunk exceeds MAX_CHUNK, so this many bytes make at least four whatever the seed.
MORE_THAN_THREE_CHUNKS = 3 * MAX_CHUNK + 1


async def pieces(data: bytes, seed: int = 0) -> AsyncIterator[bytes]:
    """The data in irregular pieces, as a Graph download would deliver it."""
    rnd = random.Random(seed)
    i = 0
    while i < len(data):
        n = rnd.randrange(1, 700_000)
        yield data[i : i + n]
        i += n


async def all_keys(store: BlobStore, prefix: str) -> list[str]:
    return sorted([k async for k in store.list(prefix)])


async def test_small_item_is_one_blob_and_round_trips(store: BlobStore) -> None:
    r = repo(store)
    mail = b"Subject: hello\r\n\r\nbody"
    ref = await r.put_bytes(mail)
    assert len(ref.chunks) == 1
    assert ref.size == len(mail)
    assert ref.sha256 == hashlib.sha256(mail).hexdigest()
    assert await r.read_bytes(ref) == mail
    assert await all_keys(store, "") == [r.chunk_key(ref.chunks[0].name)]
    assert r.chunk_key(ref.chunks[0].name).startswith("tenants/tenant-a/chunks/")


async def test_empty_item(store: BlobStore) -> None:
    r = repo(store)
    ref = await r.put_bytes(b"")
    assert ref.chunks == ()
    assert await r.read_bytes(ref) == b""
    assert [p async for p in r.read(ref)] == []
    assert await all_keys(store, "") == []


async def test_large_stream_round_trips_and_matches_put_bytes(store: BlobStore) -> None:
    data = random.Random(5).randbytes(MORE_THAN_THREE_CHUNKS)
    r = repo(store)
    streamed = await r.put_stream(pieces(data))
    assert len(streamed.chunks) > 3
    assert all(c.size >= MIN_CHUNK for c in streamed.chunks[:-1])
    assert await r.read_bytes(streamed) == data
    again = await repo(store).put_bytes(data)
    assert again == streamed  # same tenant, same content, however it arrives


async def test_put_file(store: BlobStore, tmp_path: Path) -> None:
    data = random.Random(6).randbytes(3 * MiB + 17)
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    r = repo(store)
    ref = await r.put_file(path)
    assert ref == await r.put_bytes(data)
    assert await r.read_bytes(ref) == data


async def test_ranges_match_slices(store: BlobStore) -> None:
    data = random.Random(8).randbytes(6 * MiB)
    r = repo(store)
    ref = await r.put_bytes(data)
    bounds = [c.size for c in ref.chunks]
    first_end = bounds[0]
    rnd = random.Random(1)
    cases: list[tuple[int, int | None]] = [
        (0, 0),
        (0, None),
        (first_end - 1, first_end),
        (first_end, first_end),
        (len(data) - 1, None),
        (10, len(data) + 1000),
    ]
    for _ in range(6):
        lo, hi = sorted(rnd.sample(range(len(data)), 2))
        cases.append((lo, hi))
    for start, end in cases:
        got = b"".join([p async for p in r.read(ref, start=start, end_inclusive=end)])
        assert got == data[start : None if end is None else end + 1], (start, end)


async def test_bad_ranges(store: BlobStore) -> None:
    r = repo(store)
    ref = await r.put_bytes(b"0123456789")
    for start, end in ((5, 4), (-1, 3), (10, None), (10, 20)):
        with pytest.raises(ValueError, match="range"):
            _ = [p async for p in r.read(ref, start=start, end_inclusive=end)]


async def test_dedup_within_and_across_instances(store: BlobStore) -> None:
    data = random.Random(9).randbytes(5 * MiB)
    r = repo(store)
    first = await r.put_bytes(data)
    n = len(first.chunks)
    assert (r.stats.new_chunks, r.stats.deduped_chunks) == (n, 0)
    stored = r.stats.new_stored_bytes
    assert stored > len(data)  # random data does not compress; the envelope adds a little
    await r.put_bytes(data)
    assert (r.stats.new_chunks, r.stats.deduped_chunks) == (n, n)  # cache: no HEAD, no PUT
    assert r.stats.logical_bytes == 2 * len(data)
    fresh = repo(store)  # another worker, empty cache: HEAD finds every chunk
    await fresh.put_stream(pieces(data, seed=3))
    assert (fresh.stats.new_chunks, fresh.stats.deduped_chunks, fresh.stats.new_stored_bytes) == (
        0,
        n,
        0,
    )
    assert len(await all_keys(store, "tenants/")) == n


async def test_repeated_chunk_inside_one_item_is_stored_once(store: BlobStore) -> None:
    block = random.Random(2).randbytes(MIN_CHUNK // 2)
    r = repo(store)
    # A period of 128 KiB has no cut point in it, so the item is cut at the 4 MiB maximum,
    # and every full 4 MiB chunk holds the same bytes.
    ref = await r.put_bytes(block * 72)
    names = [c.name for c in ref.chunks]
    assert len(set(names)) < len(names)
    assert r.stats.new_chunks == len(set(names))
    assert len(await all_keys(store, "tenants/")) == len(set(names))
    assert await r.read_bytes(ref) == block * 72


async def test_two_workers_writing_the_same_content_make_one_object_each(store: BlobStore) -> None:
    data = random.Random(12).randbytes(4 * MiB)
    small = b"the same mail body" * 10
    workers = [repo(store) for _ in range(3)]
    refs = await asyncio.gather(
        *(w.put_bytes(data) for w in workers), *(w.put_bytes(small) for w in workers)
    )
    assert len({ref.to_json()["sha256"] for ref in refs[:3]}) == 1
    assert refs[0] == refs[1] == refs[2]
    distinct = {c.name for ref in refs for c in ref.chunks}
    assert sum(w.stats.new_chunks for w in workers) == len(distinct)
    keys = await all_keys(store, "tenants/")
    assert len(keys) == len(distinct)
    for w in workers:
        assert await w.read_bytes(refs[0]) == data


async def test_compressible_content_is_stored_smaller(store: BlobStore) -> None:
    text = ("Dear team, the quarterly figures are attached. " * 40_000).encode()
    r = repo(store)
    await r.put_bytes(text)
    assert r.stats.new_stored_bytes < len(text) / 20


async def test_catalog_round_trip(store: BlobStore) -> None:
    r = repo(store)
    key = await r.put_catalog("2026-11-27/items.jsonl.zst", b'{"id": 1}\n' * 1000)
    assert key == "tenants/tenant-a/catalog/2026-11-27/items.jsonl.zst"
    assert await r.get_catalog("2026-11-27/items.jsonl.zst") == b'{"id": 1}\n' * 1000
    with pytest.raises(BlobNotFound):
        await r.get_catalog("missing")
    with pytest.raises(ValueError, match="invalid blob key"):
        await r.put_catalog("../escape", b"x")


async def test_tampered_chunk_is_detected(store: BlobStore) -> None:
    r = repo(store)
    ref = await r.put_bytes(b"important" * 1000)
    key = r.chunk_key(ref.chunks[0].name)
    blob = bytearray(await store.get(key))
    blob[len(blob) // 2] ^= 0x40
    await store.put(key, bytes(blob))
    with pytest.raises(IntegrityError):
        await repo(store).read_bytes(ref)


async def test_swapped_chunks_are_detected(store: BlobStore) -> None:
    r = repo(store)
    a = await r.put_bytes(b"invoice for client A" * 100)
    b = await r.put_bytes(b"invoice for client B" * 100)
    key_a, key_b = r.chunk_key(a.chunks[0].name), r.chunk_key(b.chunks[0].name)
    await store.put(key_b, await store.get(key_a))  # B's name now holds A's (valid) blob
    with pytest.raises(IntegrityError):
        await repo(store).read_bytes(b)


async def test_missing_chunk_is_not_found(store: BlobStore) -> None:
    r = repo(store)
    ref = await r.put_bytes(b"soon gone")
    await r.delete_chunk(ref.chunks[0].name)
    with pytest.raises(BlobNotFound):
        await r.read_bytes(ref)


async def test_failing_source_stores_no_reference_and_leaves_no_tasks(store: BlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield random.Random(1).randbytes(9 * MiB)
        raise ConnectionError("download cut")

    r = repo(store)
    with pytest.raises(ConnectionError, match="download cut"):
        await r.put_stream(broken())
    assert r.stats.logical_bytes == 0
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_list_chunk_names(store: BlobStore) -> None:
    r = repo(store)
    ref = await r.put_bytes(random.Random(4).randbytes(2 * MiB))
    await r.put_catalog("c", b"not a chunk")
    assert sorted([n async for n in r.list_chunk_names()]) == sorted({c.name for c in ref.chunks})


def test_content_ref_json_round_trip_and_validation() -> None:
    with pytest.raises(ValueError, match="size"):
        ContentRef(size=5, sha256="a" * 64, chunks=())
    ref = ContentRef.from_json({"v": 1, "size": 3, "sha256": "b" * 64, "chunks": [["c" * 64, 3]]})
    assert ContentRef.from_json(ref.to_json()) == ref
    assert ContentRef.from_json(json.dumps(ref.to_json())) == ref
    for bad in (
        {"v": 2, "size": 0, "sha256": "b" * 64, "chunks": []},
        {"size": 0},
        {"v": 1, "size": 3, "sha256": "b" * 64, "chunks": [["C" * 64, 3]]},
        {"v": 1, "size": 3, "sha256": "xyz", "chunks": [["c" * 64, 3]]},
        {"v": 1, "size": 0, "sha256": "b" * 64, "chunks": [["c" * 64, 0]]},
    ):
        with pytest.raises(ValueError, match=r"ContentRef|malformed"):
            ContentRef.from_json(bad)


@pytest.mark.parametrize("tenant", ["", "a/b", "../x", "x" * 200, "sp ace"])
def test_tenant_ids_that_would_break_the_prefix_are_refused(tenant: str, tmp_path: Path) -> None:
    from safekeep.storage.localstore import LocalBlobStore

    with pytest.raises(ValueError, match="tenant_id"):
        TenantRepository(LocalBlobStore(tmp_path), tenant_id=tenant, data_key=b"k" * 32)


async def test_reader_stopping_early_leaves_no_fetches_behind(store: BlobStore) -> None:
    r = repo(store)
    ref = await r.put_bytes(random.Random(30).randbytes(MORE_THAN_THREE_CHUNKS))
    assert len(ref.chunks) > 3
    reader = r.read(ref)
    first = await anext(reader)
    assert first == (await r.read_bytes(ref))[: len(first)]
    await reader.aclose()  # a client that hung up after the first chunk
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
