"""Tenant isolation and confidentiality, checked on the raw bytes of every object in the store."""

import os
import random
from pathlib import Path
from typing import Any

import pytest

from safekeep.storage import BlobNotFound, BlobStore, IntegrityError, TenantRepository
from safekeep.storage.envelope import BlobCipher
from safekeep.storage.keys import derive_tenant_keys
from safekeep.storage.localstore import LocalBlobStore
from safekeep.storage.s3store import S3BlobStore

MARKER = b"SAFEKEEP-PLAINTEXT-MARKER-4f1c9e"
KEY_A, KEY_B = os.urandom(32), os.urandom(32)


def tenant(store: BlobStore, name: str) -> TenantRepository:
    return TenantRepository(store, tenant_id=name, data_key=KEY_A if name == "tenant-a" else KEY_B)


def raw_objects(store: BlobStore, request: pytest.FixtureRequest) -> dict[str, bytes]:
    """Every byte the backend holds for this store, read behind the store's back: on disk
    including temporaries, on S3 every version of every object under the store's prefix."""
    if isinstance(store, LocalBlobStore):
        return {
            str(p.relative_to(store.root)): p.read_bytes()
            for p in Path(store.root).rglob("*")
            if p.is_file()
        }
    assert isinstance(store, S3BlobStore)
    client: Any = request.getfixturevalue("s3_client")
    found: dict[str, bytes] = {}
    pages = client.get_paginator("list_object_versions").paginate(
        Bucket=store.bucket, Prefix=store.prefix
    )
    for page in pages:
        for v in page.get("Versions", []):
            body = client.get_object(Bucket=store.bucket, Key=v["Key"], VersionId=v["VersionId"])
            found[f"{v['Key']}@{v['VersionId']}"] = body["Body"].read()
    return found


async def test_no_plaintext_marker_anywhere_in_the_bucket(
    store: BlobStore, request: pytest.FixtureRequest
) -> None:
    rnd = random.Random(21)
    a = tenant(store, "tenant-a")
    mail = b"From: ceo@contoso.com\r\nSubject: " + MARKER + b"\r\n\r\n" + MARKER * 3
    prose = (b"Minutes of the board meeting. " + MARKER + b" ") * 50_000  # compresses well
    big = b"".join(rnd.randbytes(200_000) + MARKER for _ in range(30))  # spans many chunks
    refs = [await a.put_bytes(mail), await a.put_bytes(prose), await a.put_bytes(big)]
    await a.put_catalog("export.jsonl", b'{"subject": "' + MARKER + b'"}\n' * 100)
    objects = raw_objects(store, request)
    assert len(objects) >= 5
    for name, data in objects.items():
        assert MARKER not in data, name
        assert MARKER.decode() not in name
        assert MARKER.lower() not in data.lower()
    assert MARKER in await a.read_bytes(refs[2])  # the marker went in, and comes back out


async def test_equal_content_gets_unrelated_names_per_tenant(store: BlobStore) -> None:
    content = random.Random(3).randbytes(3 * 1024 * 1024)
    ref_a = await tenant(store, "tenant-a").put_bytes(content)
    ref_b = await tenant(store, "tenant-b").put_bytes(content)
    assert ref_a.sha256 == ref_b.sha256  # the reference's own hash is plaintext's, kept in our DB
    assert not {c.name for c in ref_a.chunks} & {c.name for c in ref_b.chunks}
    assert [c.size for c in ref_a.chunks] != [c.size for c in ref_b.chunks]  # keyed boundaries
    keys_a = [k async for k in store.list("tenants/tenant-a/")]
    keys_b = [k async for k in store.list("tenants/tenant-b/")]
    assert len(keys_a) == len(ref_a.chunks) and len(keys_b) == len(ref_b.chunks)
    assert sorted([k async for k in store.list("")]) == sorted(keys_a + keys_b)


async def test_nothing_under_one_tenant_opens_with_another_tenants_key(store: BlobStore) -> None:
    a = tenant(store, "tenant-a")
    await a.put_bytes(b"mailbox of tenant A " * 1000)
    await a.put_bytes(random.Random(1).randbytes(2 * 1024 * 1024))
    await a.put_catalog("catalog.json", b"{}")
    b_keys = derive_tenant_keys(KEY_B, tenant_id="tenant-b")
    b_cipher = BlobCipher(b_keys.encryption_key)
    a_keys = derive_tenant_keys(KEY_A, tenant_id="tenant-a")
    keys = [k async for k in store.list("tenants/tenant-a/")]
    assert len(keys) >= 3
    for key in keys:
        blob = await store.get(key)
        with pytest.raises(IntegrityError):
            b_cipher.open(key, blob)  # B's key, A's object
        moved = key.replace("tenants/tenant-a/", "tenants/tenant-b/")
        with pytest.raises(IntegrityError):
            BlobCipher(a_keys.encryption_key).open(moved, blob)  # A's blob moved under B
        BlobCipher(a_keys.encryption_key).open(key, blob)  # and it is a real, readable blob


async def test_another_tenants_repository_cannot_read_a_reference(store: BlobStore) -> None:
    a, b = tenant(store, "tenant-a"), tenant(store, "tenant-b")
    ref = await a.put_bytes(b"confidential" * 100)
    with pytest.raises(BlobNotFound):
        await b.read_bytes(ref)  # B looks only under its own prefix
    for c in ref.chunks:  # copy A's blobs to where B would look for those names
        await store.put(b.chunk_key(c.name), await store.get(a.chunk_key(c.name)))
    with pytest.raises(IntegrityError):
        await b.read_bytes(ref)
