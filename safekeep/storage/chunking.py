"""Content-defined chunking of a byte stream with bounded memory.

Sizes: min 256 KiB / avg 1 MiB / max 4 MiB (pyfastcdc's effective mean is avg + min, about
1.25 MiB). Why these:
- Mail bodies and most attachments are under 256 KiB, so they stay one blob (one PUT, one GET)
  and dedup as a whole.
- About one object per MiB keeps request counts and per-object overheads of S3 (PUT cost, a
  listing entry, ~30 bytes of envelope) small: a 1 TB tenant is roughly 800k objects.
- An edit in a large Office file or PST re-uploads only the ~1 MiB around it.
- 4 MiB caps what one chunk holds in memory while it is hashed, compressed and encrypted.

pyfastcdc (FastCDC 2020, Cython, nogil, about 5 GB/s here) cuts buffers, not async streams, so
this class keeps a bounded window: it accumulates pieces, cuts when at least ``window`` bytes
are pending, and keeps back the last cut, which may only end because the window ended. Every
cut that ends before the window's end is exactly the cut a whole-file pass would make (FastCDC
looks only at bytes between the chunk's start and its cut), so results do not depend on how the
stream was split into pieces; a property test holds us to that.

A caller that knows where the content's own pieces begin and end (a MIME message's attachments)
adds forced cuts with ``CutPoints``: each stretch between two forced cuts is chunked on its own,
so the same attachment mailed in two messages gives the same chunks, whatever surrounds it.
Forced cuts only move boundaries; the bytes stored are the same bytes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Protocol

from pyfastcdc import FastCDC

MIN_CHUNK = 256 * 1024
AVG_CHUNK = 1024 * 1024
MAX_CHUNK = 4 * 1024 * 1024
# ``CutPoints.settled`` once no forced cut can come any more.
ALL_SETTLED = 1 << 62


class CutPoints(Protocol):
    """Offsets where chunks of a stream must end, found while the stream passes by."""

    def feed(self, piece: bytes) -> list[int]:
        """Read the next piece; return the forced cuts it settled, in increasing order."""
        ...

    def finish(self) -> list[int]:
        """The stream has ended: return the remaining forced cuts."""
        ...

    @property
    def settled(self) -> int:
        """No forced cut will come before this offset (an offset of the whole stream)."""
        ...


class KnownCuts:
    """``CutPoints`` known before the stream starts (all settled at once)."""

    def __init__(self, offsets: Iterable[int]) -> None:
        self._offsets = sorted(offsets)

    def feed(self, piece: bytes) -> list[int]:
        offsets, self._offsets = self._offsets, []
        return offsets

    def finish(self) -> list[int]:
        return self.feed(b"")

    @property
    def settled(self) -> int:
        return ALL_SETTLED


class ContentChunker:
    """Feed pieces with ``append``; call ``cut`` when ``ready``; call ``cut(final=True)`` at EOF.

    Not thread-safe, but ``cut`` may run in a worker thread while the event loop waits: the CPU
    work (gear hashing) releases the GIL.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        min_size: int = MIN_CHUNK,
        avg_size: int = AVG_CHUNK,
        max_size: int = MAX_CHUNK,
        window: int | None = None,
    ) -> None:
        self._cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size, seed=seed)
        self.min_size = min_size
        self.max_size = max_size
        self.window = window if window is not None else 2 * max_size
        if self.window < max_size:
            raise ValueError("window must hold at least one maximal chunk")
        self._tail = b""
        self._tail_at = 0  # where ``_tail`` starts in the whole stream
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._forced: list[int] = []  # forced cuts not yet reached, in the whole stream

    @property
    def buffered(self) -> int:
        return len(self._tail) + self._pending_len

    @property
    def ready(self) -> bool:
        return self.buffered >= self.window

    def ready_until(self, settled: int) -> bool:
        """``ready``, and at least half a window of the bytes held is before ``settled``:
        a cut would settle chunks, not only copy the window again."""
        return self.ready and settled - self._tail_at >= self.window // 2

    def append(self, piece: bytes | bytearray | memoryview) -> None:
        if piece:
            self._pending.append(bytes(piece))
            self._pending_len += len(piece)

    def force(self, offsets: Iterable[int]) -> None:
        """Chunks must also end at these offsets of the whole stream (not before any byte
        already cut); they may come in any order and repeat."""
        for offset in offsets:
            if offset < self._tail_at:
                raise ValueError(f"cut at {offset} is before bytes already cut ({self._tail_at})")
            i = bisect.bisect_left(self._forced, offset)
            if i == len(self._forced) or self._forced[i] != offset:
                self._forced.insert(i, offset)

    def cut(self, *, final: bool = False, settled: int | None = None) -> list[bytes]:
        """Return the chunks that are settled; with ``final`` also the rest, leaving nothing.
        ``settled`` (an offset of the whole stream) holds back every chunk that ends past it:
        a forced cut may still come there."""
        data = b"".join([self._tail, *self._pending])
        self._pending.clear()
        self._pending_len = 0
        base = self._tail_at
        limit = len(data) if final or settled is None else min(len(data), settled - base)
        stops = [f - base for f in self._forced if base < f < base + len(data)]
        chunks: list[bytes] = []
        consumed = 0
        start = 0
        for stop in [*stops, len(data)]:
            whole = stop < len(data) or final  # a forced cut or the stream's end closes it
            for chunk in self._cdc.cut_buf(memoryview(data)[start:stop]):
                end = start + chunk.offset + chunk.length
                if (end == stop and not whole) or end > limit:
                    break  # may yet end elsewhere: wait for more bytes
                chunks.append(bytes(chunk.data))
                consumed = end
            if consumed != stop:
                break
            start = stop
        self._tail = data[consumed:]
        self._tail_at = base + consumed
        self._forced = [f for f in self._forced if f > self._tail_at]
        return chunks


def chunk_bytes(data: bytes, *, seed: int = 0) -> list[bytes]:
    """Cut a whole buffer at once (the reference the streaming path must agree with)."""
    chunker = ContentChunker(seed=seed)
    chunker.append(data)
    return chunker.cut(final=True)
