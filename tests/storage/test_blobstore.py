"""One contract, three stores: a local folder, an S3 bucket, an S3 bucket with Object Lock."""

import asyncio
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from safekeep.storage import BlobNotFound, BlobStore, BlobStoreUnavailable, open_blobstore
from safekeep.storage.localstore import LocalBlobStore
from safekeep.storage.s3store import S3BlobStore
from tests.storage.conftest import store_url


async def test_put_get_exists_size_head(store: BlobStore) -> None:
    assert not await store.exists("a/b/c")
    assert await store.head("a/b/c") is None
    await store.put("a/b/c", b"hello world", content_type="text/plain")
    assert await store.exists("a/b/c")
    assert await store.get("a/b/c") == b"hello world"
    assert await store.size("a/b/c") == 11
    info = await store.head("a/b/c")
    assert info is not None
    assert info.size == 11
    assert info.retain_until is None
    await store.put("a/b/c", b"replaced")
    assert await store.get("a/b/c") == b"replaced"


async def test_empty_object(store: BlobStore) -> None:
    await store.put("empty", b"")
    assert await store.get("empty") == b""
    assert await store.size("empty") == 0
    assert await store.get_range("empty", 0, 10) == b""


async def test_missing_keys_raise_blob_not_found(store: BlobStore) -> None:
    for call in (store.get("nope"), store.size("nope"), store.get_range("nope", 0, 1)):
        with pytest.raises(BlobNotFound) as info:
            await call
        assert info.value.key == "nope"
    await store.put("dir/file", b"x")
    with pytest.raises(BlobNotFound):
        await store.get("dir")  # a "directory" is not an object
    assert not await store.exists("dir")


async def test_ranges(store: BlobStore) -> None:
    data = bytes(range(256)) * 40
    await store.put("r", data)
    assert await store.get_range("r", 0, 0) == data[:1]
    assert await store.get_range("r", 100, 5000) == data[100:5001]
    assert await store.get_range("r", len(data) - 3, len(data) + 100) == data[-3:]
    assert await store.get_range("r", len(data), len(data) + 5) == b""
    with pytest.raises(ValueError, match="range"):
        await store.get_range("r", 5, 4)
    with pytest.raises(ValueError, match="range"):
        await store.get_range("r", -1, 4)


async def test_delete_is_idempotent(store: BlobStore) -> None:
    await store.put("d/x", b"1")
    await store.delete("d/x")
    assert not await store.exists("d/x")
    with pytest.raises(BlobNotFound):
        await store.get("d/x")
    await store.delete("d/x")
    await store.delete("never/existed")


async def test_list_is_prefix_scoped(store: BlobStore) -> None:
    """Listing order is the backend's: byte order on AWS and locally, directory-wise on
    SeaweedFS; callers must not depend on it, so only the sets are compared."""
    keys = ["t/a/1", "t/a-b", "t/a/2", "t/ab/x", "t/b", "t/a/sub/deep", "u/other", "t/Z"]
    for k in keys:
        await store.put(k, b"v")
    listed = [k async for k in store.list("t/")]
    assert sorted(listed) == sorted(k for k in keys if k.startswith("t/"))
    assert len(listed) == len(set(listed))
    assert sorted([k async for k in store.list("t/a")]) == [
        "t/a-b",
        "t/a/1",
        "t/a/2",
        "t/a/sub/deep",
        "t/ab/x",
    ]
    assert sorted([k async for k in store.list("t/a/")]) == ["t/a/1", "t/a/2", "t/a/sub/deep"]
    assert [k async for k in store.list("nothing/")] == []
    assert sorted([k async for k in store.list("")]) == sorted(keys)


async def test_put_if_absent_creates_once(store: BlobStore) -> None:
    assert await store.put_if_absent("p/k", b"first") is True
    assert await store.put_if_absent("p/k", b"second") is False
    assert await store.get("p/k") == b"first"


