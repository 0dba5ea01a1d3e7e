"""QuickXorHash, the only content hash OneDrive for Business reports.

The algorithm XORs each byte into a 160-bit ring at bit offset ``(i * 11) mod 160`` and
finally XORs the little-endian length into the last 64 bits. Byte ``i`` and byte ``i + 160``
land on the same offset, so whole 160-byte blocks can be folded together with big-integer
XOR first (done in C) and only the folded block is spread bit by bit; that keeps hashing a
100 MB generated file well under a second.
"""

from __future__ import annotations

import base64

_WIDTH = 160
_SHIFT = 11
_BLOCK = _WIDTH  # bytes that share offsets
_MASK = (1 << _WIDTH) - 1


class QuickXorHash:
    """Incremental QuickXorHash with the hashlib-like ``update``/``digest`` interface."""

    def __init__(self) -> None:
        self._folded = 0  # XOR of all complete 160-byte blocks, as a big-endian integer
        self._pending = b""  # bytes not yet forming a complete block
        self._length = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        self._length += len(data)
        if self._pending:
            data = self._pending + data
        whole = len(data) - len(data) % _BLOCK
        folded = self._folded
        step = _BLOCK * 4096
        for start in range(0, whole, step):
            chunk = data[start : min(start + step, whole)]
            folded ^= _fold(chunk)
        self._folded = folded
        self._pending = data[whole:]

    def digest(self) -> bytes:
        block = self._folded.to_bytes(_BLOCK, "big")
        tail = self._pending
        # XOR the partial tail into the folded block (same offsets as a block start).
        merged = bytearray(block)
        for i, b in enumerate(tail):
            merged[i] ^= b
        ring = 0
        for i, b in enumerate(merged):
            if b:
                offset = (i * _SHIFT) % _WIDTH
                ring ^= ((b << offset) | (b >> (_WIDTH - offset))) & _MASK
        out = bytearray(ring.to_bytes(_WIDTH // 8, "little"))
        length = self._length.to_bytes(8, "little")
        for i in range(8):
            out[_WIDTH // 8 - 8 + i] ^= length[i]
        return bytes(out)

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode()


def _fold(chunk: bytes) -> int:
    """XOR every 160-byte block of ``chunk`` (a multiple of 160 bytes) into one integer."""
    n = len(chunk) // _BLOCK
    value = int.from_bytes(chunk, "big")
    bits = _BLOCK * 8
    mask = (1 << bits) - 1
    result = 0
    # Fold halves together; an odd block out is peeled off first, so each level is linear.
    while n > 1:
        if n % 2:
            result ^= value & mask
            value >>= bits
            n -= 1
        half_bits = (n // 2) * bits
        value = (value >> half_bits) ^ (value & ((1 << half_bits) - 1))
        n //= 2
    return result ^ value


def quickxor_b64(data: bytes) -> str:
    h = QuickXorHash()
    h.update(data)
    return h.b64digest()
