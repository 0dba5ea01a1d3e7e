"""Secrets at rest (client secrets of MSP-owned Entra apps, webhook signing secrets).

Sealed with AES-256-GCM under a key derived from the master key, bound to what they belong to
(the associated data), so a sealed value copied onto another row does not open.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"


class SecretUnsealError(Exception):
    pass


def derive_key(master_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master_key)


def seal(master_key: bytes, plaintext: str, *, context: str) -> bytes:
    key = derive_key(master_key, b"safekeep/secrets/v1")
    nonce = os.urandom(12)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())


def unseal(master_key: bytes, sealed: bytes, *, context: str) -> str:
    if not sealed.startswith(_VERSION) or len(sealed) < 29:
        raise SecretUnsealError("unknown sealed secret format")
    key = derive_key(master_key, b"safekeep/secrets/v1")
    try:
        return AESGCM(key).decrypt(sealed[1:13], sealed[13:], context.encode()).decode()
    except InvalidTag as exc:
        raise SecretUnsealError("sealed secret does not open with this key and context") from exc


def unseal_with_any(master_keys: Sequence[bytes], sealed: bytes, *, context: str) -> str:
    """Open a sealed secret with the first master key that fits (see ``unwrap_with_any``)."""
    for master_key in master_keys:
        try:
            return unseal(master_key, sealed, context=context)
        except SecretUnsealError:
            continue
    raise SecretUnsealError("sealed secret does not open with any master key and this context")
