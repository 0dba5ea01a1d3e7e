"""Fixtures for the storage tests: the same stores, local and S3, for every contract test.

The S3 side is a real server (SeaweedFS from ``scripts/services``) reached through the shared
fixtures in ``tests/fixtures/services.py``. Instead of their bucket per test (SeaweedFS takes
about two seconds to create one, as it grows volumes for each new bucket), these tests share
one plain and one Object Lock bucket per session, and each test opens its store under a key
prefix of its own: tests stay isolated, and prefix handling is exercised by every S3 test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from safekeep.storage import BlobStore, open_blobstore
from tests.fixtures.services import delete_bucket, unique_name


def _session_bucket(client: Any, *, locked: bool) -> Iterator[str]:
    name = unique_name("sk-storage-locked-" if locked else "sk-storage-")
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=locked)
    yield name
    delete_bucket(client, name)


@pytest.fixture(scope="session")
def storage_bucket(s3_client: Any) -> Iterator[str]:
    yield from _session_bucket(s3_client, locked=False)


@pytest.fixture(scope="session")
def storage_locked_bucket(s3_client: Any) -> Iterator[str]:
    yield from _session_bucket(s3_client, locked=True)


STORE_KINDS = ["file", "s3", "s3-locked"]


def store_url(request: pytest.FixtureRequest, kind: str, tmp: Any) -> tuple[str, str | None]:
    if kind == "file":
        return (tmp / "blobs").as_uri(), None
    endpoint = request.getfixturevalue("s3_endpoint_url")
    locked = kind == "s3-locked"
    bucket = request.getfixturevalue("storage_locked_bucket" if locked else "storage_bucket")
    return f"s3://{bucket}/t-{uuid.uuid4().hex[:12]}", endpoint


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Any
) -> AsyncIterator[BlobStore]:
    url, endpoint = store_url(request, store_kind, tmp_path)
    s = open_blobstore(url, s3_endpoint_url=endpoint)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def raw_versions(client: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """Every version and delete marker of exactly ``key``."""
    page = client.list_object_versions(Bucket=bucket, Prefix=key)
    found = page.get("Versions", []) + page.get("DeleteMarkers", [])
    return [v for v in found if v["Key"] == key]
