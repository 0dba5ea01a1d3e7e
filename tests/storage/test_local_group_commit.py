"""The local store makes puts durable in groups (``_GroupCommit``): what a group promises
when its syncs succeed, when they fail, and where ``syncfs`` is missing."""

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from safekeep.storage import StorageError, localstore
from safekeep.storage.localstore import LocalBlobStore


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def keys(n: int) -> list[str]:
    return [f"tenants/t/chunks/{i % 7:02x}/k{i}" for i in range(n)]


async def test_concurrent_puts_share_syncs_and_all_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = localstore._SYNCFS
    assert real is not None, "these machines run Linux"
    calls: list[int] = []

    def counting(fd: int) -> int:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(localstore, "_SYNCFS", counting)
    store = LocalBlobStore(tmp_path)
    await store.open()
    names = keys(200)
    results = await asyncio.gather(
        *(store.put_if_absent(k, k.encode() * 50) for k in names),
        *(store.put_if_absent(k, b"a racing copy") for k in names[:20]),
    )
    assert results[:200].count(True) + results[200:].count(True) == 200
    for k in names:
        assert await store.get(k) in (k.encode() * 50, b"a racing copy")
    # Two syncs per group, and 220 puts made far fewer groups than puts.
    assert len(calls) % 2 == 0 and 2 <= len(calls) < 220
    assert temp_files(tmp_path) == []
    await store.close()


async def test_a_failed_sync_fails_its_puts_and_names_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int) -> int:
        import ctypes

        ctypes.set_errno(errno.EIO)
        return -1

    store = LocalBlobStore(tmp_path)
    await store.open()
    await store.put("tenants/t/kept", b"before")
    monkeypatch.setattr(localstore, "_SYNCFS", failing)
    with pytest.raises(StorageError, match="syncfs"):
        await store.put_if_absent("tenants/t/new", b"data")
    assert not await store.exists("tenants/t/new")
    assert temp_files(tmp_path) == []
    # The store goes on: the next group, with syncs working again, lands.
    monkeypatch.undo()
    assert await store.put_if_absent("tenants/t/new", b"data") is True
    assert await store.get("tenants/t/kept") == b"before"
    await store.close()


async def test_without_syncfs_each_file_and_folder_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync: Callable[[int], None] = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(localstore, "_SYNCFS", None)
    monkeypatch.setattr(localstore.os, "fsync", recording)
    store = LocalBlobStore(tmp_path)
    await store.open()
    assert await store.put_if_absent("a/one", b"1") is True
    await store.put("b/two", b"2")
    assert await store.get("a/one") == b"1" and await store.get("b/two") == b"2"
    # The data of each object (its temporary file) before its name, then its folder.
    assert any(Path(p).name.startswith(".tmp-") for p in synced)
    assert str(tmp_path / "a") in synced and str(tmp_path / "b") in synced
    await store.close()


async def test_a_put_whose_caller_left_is_harmless(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.open()
    tasks = [asyncio.create_task(store.put_if_absent(k, b"x" * 1000)) for k in keys(50)]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Whatever was written is whole, nothing half-done is visible, the store still works.
    for k in keys(50):
        if await store.exists(k):
            assert await store.get(k) == b"x" * 1000
    assert await store.put_if_absent("after/k", b"y") is True
    await store.close()
    assert temp_files(tmp_path) == []


async def test_one_object_that_cannot_take_its_name_fails_alone(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.open()
    await store.put("t/a/inner", b"makes t/a a folder")
    results = await asyncio.gather(
        store.put("t/a", b"cannot replace a folder"),
        store.put("t/b", b"fine"),
        store.put_if_absent("t/c", b"fine too"),
        return_exceptions=True,
    )
    assert isinstance(results[0], OSError)
    assert results[1:] == [None, True]
    assert await store.get("t/b") == b"fine" and await store.get("t/c") == b"fine too"
    assert temp_files(tmp_path) == []
    await store.close()


def test_closing_while_puts_keep_arriving_ends_and_answers_every_put(tmp_path: Path) -> None:
    """A worker shutting down closes its store while backups still store chunks: close()
    must stop the commit thread it found (it once joined a thread that never got the word,
    because a put racing it had started a second one that took the word instead), and every
    put is answered, by the old thread or by a new one."""
    import threading

    commits = localstore._GroupCommit(tmp_path)
    stop = threading.Event()
    answered: list[bool] = []

    def keep_putting(n: int) -> None:
        i = 0
        while not stop.is_set():
            done = commits.submit(localstore._Put(tmp_path / f"w{n}" / f"k{i}", b"x", False))
            answered.append(done.result(timeout=30))
            i += 1

    writers = [threading.Thread(target=keep_putting, args=(n,)) for n in range(4)]
    for writer in writers:
        writer.start()
    for _ in range(50):
        closer = threading.Thread(target=commits.close)
        closer.start()
        closer.join(30)
        assert not closer.is_alive()
    stop.set()
    for writer in writers:
        writer.join(60)
        assert not writer.is_alive()
    commits.close()
    assert answered and all(answered)
    assert not [t for t in threading.enumerate() if t.name == "blobstore-local-commit"]
