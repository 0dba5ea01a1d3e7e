"""The scale-out blob store: any S3 API (AWS, SeaweedFS, MinIO, Wasabi) through boto3.

boto3 is blocking, so every call runs in this store's own thread pool (one boto3 client,
which is thread-safe, shared by all threads). A private pool rather than ``asyncio.to_thread``
keeps many parallel chunk uploads from starving the small default pool that the rest of the
process (file reads, DNS) relies on, and its size matches the HTTP connection pool.

Object Lock: detected at ``open()`` from the bucket's lock configuration. On such a bucket
objects are written with COMPLIANCE retention, which no credential, ours included, can shorten
or bypass; a delete removes every version of the key, and the store refuses it (``BlobLocked``)
while any version is retained. A plain ``DeleteObject`` would only add a delete marker there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from safekeep.disposition import content_disposition
from safekeep.storage.blobstore import (
    BlobInfo,
    BlobStore,
    check_retention,
    validate_key,
    validate_prefix,
)
from safekeep.storage.errors import (
    BlobLocked,
    BlobNotFound,
    BlobStoreUnavailable,
    StorageError,
)
from safekeep.storage.metrics import BLOBSTORE_ERRORS

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last
DEFAULT_PART_SIZE = 8 * 1024 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}
_UNAVAILABLE = {"NoSuchBucket", "SlowDown", "ServiceUnavailable", "InternalError", "503", "500"}
_PRECONDITION = {"PreconditionFailed", "412"}
_LOCKED = {"AccessDenied", "403", "ObjectLocked"}


_SESSION_LOCK = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    """One boto3 session per process: it caches the parsed service model, which makes each
    further client cheap (a new session re-reads it, a few hundred milliseconds)."""
    return boto3.session.Session()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class S3BlobStore(BlobStore):
    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE",
        max_concurrency: int = 16,
        part_size: int = DEFAULT_PART_SIZE,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 5,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE}")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        if self.prefix:
            validate_key(self.prefix.rstrip("/"))
        self.endpoint_url = endpoint_url
        self.region = region
        self.lock_mode = lock_mode
        self.part_size = part_size
        self.supports_object_lock = False
        self._conditional_writes = True
        self._config = Config(
            region_name=region,
            signature_version="s3v4",
            # Custom endpoints (SeaweedFS, MinIO) rarely have wildcard DNS for buckets.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"mode": "standard", "max_attempts": max_attempts},
            # No CRC32 of every body and answer unless the operation requires one or the call
            # asks (botocore's default since 1.36 computes both): a chunk is sealed with
            # AES-GCM and named by a keyed hash of its content, so a corrupted object fails its
            # own check on read, and some S3-compatible stores refuse the checksum headers.
            # 0.1-0.3 ms of CPU less per 64 KB PUT (against SeaweedFS, out of 1.4-1.7).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_concurrency,
        )
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="blobstore-s3")
        self._client: S3Client | None = None

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    # -- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3BlobStore used before open()")
        return self._client

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a boto3 call in the pool; transport failures become BlobStoreUnavailable."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        except (BotoConnectionError, HTTPClientError) as exc:
            BLOBSTORE_ERRORS.labels("unavailable").inc()
            raise BlobStoreUnavailable(f"S3 endpoint unreachable: {exc}") from exc
        except ClientError as exc:
            if _code(exc) in _UNAVAILABLE or _status(exc) >= 500:
                BLOBSTORE_ERRORS.labels("unavailable").inc()
                raise BlobStoreUnavailable(f"S3 bucket {self.bucket} unavailable: {exc}") from exc
            raise  # the caller decides: a missing key is often an answer, not an error
        except BotoCoreError as exc:
            BLOBSTORE_ERRORS.labels("failed").inc()
            raise StorageError(f"S3 client error: {exc}") from exc

    async def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        """``_run`` for calls whose client errors mean nothing more specific than failure."""
        try:
            return await self._run(fn, **kwargs)
        except ClientError as exc:
            BLOBSTORE_ERRORS.labels("failed").inc()
            raise StorageError(f"S3 {what} failed: {exc}") from exc

    def _full(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _lock_args(self, retain_until: datetime | None) -> dict[str, Any]:
        until = check_retention(retain_until)
        if until is None or not self.supports_object_lock or until <= datetime.now(UTC):
            return {}
        # AWS refuses an Object Lock write without a checksum of its body (or Content-MD5),
        # which the client then sends only when asked for one.
        return {
            "ObjectLockMode": self.lock_mode,
            "ObjectLockRetainUntilDate": until,
            "ChecksumAlgorithm": "CRC32",
        }

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        def make() -> S3Client:
            with _SESSION_LOCK:  # sessions are not thread-safe; clients made from one are
                return _session().client("s3", endpoint_url=self.endpoint_url, config=self._config)

        if self._client is None:
            self._client = await self._run(make)
        await self.ping()
        try:
            conf = await self._run(self.client.get_object_lock_configuration, Bucket=self.bucket)
        except ClientError:
            # ObjectLockConfigurationNotFoundError, or not allowed to ask: either way we
            # cannot rely on retention, so do not claim it.
            self.supports_object_lock = False
        else:
            enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
            self.supports_object_lock = enabled == "Enabled"

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._run(client.close)
        self._executor.shutdown(wait=False)

    async def ping(self) -> None:
        try:
            await self._run(self.client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            raise BlobStoreUnavailable(f"S3 bucket {self.bucket} not usable: {exc}") from exc

    # -- writing --------------------------------------------------------------------------

    async def _put(
        self, key: str, data: bytes, retain_until: datetime | None, content_type: str | None
    ) -> None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key), "Body": data}
        args.update(self._lock_args(retain_until))
        if content_type:
            args["ContentType"] = content_type
        try:
            await self._run(self.client.put_object, **args)
        except ClientError as exc:
            raise StorageError(f"S3 put {key} failed: {exc}") from exc

    async def put_if_absent(
        self, key: str, data: bytes, *, retain_until: datetime | None = None
    ) -> bool:
        """Create only if no object exists (S3 conditional write ``If-None-Match: *``).

        Two writers racing on one chunk: one creates it, the other gets False, and a locked
        bucket does not collect a second version. Stores that do not implement conditional
        writes fall back to HEAD-then-PUT, where a race costs a redundant, equal version.
        """
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key), "Body": data}
        args.update(self._lock_args(retain_until))
        for _attempt in range(5):
            if not self._conditional_writes:
                if await self.exists(key):
                    return False
                await self._call("put", self.client.put_object, **args)
                return True
            try:
                await self._run(self.client.put_object, IfNoneMatch="*", **args)
                return True
            except ClientError as exc:
                code = _code(exc)
                if code in _PRECONDITION or _status(exc) == 412:
                    return False
                if code == "ConditionalRequestConflict" or _status(exc) == 409:
                    # A concurrent conditional write is settling (AWS asks callers to retry).
                    await asyncio.sleep(0.05 * (_attempt + 1))
                    continue
                if code == "NotImplemented" or _status(exc) == 501:
                    self._conditional_writes = False
                    continue
                raise StorageError(f"S3 put {key} failed: {exc}") from exc
        raise StorageError(f"S3 put {key}: conditional write kept conflicting")

    def writer(
        self,
        key: str,
        *,
        content_type: str | None = None,
        retain_until: datetime | None = None,
    ) -> contextlib.AbstractAsyncContextManager[_S3Writer]:
        return _S3Writer(self, self._full(key), content_type, self._lock_args(retain_until))

    # -- reading --------------------------------------------------------------------------

    async def head(self, key: str) -> BlobInfo | None:
        try:
            res = await self._run(self.client.head_object, Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND or _status(exc) == 404:
                return None
            raise StorageError(f"S3 head {key} failed: {exc}") from exc
        until = res.get("ObjectLockRetainUntilDate")
        return BlobInfo(
            size=int(res["ContentLength"]),
            retain_until=until.astimezone(UTC) if until is not None else None,
        )

    async def exists(self, key: str) -> bool:
        return await self.head(key) is not None

    async def size(self, key: str) -> int:
        info = await self.head(key)
        if info is None:
            raise BlobNotFound(key)
        return info.size

    def _get_sync(self, full: str, range_header: str | None) -> bytes:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if range_header:
            args["Range"] = range_header
        res = self.client.get_object(**args)
        with contextlib.closing(res["Body"]):
            return res["Body"].read()

    async def get(self, key: str) -> bytes:
        try:
            return await self._run(self._get_sync, self._full(key), None)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND or _status(exc) == 404:
                raise BlobNotFound(key) from None
            raise StorageError(f"S3 get {key} failed: {exc}") from exc

    async def get_range(self, key: str, start: int, end_inclusive: int) -> bytes:
        if start < 0 or end_inclusive < start:
            raise ValueError(f"invalid range {start}-{end_inclusive}")
        try:
            return await self._run(
                self._get_sync, self._full(key), f"bytes={start}-{end_inclusive}"
            )
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND or _status(exc) == 404:
                raise BlobNotFound(key) from None
            if _code(exc) == "InvalidRange" or _status(exc) == 416:
                if await self.exists(key):
                    return b""  # start at or past the end, like reading a file past EOF
                raise BlobNotFound(key) from None
            raise StorageError(f"S3 get {key} failed: {exc}") from exc

    async def list(self, prefix: str) -> AsyncIterator[str]:
        full_prefix = self.prefix + validate_prefix(prefix)
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full_prefix}
            if token:
                args["ContinuationToken"] = token
            page = await self._run(self.client.list_objects_v2, **args)
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix) :]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    # -- deleting and retention -----------------------------------------------------------

    async def _versions(self, full: str) -> tuple[str, ...]:
        """Every version id of exactly this key (data versions first, then delete markers)."""
        data: list[str] = []
        markers: list[str] = []
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
        while True:
            page = await self._run(self.client.list_object_versions, **args)
            data += [v["VersionId"] for v in page.get("Versions", []) if v["Key"] == full]
            markers += [m["VersionId"] for m in page.get("DeleteMarkers", []) if m["Key"] == full]
            if not page.get("IsTruncated"):
                return (*data, *markers)
            args["KeyMarker"] = page.get("NextKeyMarker")
            args["VersionIdMarker"] = page.get("NextVersionIdMarker")

    async def delete(self, key: str) -> None:
        full = self._full(key)
        if not self.supports_object_lock:
            try:
                await self._run(self.client.delete_object, Bucket=self.bucket, Key=full)
            except ClientError as exc:
                raise StorageError(f"S3 delete {key} failed: {exc}") from exc
            return
        for version_id in await self._versions(full):
            try:
                await self._run(
                    self.client.delete_object, Bucket=self.bucket, Key=full, VersionId=version_id
                )
            except ClientError as exc:
                if _code(exc) in _LOCKED or _status(exc) == 403:
                    raise BlobLocked(key) from exc
                raise StorageError(f"S3 delete {key} failed: {exc}") from exc

    async def extend_retention(self, key: str, retain_until: datetime) -> None:
        """Move the retention date later; an earlier date is a no-op, never a shortening."""
        until = check_retention(retain_until)
        assert until is not None
        info = await self.head(key)
        if info is None:
            raise BlobNotFound(key)
        if not self.supports_object_lock or until <= datetime.now(UTC):
            return
        if info.retain_until is not None and info.retain_until >= until:
            return
        try:
            await self._run(
                self.client.put_object_retention,
                Bucket=self.bucket,
                Key=self._full(key),
                Retention={"Mode": self.lock_mode, "RetainUntilDate": until},
            )
        except ClientError as exc:
            raise StorageError(f"S3 retention of {key} not extended: {exc}") from exc

    async def presigned_get_url(
        self, key: str, expires_in: int, filename: str | None = None
    ) -> str | None:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        return await self._run(
            self.client.generate_presigned_url,
            "get_object",
            Params=params,
            ExpiresIn=expires_in,
        )


class _S3Writer:
    """Streams one object: a single PUT if it stays under a part, else a multipart upload.

    Memory is one part (``part_size``) whatever the object's size; the upload is completed only
    on a clean exit and aborted on any error, so a half-written object never becomes visible.
    """

    def __init__(
        self, store: S3BlobStore, full: str, content_type: str | None, lock: dict[str, Any]
    ) -> None:
        self._store = store
        self._full = full
        self._content_type = content_type
        self._lock = lock
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.bytes_written = 0

    async def __aenter__(self) -> _S3Writer:
        return self

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data
        self.bytes_written += len(data)
        while len(self._buf) >= self._store.part_size:
            part = bytes(self._buf[: self._store.part_size])
            del self._buf[: self._store.part_size]
            await self._upload_part(part)

    async def _upload_part(self, part: bytes) -> None:
        s = self._store
        if self._upload_id is None:
            args: dict[str, Any] = {
                "Bucket": s.bucket,
                "Key": self._full,
                "ChecksumAlgorithm": "CRC32",
                **self._lock,
            }
            if self._content_type:
                args["ContentType"] = self._content_type
            res = await s._call("create multipart upload", s.client.create_multipart_upload, **args)
            self._upload_id = res["UploadId"]
        number = len(self._parts) + 1
        res_part = await s._call(
            "upload part",
            s.client.upload_part,
            Bucket=s.bucket,
            Key=self._full,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=part,
            ChecksumAlgorithm="CRC32",
        )
        entry: dict[str, Any] = {"ETag": res_part["ETag"], "PartNumber": number}
        if res_part.get("ChecksumCRC32"):
            entry["ChecksumCRC32"] = res_part["ChecksumCRC32"]
        self._parts.append(entry)

    async def _finish(self) -> None:
        s = self._store
        if self._upload_id is None:
            args: dict[str, Any] = {
                "Bucket": s.bucket,
                "Key": self._full,
                "Body": bytes(self._buf),
                **self._lock,
            }
            if self._content_type:
                args["ContentType"] = self._content_type
            await s._call("put", s.client.put_object, **args)
            return
        if self._buf:
            await self._upload_part(bytes(self._buf))
            self._buf.clear()
        await s._call(
            "complete multipart upload",
            s.client.complete_multipart_upload,
            Bucket=s.bucket,
            Key=self._full,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    async def _abort(self) -> None:
        s = self._store
        if self._upload_id is not None:
            with contextlib.suppress(ClientError, StorageError):
                await s._run(
                    s.client.abort_multipart_upload,
                    Bucket=s.bucket,
                    Key=self._full,
                    UploadId=self._upload_id,
                )
        self._buf.clear()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            await asyncio.shield(self._abort())
            return
        try:
            await self._finish()
        except BaseException:
            await asyncio.shield(self._abort())
            raise
