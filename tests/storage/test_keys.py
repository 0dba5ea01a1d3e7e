import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeep.storage import KeyUnwrapError, generate_data_key, unwrap_data_key, wrap_data_key
from safekeep.storage.keys import derive_tenant_keys

MASTER = bytes(range(32))


def test_generated_keys_are_32_random_bytes() -> None:
    keys = {generate_data_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(len(k) == 32 for k in keys)


def test_wrap_round_trip_and_fresh_nonce_each_time() -> None:
    dk = generate_data_key()
    w1 = wrap_data_key(MASTER, dk, tenant_id="t1")
    w2 = wrap_data_key(MASTER, dk, tenant_id="t1")
    assert w1 != w2
    assert dk not in w1
    assert unwrap_data_key(MASTER, w1, tenant_id="t1") == dk
    assert unwrap_data_key(MASTER, w2, tenant_id="t1") == dk


def test_wrapped_key_is_bound_to_its_tenant() -> None:
    wrapped = wrap_data_key(MASTER, generate_data_key(), tenant_id="tenant-a")
    with pytest.raises(KeyUnwrapError):
        unwrap_data_key(MASTER, wrapped, tenant_id="tenant-b")


def test_wrong_master_key_is_refused() -> None:
    wrapped = wrap_data_key(MASTER, generate_data_key(), tenant_id="t")
    with pytest.raises(KeyUnwrapError):
        unwrap_data_key(os.urandom(32), wrapped, tenant_id="t")


@given(position=st.integers(min_value=0, max_value=60), flip=st.integers(1, 255))
def test_any_altered_byte_is_refused(position: int, flip: int) -> None:
    wrapped = bytearray(wrap_data_key(MASTER, b"k" * 32, tenant_id="t"))
    wrapped[position] ^= flip
    with pytest.raises(KeyUnwrapError):
        unwrap_data_key(MASTER, bytes(wrapped), tenant_id="t")


@pytest.mark.parametrize("cut", [0, 1, 20, 60])
def test_truncated_or_padded_is_refused(cut: int) -> None:
    wrapped = wrap_data_key(MASTER, b"k" * 32, tenant_id="t")
    with pytest.raises(KeyUnwrapError):
        unwrap_data_key(MASTER, wrapped[:cut], tenant_id="t")
    with pytest.raises(KeyUnwrapError):
        unwrap_data_key(MASTER, wrapped + b"\x00", tenant_id="t")


def test_bad_key_lengths_and_empty_tenant_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="master_key"):
        wrap_data_key(b"short", b"k" * 32, tenant_id="t")
    with pytest.raises(ValueError, match="data_key"):
        wrap_data_key(MASTER, b"k" * 31, tenant_id="t")
    with pytest.raises(ValueError, match="tenant_id"):
        wrap_data_key(MASTER, b"k" * 32, tenant_id="")


def test_derived_keys_differ_by_purpose_and_tenant_and_hide_in_repr() -> None:
    dk = b"d" * 32
    a = derive_tenant_keys(dk, tenant_id="a")
    b = derive_tenant_keys(dk, tenant_id="b")
    assert len({a.name_key, a.encryption_key, b.name_key, b.encryption_key, dk}) == 5
    assert a.chunker_seed != b.chunker_seed
    assert 0 < a.chunker_seed < 2**63
    assert derive_tenant_keys(dk, tenant_id="a") == a  # deterministic: dedup needs it
    assert a.name_key.hex() not in repr(a)
