"""The embedded-mode blob store: one file per key under a root folder.

Crash safety: every object is written to a temporary file in its final directory, made
durable, then renamed (or hard-linked, for create-if-absent) into place and the name made
durable, so a reader sees the whole object or nothing, and a put that returned survives a
power cut. Leftover temporaries from a crash carry the ``.tmp-`` prefix, which no key may use,
and are never listed.

Durability is paid per group, not per object (``_GroupCommit``): the puts that arrive while a
group is being made durable wait for the next one, and a group costs two ``syncfs`` calls
(its data, then its names) instead of two ``fsync`` calls per object. A backup writes
thousands of small chunks from many tasks at once; fsyncing each, with its directory, cost
more CPU than compressing and encrypting them (measured in the note of the change that
brought this in).

A local folder cannot keep a credential of ours from deleting files, so this store reports
``supports_object_lock = False`` and ignores retention dates rather than pretending.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import queue
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from safekeep.storage.blobstore import (
    TEMP_PREFIX,
    BlobInfo,
    BlobStore,
    check_retention,
    validate_key,
    validate_prefix,
)
from safekeep.storage.errors import BlobNotFound, BlobStoreUnavailable, StorageError

T = TypeVar("T")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_path(path: Path) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")


def _syncfs_call() -> Callable[[int], int] | None:
    """Linux's ``syncfs(2)``: everything written to one filesystem, data and names, made
    durable in one call (and, since Linux 5.8, its writeback errors reported)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int
    fn: Callable[[int], int] = call
    return fn


_SYNCFS = _syncfs_call()
# A group holds at most this many objects or bytes: a burst waits for at most one group's
# writes and syncs, and the bytes written unsynced stay bounded.
GROUP_MAX_OBJECTS = 512
GROUP_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class _Put:
    path: Path
    data: bytes
    if_absent: bool
    done: Future[bool] = field(default_factory=Future)
    temp: Path | None = None


class _GroupCommit:
    """Makes puts durable in groups, on one thread of its own.

    A group: write each object to a temporary file (an object already there, for a
    create-if-absent put, is answered at once), sync the filesystem, put each in place (a
    hard link for create-if-absent, so a racing writer's copy is never replaced; a rename
    otherwise), sync again, answer every put. With ``syncfs`` unavailable (not Linux) the
    syncs are an ``fsync`` of each file, then of each directory: the old cost, batched.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        # The running commit thread and its inbox. Each thread has its own inbox (and its own
        # descriptor, see _run): a put after close() starts a new thread rather than landing
        # behind the closed one's sentinel, and close() stops the thread it found, whatever
        # puts race it (a backup still storing while its worker shuts down).
        self._thread: threading.Thread | None = None
        self._inbox: queue.SimpleQueue[_Put | None] = queue.SimpleQueue()
        self._lock = threading.Lock()

    def submit(self, put: _Put) -> Future[bool]:
        with self._lock:
            if self._thread is None:
                self._root.mkdir(parents=True, exist_ok=True)
                # The descriptor that syncfs reports this store's writeback errors on: held
                # open for the thread's life, so an error is seen once, by the group it hit.
                root_fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY)
                self._inbox = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._run,
                    args=(self._inbox, root_fd),
                    name="blobstore-local-commit",
                    daemon=True,
                )
                self._thread.start()
            self._inbox.put(put)
        return put.done

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._inbox.put(None)  # after every put this thread was given
        if thread is not None:
            thread.join()

    def _run(self, inbox: queue.SimpleQueue[_Put | None], root_fd: int) -> None:
        try:
            while True:
                first = inbox.get()
                if first is None:
                    return
                group, size = [first], len(first.data)
                while len(group) < GROUP_MAX_OBJECTS and size < GROUP_MAX_BYTES:
                    try:
                        nxt = inbox.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        inbox.put(None)  # close after this group
                        break
                    group.append(nxt)
                    size += len(nxt.data)
                try:
                    self._commit(group, root_fd)
                except BaseException as exc:  # never leave a put unanswered, nor the thread dead
                    for put in group:
                        if not put.done.done():
                            put.done.set_exception(exc)
        finally:
            os.close(root_fd)

    def _commit(self, group: list[_Put], root_fd: int) -> None:
        staged: list[_Put] = []
        for put in group:
            if not put.done.set_running_or_notify_cancel():
                continue  # its caller stopped waiting before the group began
            try:
                if put.if_absent and put.path.exists():
                    put.done.set_result(False)
                    continue
                put.temp = _write_unsynced(put.path, put.data)
                staged.append(put)
            except BaseException as exc:
                put.done.set_exception(exc)
        if not staged:
            return
        try:
            self._sync(staged, root_fd, names=False)
        except BaseException as exc:
            for put in staged:
                _discard(put)
                put.done.set_exception(exc)
            return
        placed: list[tuple[_Put, bool]] = []
        for put in staged:
            try:
                placed.append((put, _place(put)))
            except BaseException as exc:  # this object only: the others go on
                _discard(put)
                put.done.set_exception(exc)
        if not placed:
            return
        try:
            self._sync([put for put, _ in placed], root_fd, names=True)
        except BaseException as exc:
            for put, _ in placed:
                put.done.set_exception(exc)
            return
        for put, created in placed:
            put.done.set_result(created)

    @staticmethod
    def _sync(group: list[_Put], root_fd: int, *, names: bool) -> None:
        if _SYNCFS is not None:
            if _SYNCFS(root_fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs: {os.strerror(err)}")
            return
        if names:
            for directory in {put.path.parent for put in group}:
                _fsync_dir(directory)
            return
        for put in group:
            assert put.temp is not None
            with open(put.temp, "rb+") as f:
                os.fsync(f.fileno())


def _write_unsynced(path: Path, data: bytes) -> Path:
    """The object in a temporary file beside its final name (its folder made if missing)."""
    tmp = _temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with open(fd, "wb") as f:
        f.write(data)
    return tmp


def _discard(put: _Put) -> None:
    """Remove a staged object's temporary file, if it still has one."""
    if put.temp is not None:
        put.temp.unlink(missing_ok=True)
        put.temp = None


