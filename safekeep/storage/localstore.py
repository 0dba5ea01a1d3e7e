"""The embedded-mode blob store: one file per key under a root folder.

Crash safety: every object is written to a temporary file in its final directory, fsynced,
then renamed (or hard-linked, for create-if-absent) into place and the directory fsynced, so a
reader sees the whole object or nothing. Leftover temporaries from a crash carry the
``.tmp-`` prefix, which no key may use, and are never listed.

A local folder cannot keep a credential of ours from deleting files, so this store reports
``supports_object_lock = False`` and ignores retention dates rather than pretending.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
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


class LocalBlobStore(BlobStore):
    supports_object_lock = False

    def __init__(self, root: Path, *, max_threads: int = 8) -> None:
        self.root = root
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="blobstore-local")

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

    async def ping(self) -> None:
        def check() -> None:
            if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
                raise BlobStoreUnavailable(f"blob root {self.root} is missing or not writable")

        await self._run(check)

    # -- writing --------------------------------------------------------------------------

    def _write_temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_path(path)
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def _put_sync(self, path: Path, data: bytes) -> None:
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def _put_if_absent_sync(self, path: Path, data: bytes) -> bool:
        if path.exists():
            return False
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)  # atomic create-or-fail, unlike rename which replaces
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return True

    async def _put(
        self, key: str, data: bytes, retain_until: datetime | None, content_type: str | None
    ) -> None:
        await self._run(self._put_sync, self._path(key), data)

    async def put_if_absent(
        self, key: str, data: bytes, *, retain_until: datetime | None = None
    ) -> bool:
        check_retention(retain_until)
        return await self._run(self._put_if_absent_sync, self._path(key), data)

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