async def test_racing_creators_make_one_object(store: BlobStore) -> None:
    payloads = [f"writer-{i}".encode() * 1000 for i in range(5)]
    results = await asyncio.gather(*(store.put_if_absent("race/k", p) for p in payloads))
    assert sorted(results) == [False] * 4 + [True]
    winner = payloads[results.index(True)]
    assert await store.get("race/k") == winner
    assert [k async for k in store.list("race/")] == ["race/k"]


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "a/../b", "../x", "a/./b", "trail/", "a\\b", "a/.tmp-x", "a\x00b"]
)
async def test_unsafe_keys_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.put(key, b"x")


async def test_writer_streams_large_objects(store: BlobStore) -> None:
    rnd = random.Random(1)
    pieces = [rnd.randbytes(rnd.randrange(1, 3 * 1024 * 1024)) for _ in range(8)]
    async with store.writer("w/big", content_type="application/zip") as w:
        for p in pieces:
            await w.write(p)
        assert w.bytes_written == sum(map(len, pieces))
    assert await store.get("w/big") == b"".join(pieces)


async def test_writer_small_object_and_empty(store: BlobStore) -> None:
    async with store.writer("w/small") as w:
        await w.write(b"tiny")
    assert await store.get("w/small") == b"tiny"
    async with store.writer("w/empty"):
        pass
    assert await store.get("w/empty") == b""


async def test_writer_error_leaves_nothing(
    store: BlobStore, request: pytest.FixtureRequest
) -> None:
    async def write_then_fail() -> None:
        async with store.writer("w/broken") as w:
            await w.write(os.urandom(6 * 1024 * 1024))  # past one S3 part: a multipart upload
            await w.write(b"more")
            raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        await write_then_fail()
    assert not await store.exists("w/broken")
    assert [k async for k in store.list("w/")] == []
    if isinstance(store, S3BlobStore):
        raw = request.getfixturevalue("s3_client")
        uploads = raw.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
        assert uploads.get("Uploads", []) == []


async def test_retention_is_ignored_without_object_lock(store: BlobStore) -> None:
    until = datetime.now(UTC) + timedelta(hours=1)
    await store.put("ret/k", b"x", retain_until=until)
    info = await store.head("ret/k")
    assert info is not None
    if store.supports_object_lock:
        assert info.retain_until is not None
        assert abs((info.retain_until - until).total_seconds()) < 2
    else:
        assert info.retain_until is None
        await store.extend_retention("ret/k", until + timedelta(days=1))
        await store.delete("ret/k")
        assert not await store.exists("ret/k")
    with pytest.raises(ValueError, match="timezone"):
        await store.put("ret/naive", b"x", retain_until=datetime.now())


async def test_presigned_url(store: BlobStore) -> None:
    await store.put("exports/e.zip", b"zip bytes")
    url = await store.presigned_get_url("exports/e.zip", 60, filename="Säles report.zip")
    if isinstance(store, LocalBlobStore):
        assert url is None
        return
    assert url is not None
    async with httpx.AsyncClient() as client:
        res = await client.get(url)
    assert res.status_code == 200
    assert res.content == b"zip bytes"
    assert "filename*=UTF-8''S%C3%A4les%20report.zip" in res.headers["content-disposition"]


async def test_ping(store: BlobStore) -> None:
    await store.ping()


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


async def test_local_store_crash_leftovers_are_invisible(tmp_path: Path) -> None:
    store = open_blobstore(tmp_path.as_uri())
    await store.open()
    await store.put("tenants/t/chunks/aa/k1", b"whole")
    leftover = tmp_path / "tenants/t/chunks/aa/.tmp-deadbeef"
    leftover.write_bytes(b"half a blob")
    assert [k async for k in store.list("tenants/")] == ["tenants/t/chunks/aa/k1"]
    assert temp_files(tmp_path) == [leftover]
    await store.close()


async def test_local_ping_fails_when_root_vanishes(tmp_path: Path) -> None:
    store = open_blobstore((tmp_path / "root").as_uri())
    await store.open()
    (tmp_path / "root").rmdir()
    with pytest.raises(BlobStoreUnavailable):
        await store.ping()
    await store.close()


