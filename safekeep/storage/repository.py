"""Content-addressed, encrypted storage of one tenant's items under ``tenants/{tenant_id}/``.

Write path: bytes are cut by FastCDC (keyed per tenant), each chunk is named by
HMAC-SHA256(tenant name key, chunk), and stored at ``chunks/<2 hex>/<name>`` only if that
name is not there yet: equal content is stored once per tenant, while another tenant's name
for the same content is unrelated. A chunk blob is zstd-compressed then AES-256-GCM-encrypted
with its object key as associated data (see ``envelope``). The ``ContentRef`` returned lists
the chunks in order; callers save it in a row only after ``put_*`` returns, which is after
every blob is durable.

Memory is bounded whatever the item size: the chunker window (8 MiB) plus at most
``upload_buffer_bytes`` of chunks in flight on write, ``read_ahead`` chunks on read.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import itertools
import json
import re
from collections import OrderedDict, deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Mapping,
)
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from safekeep.storage.blobstore import BlobInfo, BlobStore, check_retention, validate_key
from safekeep.storage.chunking import MIN_CHUNK, ContentChunker, CutPoints, KnownCuts
from safekeep.storage.envelope import BlobCipher
from safekeep.storage.errors import IntegrityError
from safekeep.storage.keys import derive_tenant_keys

# Up to this size, hashing and sealing run on the event loop: a hop to a thread costs about
# 50 us of CPU and a loop wake-up, measured against sealing 64 KiB (15 us) and 256 KiB (70 us
# on incompressible bytes; about 0.5 ms on text) inline. It is also the minimum chunk size, so
# every item stored as one blob stays inline and skips the chunker.
INLINE_CPU_LIMIT = MIN_CHUNK
# Hashing, chunking, compression and encryption of larger buffers release the GIL: a pool of
# their own lets one worker use a second core for them, and keeps them from queuing behind
# other blocking work sent to the loop's default executor (text extraction, DNS).
CPU_THREADS = 2
UPLOADS_AT_ONCE = 16  # a repository's chunk uploads in flight, unless told otherwise
FILE_READ_SIZE = 1024 * 1024
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAME = re.compile(r"[0-9a-f]{64}")
_REF_VERSION = 1
T = TypeVar("T")
_cpu_pool: ThreadPoolExecutor | None = None


def _cpu_executor() -> ThreadPoolExecutor:
    global _cpu_pool
    if _cpu_pool is None:
        _cpu_pool = ThreadPoolExecutor(CPU_THREADS, thread_name_prefix="safekeep-storage-cpu")
    return _cpu_pool


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run GIL-releasing CPU work (hashing, chunking, zstd, AES-GCM) in the storage pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_cpu_executor(), functools.partial(fn, *args))


@dataclass(frozen=True)
class ChunkRef:
    name: str
    size: int  # plaintext bytes


@dataclass(frozen=True)
class ContentRef:
    """Where an item's bytes are: kept in a JSON column, meaningless without the tenant key."""

    size: int
    sha256: str
    chunks: tuple[ChunkRef, ...]

    def __post_init__(self) -> None:
        if self.size != sum(c.size for c in self.chunks):
            raise ValueError("ContentRef size does not match its chunks")
        if any(c.size <= 0 or not _NAME.fullmatch(c.name) for c in self.chunks):
            raise ValueError("ContentRef has a malformed chunk")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError("ContentRef sha256 must be 64 lowercase hex digits")

    def to_json(self) -> dict[str, Any]:
        """Compact, JSON-ready form: a 1 GB file is about 800 pairs."""
        return {
            "v": _REF_VERSION,
            "size": self.size,
            "sha256": self.sha256,
            "chunks": [[c.name, c.size] for c in self.chunks],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | str | bytes) -> ContentRef:
        data = json.loads(value) if isinstance(value, str | bytes) else value
        try:
            if data["v"] != _REF_VERSION:
                raise ValueError(f"unknown ContentRef version {data['v']!r}")
            chunks = tuple(ChunkRef(str(n), int(s)) for n, s in data["chunks"])
            return cls(size=int(data["size"]), sha256=str(data["sha256"]), chunks=chunks)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed ContentRef: {exc}") from exc


@dataclass
class PutStats:
    logical_bytes: int = 0  # plaintext bytes handed to put_*
    new_chunks: int = 0  # blobs this instance created
    new_stored_bytes: int = 0  # bytes of those blobs (compressed + encrypted)
    deduped_chunks: int = 0  # chunks already present (or written concurrently by another)


