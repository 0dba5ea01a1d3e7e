import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safekeep.storage.chunking import (
    MAX_CHUNK,
    MIN_CHUNK,
    ContentChunker,
    CutPoints,
    KnownCuts,
    chunk_bytes,
)

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


class _Lagging:
    """``CutPoints`` that reveal each forced cut only once the stream is ``lag`` bytes past
    it, as a parser does that decides a part's cuts after reading into it."""

    def __init__(self, offsets: list[int], lag: int) -> None:
        self.offsets, self.lag, self.seen = sorted(set(offsets)), lag, 0

    def _due(self, upto: int) -> list[int]:
        due = [o for o in self.offsets if o <= upto]
        self.offsets = self.offsets[len(due) :]
        return due

    def feed(self, piece: bytes) -> list[int]:
        self.seen += len(piece)
        return self._due(self.seen - self.lag)

    def finish(self) -> list[int]:
        return self._due(self.seen)

    @property
    def settled(self) -> int:
        return max(0, self.seen - self.lag)


def forced_stream_chunks(
    data: bytes, pieces: list[int], cuts: CutPoints, **params: int
) -> list[bytes]:
    chunker = ContentChunker(**params)
    out: list[bytes] = []
    last = 0
    for c in [*sorted(pieces), len(data)]:
        chunker.append(data[last:c])
        chunker.force(cuts.feed(data[last:c]))
        last = c
        if chunker.ready_until(cuts.settled):
            out += chunker.cut(settled=cuts.settled)
    chunker.force(cuts.finish())
    return out + chunker.cut(final=True)


def whole_forced_chunks(data: bytes, forced: list[int], **params: int) -> list[bytes]:
    """The reference: each stretch between forced cuts chunked on its own."""
    bounds = sorted({0, len(data), *(f for f in forced if 0 < f < len(data))})
    return [c for a, b in itertools.pairwise(bounds) for c in whole_chunks(data[a:b], **params)]


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(0, 20_000),
    content_seed=st.integers(0, 2**32),
    pieces=st.lists(st.integers(0, 20_000), max_size=40),
    forced=st.lists(st.integers(0, 20_000), max_size=12),
    lag=st.integers(0, 3_000),
    seed=st.integers(0, 2**62),
)
def test_forced_cuts_streamed_equal_each_stretch_chunked_alone(
    length: int,
    content_seed: int,
    pieces: list[int],
    forced: list[int],
    lag: int,
    seed: int,
) -> None:
    data = random.Random(content_seed).randbytes(length)
    pieces = [p for p in pieces if p <= len(data)]
    forced = [f for f in forced if f <= len(data)]
    streamed = forced_stream_chunks(data, pieces, _Lagging(forced, lag), seed=seed, **SMALL)
    assert streamed == whole_forced_chunks(data, forced, seed=seed, **SMALL)
    assert b"".join(streamed) == data
    ends = set(itertools.accumulate(len(c) for c in streamed))
    assert {f for f in forced if 0 < f < len(data)} <= ends


def test_a_stretch_between_forced_cuts_chunks_alike_wherever_it_lies() -> None:
    rnd = random.Random(5)
    shared = rnd.randbytes(600 * 1024)  # an attachment: under two average chunks
    chunked = []
    for before, after in ((rnd.randbytes(40_000), rnd.randbytes(900)), (b"x" * 7, b"")):
        data = before + shared + after
        cuts = KnownCuts([len(before), len(before) + len(shared)])
        chunked.append(set(forced_stream_chunks(data, [], cuts, seed=8)))
    assert b"".join(sorted(chunked[0] & chunked[1], key=shared.find)) == shared
    # without the forced cuts the two copies share no chunk
    plain = [set(chunk_bytes(b + shared, seed=8)) for b in (rnd.randbytes(40_000), b"x" * 7)]
    assert not plain[0] & plain[1]


def test_a_forced_cut_before_what_was_cut_is_refused() -> None:
    chunker = ContentChunker(**SMALL)
    chunker.append(random.Random(2).randbytes(5_000))
    assert chunker.cut()
    with pytest.raises(ValueError, match="before bytes already cut"):
        chunker.force([10])
