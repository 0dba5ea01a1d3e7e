import os

import pytest

from safekeep.storage import IntegrityError
from safekeep.storage.envelope import BLOB_VERSION, OVERHEAD_BYTES, BlobCipher

KEY = "tenants/t/chunks/ab/abcdef"


def test_round_trip_compresses_and_hides_plaintext() -> None:
    cipher = BlobCipher(os.urandom(32))
    text = b"Quarterly figures for the board, confidential. " * 2000
    blob = cipher.seal(KEY, text)
    assert blob[0] == BLOB_VERSION
    assert len(blob) < len(text) // 10  # zstd ran before encryption
    assert b"confidential" not in blob
    assert cipher.open(KEY, blob) == text


def test_incompressible_data_costs_only_the_envelope_and_a_frame_header() -> None:
    cipher = BlobCipher(os.urandom(32))
    data = os.urandom(1 << 20)
    blob = cipher.seal(KEY, data)
    assert len(blob) - len(data) < OVERHEAD_BYTES + 64
    assert cipher.open(KEY, blob) == data


def test_empty_plaintext_round_trips() -> None:
    cipher = BlobCipher(os.urandom(32))
    assert cipher.open(KEY, cipher.seal(KEY, b"")) == b""


def test_equal_plaintext_seals_differently() -> None:
    cipher = BlobCipher(os.urandom(32))
    assert cipher.seal(KEY, b"same") != cipher.seal(KEY, b"same")


def test_blob_is_bound_to_its_object_key() -> None:
    cipher = BlobCipher(os.urandom(32))
    blob = cipher.seal(KEY, b"payload")
    with pytest.raises(IntegrityError, match="authentication"):
        cipher.open("tenants/t/chunks/ab/abcdee", blob)
    with pytest.raises(IntegrityError):
        cipher.open("tenants/other/chunks/ab/abcdef", blob)


def test_wrong_key_tamper_truncation_and_unknown_version_are_detected() -> None:
    cipher = BlobCipher(os.urandom(32))
    blob = cipher.seal(KEY, b"payload" * 100)
    with pytest.raises(IntegrityError):
        BlobCipher(os.urandom(32)).open(KEY, blob)
    for i in (1, 13, len(blob) // 2, len(blob) - 1):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError):
            cipher.open(KEY, bytes(bad))
    with pytest.raises(IntegrityError, match="truncated"):
        cipher.open(KEY, blob[: OVERHEAD_BYTES - 1])
    with pytest.raises(IntegrityError):
        cipher.open(KEY, blob[:-1])
    with pytest.raises(IntegrityError, match="version"):
        cipher.open(KEY, bytes([BLOB_VERSION + 1]) + blob[1:])