def _place(put: _Put) -> bool:
    """Give the staged object its name; False when a create-if-absent found it taken."""
    assert put.temp is not None
    temp, put.temp = put.temp, None
    if not put.if_absent:
        try:
            os.replace(temp, put.path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return True
    try:
        os.link(temp, put.path)  # atomic create-or-fail, unlike rename which replaces
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    return True


class LocalBlobStore(BlobStore):
    supports_object_lock = False

    def __init__(self, root: Path, *, max_threads: int = 8) -> None:
        self.root = root
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="blobstore-local")
        self._commits = _GroupCommit(root)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking file I/O off the event loop; unexpected OS errors become StorageError."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise  # callers turn these into BlobNotFound where a key was expected
        except OSError as exc:
            raise StorageError(f"local blob store I/O failed: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    async def open(self) -> None:
        try:
            await self._run(functools.partial(self.root.mkdir, parents=True, exist_ok=True))
        except (OSError, StorageError) as exc:
            raise BlobStoreUnavailable(f"cannot create blob root {self.root}: {exc}") from exc
        await self.ping()

    async def close(self) -> None:
        self._executor.shutdown(wait=False)
        await asyncio.to_thread(self._commits.close)

    async def ping(self) -> None:
        def check() -> None:
            if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
                raise BlobStoreUnavailable(f"blob root {self.root} is missing or not writable")

        await self._run(check)

    # -- writing --------------------------------------------------------------------------

    async def _commit(self, path: Path, data: bytes, *, if_absent: bool) -> bool:
        """Hand the object to the group commit; True once it is durable under its name."""
        done = self._commits.submit(_Put(path, bytes(data), if_absent))
        try:
            return await asyncio.wrap_future(done)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise
        except OSError as exc:
            raise StorageError(f"local blob store I/O failed: {exc}") from exc

    async def _put(
        self, key: str, data: bytes, retain_until: datetime | None, content_type: str | None
    ) -> None:
        await self._commit(self._path(key), data, if_absent=False)

    async def put_if_absent(
        self, key: str, data: bytes, *, retain_until: datetime | None = None
    ) -> bool:
        check_retention(retain_until)
        return await self._commit(self._path(key), data, if_absent=True)

    @contextlib.asynccontextmanager
    async def writer(
        self,
        key: str,
        *,
        content_type: str | None = None,
        retain_until: datetime | None = None,
    ) -> AsyncIterator[_LocalWriter]:
        check_retention(retain_until)
        path = self._path(key)

        def start() -> tuple[Path, IO[bytes]]:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temp_path(path)
            return tmp, open(tmp, "xb")

        tmp, f = await self._run(start)
        w = _LocalWriter(self, f)

        def finish() -> None:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, path)
            _fsync_dir(path.parent)

        def abort() -> None:
            f.close()
            tmp.unlink(missing_ok=True)

        try:
            yield w
        except BaseException:
            await asyncio.shield(self._run(abort))
            raise
        try:
            await self._run(finish)
        except BaseException:
            await asyncio.shield(self._run(abort))
            raise

    # -- reading --------------------------------------------------------------------------

    async def exists(self, key: str) -> bool:
        return await self._run(self._path(key).is_file)

    async def head(self, key: str) -> BlobInfo | None:
        path = self._path(key)

        def stat() -> BlobInfo | None:
            try:
                st = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
            return BlobInfo(size=st.st_size, retain_until=None) if path.is_file() else None

        return await self._run(stat)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await self._run(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None

    async def get_range(self, key: str, start: int, end_inclusive: int) -> bytes:
        if start < 0 or end_inclusive < start:
            raise ValueError(f"invalid range {start}-{end_inclusive}")
        path = self._path(key)

        def read() -> bytes:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(end_inclusive - start + 1)

        try:
            return await self._run(read)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None

    async def size(self, key: str) -> int:
        info = await self.head(key)
        if info is None:
            raise BlobNotFound(key)
        return info.size

    async def list(self, prefix: str) -> AsyncIterator[str]:
        """Keys under ``prefix`` in byte order, like S3's ListObjectsV2."""
        validate_prefix(prefix)
        dir_part, _, _ = prefix.rpartition("/")
        start_dir = self.root.joinpath(*dir_part.split("/")) if dir_part else self.root

        def scan(directory: Path) -> list[tuple[str, bool]]:
            try:
                with os.scandir(directory) as it:
                    entries = [
                        (e.name, e.is_dir(follow_symlinks=False))
                        for e in it
                        if not e.name.startswith(TEMP_PREFIX)
                    ]
            except (FileNotFoundError, NotADirectoryError):
                return []
            # A directory's keys all continue with "/", so sorting it as "name/" puts it
            # exactly where its keys fall among its sibling files in byte order.
            return sorted(entries, key=lambda e: e[0] + "/" if e[1] else e[0])

        async def walk(directory: Path, key_prefix: str) -> AsyncIterator[str]:
            for name, is_dir in await self._run(scan, directory):
                key = key_prefix + name
                if is_dir:
                    sub = key + "/"
                    if sub.startswith(prefix) or prefix.startswith(sub):
                        async for k in walk(directory / name, sub):
                            yield k
                elif key.startswith(prefix):
                    yield key

        async for key in walk(start_dir, dir_part + "/" if dir_part else ""):
            yield key

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return
            _fsync_dir(path.parent)

        await self._run(remove)

    async def extend_retention(self, key: str, retain_until: datetime) -> None:
        """No retention exists on a local folder; the object must still exist."""
        check_retention(retain_until)
        if not await self.exists(key):
            raise BlobNotFound(key)

    async def presigned_get_url(
        self, key: str, expires_in: int, filename: str | None = None
    ) -> str | None:
        validate_key(key)
        return None


class _LocalWriter:
    def __init__(self, store: LocalBlobStore, f: IO[bytes]) -> None:
        self._store = store
        self._f = f
        self.bytes_written = 0

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        await self._store._run(self._f.write, data)
        self.bytes_written += len(data)