async def test_s3_unreachable_endpoint_is_unavailable() -> None:
    store = S3BlobStore(
        "bucket", endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout=0.5
    )
    with pytest.raises(BlobStoreUnavailable):
        await store.open()
    await store.close()


async def test_s3_missing_bucket_is_unavailable(s3_endpoint_url: str) -> None:
    store = open_blobstore("s3://no-such-bucket-here", s3_endpoint_url=s3_endpoint_url)
    with pytest.raises(BlobStoreUnavailable):
        await store.open()
    await store.close()


async def test_object_lock_detection(
    s3_endpoint_url: str, s3_bucket: str, s3_locked_bucket: str, tmp_path: Path
) -> None:
    found: dict[str, Any] = {}
    for name, url in (
        ("plain", f"s3://{s3_bucket}"),
        ("locked", f"s3://{s3_locked_bucket}/x/y"),
        ("local", tmp_path.as_uri()),
    ):
        store = open_blobstore(url, s3_endpoint_url=s3_endpoint_url)
        await store.open()
        found[name] = store.supports_object_lock
        await store.close()
    assert found == {"plain": False, "locked": True, "local": False}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file://relative/path", "absolute"),
        ("file:relative", "absolute"),
        ("s3://", "bucket"),
        ("gs://bucket", "unsupported"),
        ("/just/a/path", "unsupported"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_blobstore(url)


def test_s3_url_prefix_is_parsed() -> None:
    store = open_blobstore("s3://bkt/some/prefix/")
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("bkt", "some/prefix/")


async def test_local_listing_is_byte_ordered(tmp_path: Path) -> None:
    store = open_blobstore(tmp_path.as_uri())
    await store.open()
    keys = ["t/a/1", "t/a-b", "t/a/2", "t/ab/x", "t/b", "t/a/sub/deep", "t/Z", "t/a0"]
    for k in keys:
        await store.put(k, b"v")
    assert [k async for k in store.list("t/")] == sorted(keys)
    await store.close()


@pytest.mark.parametrize("kind", ["s3", "s3-locked"])
async def test_s3_writes_carry_no_checksum_the_operation_does_not_require(
    request: pytest.FixtureRequest, kind: str, tmp_path: Path
) -> None:
    # A CRC32 of every body costs CPU on each chunk written, and some S3-compatible stores
    # refuse its headers; a chunk's own seal and keyed name already catch a corrupted one.
    url, endpoint = store_url(request, kind, tmp_path)
    store = open_blobstore(url, s3_endpoint_url=endpoint)
    await store.open()
    assert isinstance(store, S3BlobStore)
    sent: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        sent.append({k.lower(): str(v) for k, v in request.headers.items()})

    store.client.meta.events.register("before-send.s3", record)
    try:
        await store.put("a", b"alpha")
        assert await store.put_if_absent("b", b"beta" * 1000)
        async with store.writer("c") as writer:
            await writer.write(b"gamma")
        assert await store.get("b") == b"beta" * 1000
        plain, sent[:] = list(sent), []
        # AWS refuses an Object Lock write without one: those carry a CRC32.
        until = datetime.now(UTC) + timedelta(hours=1)
        await store.put("d", b"delta", retain_until=until)
        assert await store.put_if_absent("e", b"epsilon", retain_until=until)
        locked = list(sent)
    finally:
        await store.close()
    writes = [h for h in plain if "content-length" in h and h["content-length"] != "0"]
    assert len(writes) >= 3
    assert not [k for h in plain for k in h if k.startswith("x-amz-checksum-")]
    assert not [h for h in plain if "x-amz-sdk-checksum-algorithm" in h]
    if kind == "s3-locked":
        assert len(locked) == 2
        assert all("x-amz-checksum-crc32" in h for h in locked)
    else:  # retention asked of a bucket without Object Lock is ignored, checksum included
        assert not [k for h in locked for k in h if k.startswith("x-amz-checksum-")]
