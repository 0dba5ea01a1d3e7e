"""QuickXorHash: the content hash OneDrive for Business and SharePoint report for every file
(``file.hashes.quickXorHash``; often the only one), so the one we can verify downloads and
uploads against.

Definition (Microsoft's reference): byte ``i`` of the stream is XORed into a 160-bit ring
register at bit offset ``(11 * i) mod 160``, wrapping round the end; the stream length, as a
little-endian 64-bit integer, is XORed into the last 8 of the 20 result bytes; the result is
sent base64-encoded.

No maintained package implements it (the one on PyPI is an unmaintained C extension without
wheels), so it is written here. Speed: bytes ``i`` and ``i + 160`` fall on the same offset,
so a stream reduces to the XOR of its 160-byte blocks, and only that one folded block is
spread over the ring at the end. numpy XORs the blocks (as rows of twenty 64-bit words) at
about 0.2 ms of CPU per MB, against 4 ms for the big-integer folding used before: for
OneDrive and SharePoint, where most of a tenant's bytes are, that was a fifth of the CPU
budget per MB of a backup.
"""

from __future__ import annotations

import base64

import numpy as np

WIDTH = 160  # bits in the register
SHIFT = 11  # bit distance between consecutive bytes
BLOCK = 160  # bytes after which the offsets repeat (160 * 11 is a multiple of 160)
_RING_MASK = (1 << WIDTH) - 1
_WORDS = BLOCK // 8  # a block as 64-bit words


def _fold_blocks(data: bytes | bytearray | memoryview) -> np.ndarray:
    """XOR of the consecutive 160-byte blocks of ``data`` (its length a multiple of 160),
    as twenty 64-bit words whose bytes, in memory order, are the folded block's."""
    words = np.frombuffer(data, dtype="<u8", count=len(data) // 8)
    return np.bitwise_xor.reduce(words.reshape(-1, _WORDS), axis=0)


class QuickXorHash:
    """Incremental, hashlib-style: ``update`` as bytes arrive, then ``b64digest``."""

    __slots__ = ("_folded", "_length", "_tail")

    def __init__(self, data: bytes = b"") -> None:
        self._folded = np.zeros(_WORDS, dtype="<u8")
        self._tail = b""  # the bytes after the last whole block seen so far
        self._length = 0
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        view = memoryview(data).cast("B")
        self._length += len(view)
        if self._tail:  # complete the pending block first, without copying the rest
            need = BLOCK - len(self._tail)
            self._tail += bytes(view[:need])
            view = view[need:]
            if len(self._tail) < BLOCK:
                return
            self._folded ^= _fold_blocks(self._tail)
            self._tail = b""
        whole = len(view) - len(view) % BLOCK
        if whole:
            self._folded ^= _fold_blocks(view[:whole])
        self._tail = bytes(view[whole:])

    def digest(self) -> bytes:
        block = bytearray(self._folded.tobytes())
        for index, byte in enumerate(self._tail):
            block[index] ^= byte
        ring = 0
        for index, byte in enumerate(block):
            if byte:
                offset = (index * SHIFT) % WIDTH
                ring ^= ((byte << offset) | (byte >> (WIDTH - offset))) & _RING_MASK
        out = bytearray(ring.to_bytes(WIDTH // 8, "little"))
        for index, byte in enumerate(self._length.to_bytes(8, "little")):
            out[WIDTH // 8 - 8 + index] ^= byte
        return bytes(out)

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


def quickxor_b64(data: bytes) -> str:
    return QuickXorHash(data).b64digest()