class InFlight:
    """Bounds chunk uploads in flight by count and by bytes, shared by all puts of a repository.

    S3 latency, not bandwidth, limits small items, so many of them should be in flight at
    once; large chunks are limited by memory. A count alone cannot serve both. Waiters are
    served in order; one upload is always admitted, whatever its size.
    """

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max(1, max_count)
        self.max_bytes = max_bytes
        self._count = 0
        self._bytes = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, n: int) -> bool:
        return self._count < self.max_count and (
            self._count == 0 or self._bytes + n <= self.max_bytes
        )

    def _take(self, n: int) -> None:
        self._count += 1
        self._bytes += n

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if not self._fits(n):
                return
            self._waiters.popleft()
            self._take(n)
            fut.set_result(None)

    async def acquire(self, n: int) -> None:
        if not self._waiters and self._fits(n):
            self._take(n)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # admitted, then cancelled before running: give it back
            else:
                self._wake()
            raise

    def release(self, n: int) -> None:
        self._count -= 1
        self._bytes -= n
        self._wake()

    @asynccontextmanager
    async def holding(self, n: int) -> AsyncIterator[None]:
        await self.acquire(n)
        try:
            yield
        finally:
            self.release(n)


_InFlight = InFlight  # the name its tests know


class _Uploads:
    """The chunk uploads of one put: fail fast, and never leave tasks behind."""

    def __init__(self, inflight: InFlight) -> None:
        self._budget = inflight
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None

    async def spawn(self, coro: Coroutine[Any, Any, None], size: int) -> None:
        if self._error is not None:
            coro.close()
            raise self._error
        try:
            await self._budget.acquire(size)
        except BaseException:
            coro.close()
            raise
        task = asyncio.create_task(coro)
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._budget.release(size)
            if not task.cancelled() and task.exception() is not None and self._error is None:
                self._error = task.exception()

        task.add_done_callback(done)

    async def wait(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._error is not None:
            raise self._error

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)


