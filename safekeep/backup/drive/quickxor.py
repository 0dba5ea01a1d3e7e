"""QuickXorHash: the content hash OneDrive for Business and SharePoint report for every file
(``file.hashes.quickXorHash``; often the only one), so the one we can verify downloads and
uploads against.

Definition (Microsoft's reference): byte ``i`` of the stream is XORed into a 160-bit ring
register at bit offset ``(11 * i) mod 160``, wrapping round the end; the stream length, as a
little-endian 64-bit integer, is XORed into the last 8 of the 20 result bytes; the result is
sent base64-encoded.

No maintained package implements it (the one on PyPI is an unmaintained C extension without
wheels), so it is written here. Speed: bytes ``i`` and ``i + 160`` fall on the same offset,
so a stream reduces to the XOR of its 160-byte blocks (done on big integers, in C) and only
that one folded block is spread over the ring at the end. That hashes about as fast as the
download arrives.
"""

from __future__ import annotations

import base64

WIDTH = 160  # bits in the register
SHIFT = 11  # bit distance between consecutive bytes
BLOCK = 160  # bytes after which the offsets repeat (160 * 11 is a multiple of 160)
_RING_MASK = (1 << WIDTH) - 1
_BLOCK_BITS = BLOCK * 8
_BLOCK_MASK = (1 << _BLOCK_BITS) - 1
_SLICE = BLOCK * 8192  # fold at most ~1.3 MB per big-integer conversion


def _fold_blocks(data: bytes | memoryview) -> int:
    """XOR of the consecutive 160-byte blocks of ``data`` (its length a multiple of 160),
    as a big-endian integer whose first byte is the block's byte 0."""
    blocks = len(data) // BLOCK
    value = int.from_bytes(data, "big")
    folded = 0
    while blocks > 1:
        if blocks % 2:
            folded ^= value & _BLOCK_MASK  # peel the last block off
            value >>= _BLOCK_BITS
            blocks -= 1
        half_bits = (blocks // 2) * _BLOCK_BITS
        value = (value >> half_bits) ^ (value & ((1 << half_bits) - 1))
        blocks //= 2
    return folded ^ value


class QuickXorHash:
    """Incremental, hashlib-style: ``update`` as bytes arrive, then ``b64digest``."""

    __slots__ = ("_folded", "_length", "_tail")

    def __init__(self, data: bytes = b"") -> None:
        self._folded = 0
        self._tail = b""  # the bytes after the last whole block seen so far
        self._length = 0
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._length += len(data)
        buf = self._tail + bytes(data) if self._tail else bytes(data)
        whole = len(buf) - len(buf) % BLOCK
        view = memoryview(buf)
        for start in range(0, whole, _SLICE):
            self._folded ^= _fold_blocks(view[start : min(start + _SLICE, whole)])
        self._tail = buf[whole:]

    def digest(self) -> bytes:
        block = bytearray(self._folded.to_bytes(BLOCK, "big"))
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
