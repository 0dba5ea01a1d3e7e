"""Object Lock on a real bucket (SeaweedFS): retention set on write, deletes refused, extensions.

SeaweedFS 4.48 implements what we use: ObjectLockEnabledForBucket at creation, the lock
configuration query, per-object COMPLIANCE retention on PutObject and CreateMultipartUpload,
refusal (403 AccessDenied) to delete a retained version or shorten its date, PutObjectRetention
to extend it, and conditional If-None-Match writes.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from safekeep.storage import BlobLocked, BlobStore, TenantRepository, open_blobstore
from safekeep.storage.s3store import S3BlobStore
from tests.storage.conftest import raw_versions


@pytest.fixture
async def locked(s3_endpoint_url: str, storage_locked_bucket: str) -> AsyncIterator[S3BlobStore]:
    store = open_blobstore(
        f"s3://{storage_locked_bucket}/lock-{uuid.uuid4().hex[:10]}",
        s3_endpoint_url=s3_endpoint_url,
    )
    assert isinstance(store, S3BlobStore)
    await store.open()
    assert store.supports_object_lock
    yield store
    await store.close()


def later(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


def versions(client: Any, store: S3BlobStore, key: str) -> list[dict[str, Any]]:
    return raw_versions(client, store.bucket, store.prefix + key)


async def test_retained_blob_cannot_be_deleted(locked: S3BlobStore, s3_client: Any) -> None:
    until = later(hours=1)
    await locked.put("tenants/t/chunks/aa/x", b"ciphertext", retain_until=until)
    info = await locked.head("tenants/t/chunks/aa/x")
    assert info is not None and info.retain_until is not None
    assert abs((info.retain_until - until).total_seconds()) < 1.5
    with pytest.raises(BlobLocked):
        await locked.delete("tenants/t/chunks/aa/x")
    assert await locked.get("tenants/t/chunks/aa/x") == b"ciphertext"
    found = versions(s3_client, locked, "tenants/t/chunks/aa/x")
    assert len(found) == 1 and "Size" in found[0]  # one data version, no delete marker


async def test_our_credentials_cannot_shorten_or_bypass(
    locked: S3BlobStore, s3_client: Any
) -> None:
    """What an attacker holding our keys would try: all of it is refused by the server."""
    await locked.put("k", b"v", retain_until=later(hours=1))
    full = locked.prefix + "k"
    version = versions(s3_client, locked, "k")[0]["VersionId"]
    with pytest.raises(s3_client.exceptions.ClientError):
        s3_client.put_object_retention(
            Bucket=locked.bucket,
            Key=full,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later(minutes=1)},
        )
    with pytest.raises(s3_client.exceptions.ClientError):
        s3_client.delete_object(
            Bucket=locked.bucket, Key=full, VersionId=version, BypassGovernanceRetention=True
        )
    assert await locked.get("k") == b"v"


async def test_extend_only_ever_extends(locked: S3BlobStore) -> None:
    first = later(hours=1)
    await locked.put("e", b"v", retain_until=first)
    await locked.extend_retention("e", later(hours=3))
    info = await locked.head("e")
    assert info is not None and info.retain_until is not None
    assert info.retain_until > later(hours=2, minutes=59)
    await locked.extend_retention("e", later(hours=2))  # earlier: a no-op, not an error
    after = await locked.head("e")
    assert after is not None and after.retain_until == info.retain_until


async def test_unretained_objects_delete_with_all_versions(
    locked: S3BlobStore, s3_client: Any
) -> None:
    await locked.put("plain", b"one")
    await locked.put("plain", b"two")  # versioned bucket: two versions now
    assert len(versions(s3_client, locked, "plain")) == 2
    await locked.delete("plain")
    assert versions(s3_client, locked, "plain") == []
    assert not await locked.exists("plain")


async def test_delete_succeeds_once_retention_has_passed(
    locked: S3BlobStore, s3_client: Any
) -> None:
    until = later(seconds=2)
    await locked.put("brief", b"v", retain_until=until)
    with pytest.raises(BlobLocked):
        await locked.delete("brief")
    # Retention dates have whole seconds on the server: wait for the next one to pass.
    await asyncio.sleep((until - datetime.now(UTC)).total_seconds() + 1.2)
    await locked.delete("brief")
    assert versions(s3_client, locked, "brief") == []


async def test_multipart_writer_sets_retention(locked: S3BlobStore) -> None:
    async with locked.writer("exports/e.zip", retain_until=later(hours=1)) as w:
        await w.write(b"z" * (6 * 1024 * 1024))
        await w.write(b"tail")
    info = await locked.head("exports/e.zip")
    assert info is not None and info.size == 6 * 1024 * 1024 + 4
    assert info.retain_until is not None
    with pytest.raises(BlobLocked):
        await locked.delete("exports/e.zip")


async def test_repository_extends_retention_of_deduplicated_chunks(locked: S3BlobStore) -> None:
    key = b"d" * 32
    content = bytes(range(256)) * 5000
    first = TenantRepository(locked, tenant_id="t1", data_key=key, retain_until=later(hours=1))
    ref = await first.put_bytes(content)
    chunk_keys = [first.chunk_key(c.name) for c in ref.chunks]

    async def retention() -> list[datetime]:
        infos = [await locked.head(k) for k in chunk_keys]
        return [i.retain_until for i in infos if i is not None and i.retain_until is not None]

    assert all(d < later(hours=1, minutes=1) for d in await retention())
    longer = TenantRepository(locked, tenant_id="t1", data_key=key, retain_until=later(hours=5))
    assert await longer.put_bytes(content) == ref
    assert longer.stats.new_chunks == 0
    extended = await retention()
    assert len(extended) == len(chunk_keys)
    assert all(d > later(hours=4, minutes=59) for d in extended)
    shorter = TenantRepository(locked, tenant_id="t1", data_key=key, retain_until=later(hours=2))
    await shorter.put_bytes(content)
    assert await retention() == extended
    with pytest.raises(BlobLocked):
        await shorter.delete_chunk(ref.chunks[0].name)
    assert await shorter.read_bytes(ref) == content


async def test_stores_without_object_lock_report_it(store: BlobStore, store_kind: str) -> None:
    assert store.supports_object_lock is (store_kind == "s3-locked")
