"""Blob store failures reach Prometheus; answers such as a missing key do not count."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from safekeep.storage.blobstore import open_blobstore
from safekeep.storage.errors import BlobStoreUnavailable
from safekeep.storage.s3store import S3BlobStore


def errors(kind: str) -> float:
    return REGISTRY.get_sample_value("safekeep_blobstore_errors_total", {"kind": kind}) or 0.0


async def test_an_unreachable_store_counts_as_unavailable() -> None:
    before = errors("unavailable")
    store = S3BlobStore(
        "bucket", endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout=0.5
    )
    with pytest.raises(BlobStoreUnavailable):
        await store.open()
    await store.close()
    assert errors("unavailable") == before + 1


async def test_a_missing_key_is_an_answer_not_an_error(
    s3_endpoint_url: str, s3_bucket: str
) -> None:
    store = open_blobstore(f"s3://{s3_bucket}/metrics", s3_endpoint_url=s3_endpoint_url)
    await store.open()
    try:
        before = (errors("unavailable"), errors("failed"))
        assert await store.head("no/such/key") is None
        assert not await store.exists("no/such/key")
        assert (errors("unavailable"), errors("failed")) == before
    finally:
        await store.close()
