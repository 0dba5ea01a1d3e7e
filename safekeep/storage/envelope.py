"""The on-disk format of every blob Safekeep writes: compressed, then encrypted, bound to its name.

Layout (version 1)::

    0x01 | nonce (12 bytes) | AES-256-GCM( zstd(plaintext) ) with 16-byte tag

The associated data is the object key (``tenants/<id>/chunks/ab/ab...``), so a blob copied or
renamed to another key, or into another tenant's prefix, fails authentication on read.
Compression happens before encryption because ciphertext does not compress. Nonces are random:
under one tenant key that is safe for 2**32 blobs (several PiB at our chunk sizes).
"""

from __future__ import annotations

import os
import threading

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safekeep.storage.errors import IntegrityError

BLOB_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = 1 + NONCE_BYTES
OVERHEAD_BYTES = HEADER_BYTES + TAG_BYTES
ZSTD_LEVEL = 3
_AAD_PREFIX = b"safekeep/blob/v1\x00"


class BlobCipher:
    """Seals and opens blobs under one encryption key; safe to share between threads.

    zstd contexts are not thread-safe, so each thread keeps its own (they are reused because
    building one per blob costs more than compressing a small mail item).
    """

    def __init__(self, encryption_key: bytes, *, zstd_level: int = ZSTD_LEVEL) -> None:
        if len(encryption_key) != 32:
            raise ValueError("encryption_key must be 32 bytes")
        self._aead = AESGCM(bytes(encryption_key))
        self._level = zstd_level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp: zstandard.ZstdCompressor | None = getattr(self._local, "comp", None)
        if comp is None:
            comp = zstandard.ZstdCompressor(level=self._level, write_content_size=True)
            self._local.comp = comp
        return comp

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dec: zstandard.ZstdDecompressor | None = getattr(self._local, "dec", None)
        if dec is None:
            dec = zstandard.ZstdDecompressor()
            self._local.dec = dec
        return dec

    def seal(self, object_key: str, plaintext: bytes | memoryview) -> bytes:
        compressed = self._compressor().compress(plaintext)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, compressed, _AAD_PREFIX + object_key.encode())
        return bytes([BLOB_VERSION]) + nonce + sealed

    def open(self, object_key: str, blob: bytes) -> bytes:
        if len(blob) < OVERHEAD_BYTES:
            raise IntegrityError(f"blob {object_key} is truncated")
        if blob[0] != BLOB_VERSION:
            raise IntegrityError(f"blob {object_key} has unknown format version {blob[0]}")
        view = memoryview(blob)
        try:
            compressed = self._aead.decrypt(
                view[1:HEADER_BYTES], view[HEADER_BYTES:], _AAD_PREFIX + object_key.encode()
            )
        except InvalidTag:
            raise IntegrityError(
                f"blob {object_key} fails authentication: tampered, moved or wrong key"
            ) from None
        try:
            return self._decompressor().decompress(compressed)
        except zstandard.ZstdError as exc:  # authentic but undecodable: a bug of ours
            raise IntegrityError(f"blob {object_key} does not decompress: {exc}") from exc