class TenantRepository:
    """One tenant's view of a blob store: everything it writes is under ``prefix``, named and
    encrypted with keys derived from the tenant's data key.

    An instance is cheap and meant to live for one job (a backup run of an account, a restore):
    its cache of known chunk names and its ``stats`` are per instance, and ``retain_until`` is
    the Object Lock date its writes need (the backup policy's retention from now).
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        tenant_id: str,
        data_key: bytes,
        retain_until: datetime | None = None,
        upload_concurrency: int = UPLOADS_AT_ONCE,
        upload_buffer_bytes: int = 16 * 1024 * 1024,
        read_ahead: int = 3,
        known_cache_size: int = 65_536,
    ) -> None:
        if not _TENANT_ID.fullmatch(tenant_id):
            raise ValueError(f"tenant_id {tenant_id!r} is not usable in a blob key")
        keys = derive_tenant_keys(data_key, tenant_id=tenant_id)
        self.store = store
        self.tenant_id = tenant_id
        self.prefix = f"tenants/{tenant_id}/"
        self.retain_until = check_retention(retain_until)
        self.stats = PutStats()
        self._name_key = keys.name_key
        self._seed = keys.chunker_seed
        self._cipher = BlobCipher(keys.encryption_key)
        self._budget = InFlight(upload_concurrency, upload_buffer_bytes)
        self._read_ahead = max(1, read_ahead)
        # Names known to exist with at least our retention: saves a HEAD per repeated chunk.
        self._known: OrderedDict[bytes, None] = OrderedDict()
        self._known_max = known_cache_size
        self._writing: dict[str, asyncio.Future[None]] = {}

    def __repr__(self) -> str:
        return f"TenantRepository(tenant_id={self.tenant_id!r}, store={self.store!r})"

    # -- names ----------------------------------------------------------------------------

    def chunk_name(self, data: bytes | memoryview) -> str:
        return hmac.new(self._name_key, data, hashlib.sha256).hexdigest()

    def chunk_key(self, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(f"malformed chunk name {name!r}")
        return f"{self.prefix}chunks/{name[:2]}/{name}"

    def catalog_key(self, name: str) -> str:
        return validate_key(f"{self.prefix}catalog/{name}")

    def _is_known(self, name: str) -> bool:
        digest = bytes.fromhex(name)
        if digest in self._known:
            self._known.move_to_end(digest)
            return True
        return False

    def _remember(self, name: str) -> None:
        self._known[bytes.fromhex(name)] = None
        if len(self._known) > self._known_max:
            self._known.popitem(last=False)

    # -- writing --------------------------------------------------------------------------

    async def _seal(self, key: str, data: bytes) -> bytes:
        if len(data) <= INLINE_CPU_LIMIT:
            return self._cipher.seal(key, data)
        return await off_loop(self._cipher.seal, key, data)

    async def _ensure_retention(self, key: str, info: BlobInfo | None) -> None:
        """An existing chunk now also backs newer versions: keep it as long as they need."""
        if self.retain_until is None or not self.store.supports_object_lock:
            return
        if info is None:
            info = await self.store.head(key)
        if info is not None and (
            info.retain_until is None or info.retain_until < self.retain_until
        ):
            await self.store.extend_retention(key, self.retain_until)

    async def _store_chunk(self, name: str, data: bytes) -> None:
        while True:
            if self._is_known(name):
                self.stats.deduped_chunks += 1
                return
            pending = self._writing.get(name)
            if pending is None:
                break
            await asyncio.shield(pending)  # the same chunk twice in flight: wait, then re-check
        key = self.chunk_key(name)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writing[name] = done
        try:
            # Small items are nearly always new (Graph delta sends what changed): a conditional
            # PUT alone answers "already there?" and saves the HEAD, one of two round trips.
            info = None if len(data) < MIN_CHUNK else await self.store.head(key)
            if info is None:
                blob = await self._seal(key, data)
                if await self.store.put_if_absent(key, blob, retain_until=self.retain_until):
                    self.stats.new_chunks += 1
                    self.stats.new_stored_bytes += len(blob)
                else:  # already there: another writer, or an earlier copy of a small item
                    self.stats.deduped_chunks += 1
                    await self._ensure_retention(key, None)
            else:
                self.stats.deduped_chunks += 1
                await self._ensure_retention(key, info)
            self._remember(name)
        finally:
            del self._writing[name]
            done.set_result(None)

    def _cut_and_name(
        self, chunker: ContentChunker, total: Any, final: bool, settled: int
    ) -> list[tuple[str, bytes]]:
        out = []
        for chunk in chunker.cut(final=final, settled=settled):
            total.update(chunk)
            out.append((self.chunk_name(chunk), chunk))
        return out

    async def put_stream(
        self, chunks: AsyncIterable[bytes], *, cuts: CutPoints | None = None
    ) -> ContentRef:
        """Store a stream of any length; holds at most the window plus in-flight chunks.
        ``cuts`` names where the content's own parts begin and end (see ``chunking``), so
        that a part found in other content too is stored once."""
        forced = cuts if cuts is not None else KnownCuts(())
        chunker = ContentChunker(seed=self._seed)
        total = hashlib.sha256()
        refs: list[ChunkRef] = []
        uploads = _Uploads(self._budget)
        size = 0

        async def emit(final: bool) -> None:
            named = await off_loop(self._cut_and_name, chunker, total, final, forced.settled)
            for name, data in named:
                refs.append(ChunkRef(name, len(data)))
                await uploads.spawn(self._store_chunk(name, data), len(data))

        try:
            async for piece in chunks:
                chunker.append(piece)
                chunker.force(forced.feed(piece))
                size += len(piece)
                if chunker.ready_until(forced.settled):
                    await emit(final=False)
            chunker.force(forced.finish())
            await emit(final=True)
            await uploads.wait()
        except BaseException:
            await uploads.cancel()
            raise
        self.stats.logical_bytes += size
        return ContentRef(size=size, sha256=total.hexdigest(), chunks=tuple(refs))

    async def put_bytes(self, data: bytes, *, cuts: CutPoints | None = None) -> ContentRef:
        """Store one item held in memory; under the minimum chunk size it is one blob, or
        one blob between each two forced cuts.

        Same chunking as ``put_stream``, so an attachment stored both ways dedups.
        """
        forced = [*cuts.feed(data), *cuts.finish()] if cuts is not None else []
        if len(data) > INLINE_CPU_LIMIT:
            return await self.put_stream(_once(data), cuts=KnownCuts(forced))
        # The chunker never cuts under its minimum size: only the forced cuts split the item.
        bounds = sorted({0, len(data), *(f for f in forced if 0 < f < len(data))})
        pieces = [bytes(data[a:b]) for a, b in itertools.pairwise(bounds)]
        ref = ContentRef(
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            chunks=tuple(ChunkRef(self.chunk_name(piece), len(piece)) for piece in pieces),
        )
        await asyncio.gather(
            *(self._put_held(c.name, piece) for c, piece in zip(ref.chunks, pieces, strict=True))
        )
        self.stats.logical_bytes += len(data)
        return ref

    async def _put_held(self, name: str, data: bytes) -> None:
        await self._budget.acquire(len(data))
        try:
            await self._store_chunk(name, data)
        finally:
            self._budget.release(len(data))

    async def put_file(self, path: Path) -> ContentRef:
        return await self.put_stream(read_file_pieces(path))

    async def put_catalog(self, name: str, data: bytes) -> str:
        """Store a catalog export, encrypted like chunks but under a stable, chosen name."""
        key = self.catalog_key(name)
        blob = await self._seal(key, data)
        await self.store.put(
            key, blob, retain_until=self.retain_until, content_type="application/octet-stream"
        )
        return key

    # -- reading --------------------------------------------------------------------------

    def _open_chunk(self, chunk: ChunkRef, blob: bytes) -> bytes:
        key = self.chunk_key(chunk.name)
        plain = self._cipher.open(key, blob)
        if len(plain) != chunk.size or not hmac.compare_digest(self.chunk_name(plain), chunk.name):
            raise IntegrityError(f"chunk {key} does not match its name or size")
        return plain

    async def _fetch(self, chunk: ChunkRef) -> bytes:
        blob = await self.store.get(self.chunk_key(chunk.name))
        if len(blob) <= INLINE_CPU_LIMIT:
            return self._open_chunk(chunk, blob)
        return await off_loop(self._open_chunk, chunk, blob)

    async def read(
        self, ref: ContentRef, *, start: int = 0, end_inclusive: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Plaintext of ``ref`` (or bytes ``start..end_inclusive`` of it), chunk by chunk.

        Whole chunks are fetched (GCM authenticates a blob as a whole) and trimmed; up to
        ``read_ahead`` chunks are fetched ahead of the consumer.
        """
        end = ref.size - 1 if end_inclusive is None else min(end_inclusive, ref.size - 1)
        if start < 0 or (end_inclusive is not None and end_inclusive < start):
            raise ValueError(f"invalid range {start}-{end_inclusive}")
        if ref.size == 0 and start == 0:
            return
        if start >= ref.size:
            raise ValueError(f"range start {start} is past the end ({ref.size} bytes)")
        wanted: list[tuple[ChunkRef, int, int]] = []  # chunk, slice from, slice to
        offset = 0
        for chunk in ref.chunks:
            c_end = offset + chunk.size - 1
            if c_end >= start and offset <= end:
                wanted.append((chunk, max(start, offset) - offset, min(end, c_end) - offset + 1))
            offset += chunk.size
        ahead: deque[asyncio.Task[bytes]] = deque()
        scheduled = 0
        try:
            for _chunk, lo, hi in wanted:
                while scheduled < len(wanted) and len(ahead) < self._read_ahead:
                    ahead.append(asyncio.create_task(self._fetch(wanted[scheduled][0])))
                    scheduled += 1
                plain = await ahead.popleft()
                yield plain if (lo == 0 and hi == len(plain)) else plain[lo:hi]
        finally:
            # The consumer may stop early (client disconnect): drop what was fetched ahead.
            for task in ahead:
                task.cancel()
            if ahead:
                await asyncio.wait(ahead)
                for task in ahead:
                    if not task.cancelled():
                        task.exception()  # retrieved, so asyncio does not log it

    async def read_bytes(self, ref: ContentRef) -> bytes:
        data = b"".join([piece async for piece in self.read(ref)])
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise IntegrityError("content does not match the sha256 of its reference")
        return data

    async def get_catalog(self, name: str) -> bytes:
        key = self.catalog_key(name)
        blob = await self.store.get(key)
        return await off_loop(self._cipher.open, key, blob)

    # -- housekeeping (for garbage collection and purge) ----------------------------------

    async def list_chunk_names(self) -> AsyncIterator[str]:
        async for key in self.store.list(f"{self.prefix}chunks/"):
            name = key.rpartition("/")[2]
            if _NAME.fullmatch(name):
                yield name

    async def delete_chunk(self, name: str) -> None:
        """Remove a chunk no reference needs any more (``BlobLocked`` while retained)."""
        await self.store.delete(self.chunk_key(name))
        self._known.pop(bytes.fromhex(name), None)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def read_file_pieces(path: Path, piece_size: int = FILE_READ_SIZE) -> AsyncIterator[bytes]:
    """Read a file off the event loop, one bounded piece at a time."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while piece := await asyncio.to_thread(f.read, piece_size):
            yield piece
    finally:
        await asyncio.to_thread(f.close)
