import random

from hypothesis import given, settings
from hypothesis import strategies as st

from safekeep.storage.chunking import MAX_CHUNK, MIN_CHUNK, ContentChunker, chunk_bytes

SMALL = {"min_size": 64, "avg_size": 256, "max_size": 1024}


def stream_chunks(data: bytes, cuts: list[int], **params: int) -> list[bytes]:
    """Feed ``data`` split at ``cuts``, cutting whenever the chunker says it is ready."""
    chunker = ContentChunker(**params)
    out: list[bytes] = []
    last = 0
    for c in [*sorted(cuts), len(data)]:
        chunker.append(data[last:c])
        last = c
        if chunker.ready:
            out += chunker.cut()
        assert chunker.buffered < chunker.window + len(data)
    return out + chunker.cut(final=True)


def whole_chunks(data: bytes, **params: int) -> list[bytes]:
    chunker = ContentChunker(**params)
    chunker.append(data)
    return chunker.cut(final=True)


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(0, 20_000),
    content_seed=st.integers(0, 2**32),
    runs=st.booleans(),
    cuts=st.lists(st.integers(0, 20_000), max_size=40),
    seed=st.integers(0, 2**62),
)
def test_streaming_cuts_equal_whole_buffer_cuts(
    length: int, content_seed: int, runs: bool, cuts: list[int], seed: int
) -> None:
    rnd = random.Random(content_seed)
    # Random bytes, or long runs of few values (like sparse files and padded formats).
    data = bytes(rnd.choice(b"\x00\x01a") for _ in range(length)) if runs else rnd.randbytes(length)
    cuts = [c for c in cuts if c <= len(data)]
    streamed = stream_chunks(data, cuts, seed=seed, **SMALL)
    assert streamed == whole_chunks(data, seed=seed, **SMALL)
    assert b"".join(streamed) == data
    assert all(len(c) <= SMALL["max_size"] for c in streamed)
    assert all(len(c) >= SMALL["min_size"] for c in streamed[:-1])


def test_production_sizes_on_random_data_agree_when_streamed() -> None:
    rnd = random.Random(7)
    data = rnd.randbytes(24 * 1024 * 1024)
    cuts = sorted(rnd.randrange(len(data)) for _ in range(60))
    streamed = stream_chunks(data, cuts, seed=99)
    assert streamed == chunk_bytes(data, seed=99)
    sizes = [len(c) for c in streamed]
    assert all(MIN_CHUNK <= s <= MAX_CHUNK for s in sizes[:-1])
    assert 0.8 * 1024 * 1024 < sum(sizes) / len(sizes) < 2 * 1024 * 1024


def test_an_insertion_changes_only_nearby_chunks() -> None:
    rnd = random.Random(3)
    data = rnd.randbytes(16 * 1024 * 1024)
    edited = data[: 8 * 1024 * 1024] + b"inserted paragraph" + data[8 * 1024 * 1024 :]
    before, after = chunk_bytes(data, seed=5), chunk_bytes(edited, seed=5)
    assert len(set(after) - set(before)) <= 2


def test_seed_moves_boundaries() -> None:
    data = random.Random(11).randbytes(8 * 1024 * 1024)
    a = [len(c) for c in chunk_bytes(data, seed=1)]
    b = [len(c) for c in chunk_bytes(data, seed=12345678901)]
    assert a != b


def test_small_items_stay_whole() -> None:
    item = random.Random(1).randbytes(MIN_CHUNK)
    assert chunk_bytes(item) == [item]
    assert chunk_bytes(b"") == []
