"""Per-tenant data keys, wrapped by the deployment's master key, and the subkeys derived from them.

Each tenant has its own random 32-byte data key. Only its wrapped form is stored (in the
tenant row); the master key never touches tenant data directly, so rotating the master key
means re-wrapping small keys, not re-encrypting the bucket. The wrapping is AES-256-GCM with
the tenant id as associated data: a wrapped key copied onto another tenant's row does not open.

From a data key we derive, with HKDF-SHA256 and distinct ``info`` labels, one key per purpose
(blob names, blob encryption, chunk boundaries): a key is never used for two jobs, and a name
reveals nothing about the encryption key or about another tenant's names for equal content.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from safekeep.storage.errors import KeyUnwrapError

KEY_BYTES = 32
_WRAP_VERSION = 1
_NONCE_BYTES = 12
_WRAP_AAD = b"safekeep/data-key/v1\x00"
_WRAPPED_LEN = 1 + _NONCE_BYTES + KEY_BYTES + 16


def generate_data_key() -> bytes:
    """A fresh tenant data key from the OS CSPRNG."""
    return os.urandom(KEY_BYTES)


def _check_key(name: str, key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise ValueError(f"{name} must be {KEY_BYTES} bytes")


def _check_tenant(tenant_id: str) -> bytes:
    if not tenant_id:
        raise ValueError("tenant_id must not be empty")
    return _WRAP_AAD + tenant_id.encode()


def wrap_data_key(master_key: bytes, data_key: bytes, *, tenant_id: str) -> bytes:
    """Encrypt ``data_key`` under ``master_key``, bound to ``tenant_id``.

    Layout: version byte, 12-byte random nonce, ciphertext with 16-byte tag (61 bytes).
    The version byte leaves room for another layout; rotation needs no key id (each row is
    tried against the current key, then the previous ones).
    """
    _check_key("master_key", master_key)
    _check_key("data_key", data_key)
    aad = _check_tenant(tenant_id)
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(bytes(master_key)).encrypt(nonce, bytes(data_key), aad)
    return bytes([_WRAP_VERSION]) + nonce + sealed


def unwrap_data_key(master_key: bytes, wrapped: bytes, *, tenant_id: str) -> bytes:
    """Open a wrapped data key; ``KeyUnwrapError`` on any mismatch, never a partial key."""
    _check_key("master_key", master_key)
    aad = _check_tenant(tenant_id)
    if len(wrapped) != _WRAPPED_LEN or wrapped[0] != _WRAP_VERSION:
        raise KeyUnwrapError("wrapped data key has an unknown format")
    nonce = bytes(wrapped[1 : 1 + _NONCE_BYTES])
    try:
        return AESGCM(bytes(master_key)).decrypt(nonce, bytes(wrapped[1 + _NONCE_BYTES :]), aad)
    except InvalidTag:
        raise KeyUnwrapError(
            "data key does not open: wrong master key, wrong tenant or tampered"
        ) from None


def unwrap_with_any(master_keys: Sequence[bytes], wrapped: bytes, *, tenant_id: str) -> bytes:
    """Open a wrapped data key with the first master key that fits.

    While a master key is being rotated (docs/operations.md), some rows are wrapped under the
    new key and some still under the old one; the current key is tried first.
    """
    for master_key in master_keys:
        try:
            return unwrap_data_key(master_key, wrapped, tenant_id=tenant_id)
        except KeyUnwrapError:
            continue
    raise KeyUnwrapError("data key does not open: no master key fits, wrong tenant or tampered")


@dataclass(frozen=True, repr=False)
class TenantKeys:
    """The purpose-specific keys of one tenant (``repr`` hides them so logs never carry keys)."""

    name_key: bytes
    encryption_key: bytes
    chunker_seed: int

    def __repr__(self) -> str:
        return "TenantKeys(<redacted>)"


def _hkdf(data_key: bytes, label: bytes, tenant_id: str, length: int = KEY_BYTES) -> bytes:
    info = b"safekeep/v1/" + label + b"\x00" + tenant_id.encode()
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(data_key)


def derive_tenant_keys(data_key: bytes, *, tenant_id: str) -> TenantKeys:
    """Derive the name, encryption and chunker keys of a tenant.

    The tenant id is part of every ``info`` so that even two tenants handed the same data key
    by mistake would not share blob names or keys. The chunker seed keys FastCDC's gear table:
    chunk boundaries (visible as blob sizes) then depend on a secret, which blunts
    fingerprinting a known file from the sizes of its blobs.
    """
    _check_key("data_key", data_key)
    _check_tenant(tenant_id)
    seed_bytes = _hkdf(data_key, b"chunker-seed", tenant_id, 8)
    # pyfastcdc shifts the seed left by one inside a uint64: keep it below 2**63, never 0
    # (0 means "the public default table").
    seed = (int.from_bytes(seed_bytes, "big") & ((1 << 63) - 1)) | 1
    return TenantKeys(
        name_key=_hkdf(data_key, b"blob-names", tenant_id),
        encryption_key=_hkdf(data_key, b"blob-encryption", tenant_id),
        chunker_seed=seed,
    )
