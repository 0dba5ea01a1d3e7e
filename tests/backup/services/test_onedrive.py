"""OneDrive end to end against graphsim: backup (full, incremental, resumed, resynced,
skipped and retried), restore (in place, elsewhere, new folder, each conflict rule, point in
time, after ransomware), export, download and search. Embedded column, plus one test on the
scale-out column. Everything is compared with graphsim's own state, not fixed numbers."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import random
import tracemalloc
import uuid
import zipfile
from typing import Any

import pytest
from sqlalchemy import select

from graphsim import ops
from graphsim.content import make_docx
from graphsim.quickxor import quickxor_b64 as graphsim_quickxor
from graphsim.state import Drive, DriveItem
from safekeep.backup.drive import collect as drive_collect
from safekeep.backup.drive import model as drive_model
from safekeep.backup.drive.collect import ContentMismatch
from safekeep.backup.drive.quickxor import QuickXorHash, quickxor_b64
from safekeep.backup.export.zipper import MAX_PATH_CHARS
from safekeep.backup.restore.report import JobRestoreReport
from safekeep.backup.services.base import read_content, read_document
from safekeep.backup.services.onedrive import SERVICE
from safekeep.graph.client import GraphClient
from safekeep.graph.errors import BadRequest
from safekeep.search.extract import TextMemo
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import Account, ItemVersion, SkippedItem, Snapshot
from tests.backup.harness import EngineHarness, worker_killed_at

SERVICE_NAME = "onedrive"
KINDS = ["drive_folder", "file"]


# ---- helpers: graphsim's side ----------------------------------------------------------------


def drive_of(h: EngineHarness, user_id: str) -> Drive:
    tenant = h.sim.tenant()
    drive_id = tenant.users[user_id].drive_id
    assert drive_id is not None
    return tenant.drives[drive_id]


def live(drive: Drive) -> dict[str, DriveItem]:
    """Every file and folder graphsim holds in the drive (not the root, not deleted)."""
    return {i.id: i for i in drive.items.values() if not i.deleted and i.parent_id is not None}


def sha256_of(item: DriveItem) -> str:
    assert item.content is not None
    return item.content.hashes()[1].lower()


def files_by_path(drive: Drive, under: str = "") -> dict[str, str]:
    """Path (below ``under``) -> sha256 of every live file, as graphsim holds them."""
    out = {}
    for item in live(drive).values():
        if item.is_folder:
            continue
        path = drive.path_of(item)
        if under and not path.startswith(under + "/"):
            continue
        out[path[len(under) :]] = sha256_of(item)
    return out


def folders_by_path(drive: Drive) -> set[str]:
    return {drive.path_of(i) for i in live(drive).values() if i.is_folder}


def downloads(h: EngineHarness) -> int:
    counters = h.sim.counters()["by_endpoint"]
    return int(counters.get("GET /drives/{drive}/items/{item}/content", 0))


def first_user(h: EngineHarness, n: int = 0) -> str:
    users = sorted(
        (u for u in h.sim.tenant().users.values() if u.drive_id and live(drive_of(h, u.id))),
        key=lambda u: -len(live(drive_of(h, u.id))),
    )
    return users[n].id


async def fullest_drive(h: EngineHarness) -> tuple[str, Account, Drive]:
    """The user whose OneDrive holds the most (their Graph id and account) and that drive."""
    user_id = first_user(h)
    return user_id, await h.account(user_id), drive_of(h, user_id)


# ---- helpers: our side -----------------------------------------------------------------------


async def current(h: EngineHarness, account: Any) -> dict[str, ItemVersion]:
    return await h.open_ids(account, SERVICE_NAME, KINDS)


async def assert_matches(h: EngineHarness, account: Any, drive: Drive) -> dict[str, ItemVersion]:
    """The catalog's current view is exactly graphsim's drive, field by field."""
    stored = await current(h, account)
    expected = live(drive)
    assert set(stored) == set(expected)
    for item_id, version in stored.items():
        item = expected[item_id]
        assert version.name == item.name
        parent = None if item.parent_id == drive.root_id else item.parent_id
        assert version.parent_external_id == parent
        assert version.meta["path"] == drive.path_of(item)
        if item.is_folder:
            assert version.kind == "drive_folder"
        else:
            assert version.kind == "file"
            assert version.size == item.content.size  # type: ignore[union-attr]
            assert version.content_hash == sha256_of(item)
            assert version.meta["hashes"]["quickXorHash"] == item.content.hashes()[0]  # type: ignore[union-attr]
            assert version.meta["mime_type"] == item.mime_type
    return stored


async def snapshot_of(h: EngineHarness, account: Any, seq: int) -> Snapshot:
    async with h.runtime.db.session() as session:
        row = await session.execute(
            select(Snapshot).where(
                Snapshot.account_id == account.id,
                Snapshot.service == SERVICE_NAME,
                Snapshot.seq == seq,
            )
        )
        return row.scalar_one()


# ---- QuickXorHash ------------------------------------------------------------------------------


def test_quickxor_vector_and_streaming() -> None:
    assert quickxor_b64(b"hello world") == "aCgDG9jwBhDc4Q1yawMZAAAAAAA="
    data = hashlib.sha256(b"seed").digest() * 4099  # 131,168 bytes: not a multiple of 160
    whole = quickxor_b64(data)
    for piece in (1, 159, 160, 161, 4096, 65_537):
        h = QuickXorHash()
        for start in range(0, len(data), piece):
            h.update(data[start : start + piece])
        assert h.b64digest() == whole
    assert quickxor_b64(b"") == "AAAAAAAAAAAAAAAAAAAAAAAAAAA="


def test_quickxor_agrees_with_graphsims_own_implementation() -> None:
    # graphsim computes Graph's hashes with code of its own (big integers, no numpy): the
    # engine's must match it for any length, however the bytes arrive.
    rng = random.Random(7)
    for size in (1, 159, 161, 999, 65_536, 300_001):
        data = rng.randbytes(size)
        h = QuickXorHash()
        start = 0
        while start < size:
            step = rng.choice((1, 7, 160, 4096, 70_000))
            h.update(memoryview(data)[start : start + step])
            start += step
        assert h.b64digest() == graphsim_quickxor(data), size


# ---- backup ------------------------------------------------------------------------------------


async def test_full_then_incremental_follows_graphsim(engine: EngineHarness) -> None:
    h = engine
    tid = h.sim_tenant_id
    user_id, account, drive = await fullest_drive(h)

    run, skipped = await h.backup(account, SERVICE_NAME)
    assert skipped == 0
    assert run.counters.added == len(live(drive))
    await assert_matches(h, account, drive)

    # Nothing changed: no version, no download, a constant handful of requests.
    h.sim.reset_counters()
    run, _ = await h.backup(account, SERVICE_NAME)
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
    assert downloads(h) == 0
    idle_requests = h.sim.counters()["total"]
    assert idle_requests <= 3  # the drive's root, one delta page (+ a token)

    # Changes of every kind.
    original_ids = set(live(drive))
    files = sorted((i for i in live(drive).values() if not i.is_folder), key=lambda i: i.id)
    folders = sorted((i for i in live(drive).values() if i.is_folder), key=lambda i: i.id)
    edited, moved, renamed, deleted = files[0], files[1], files[2], files[3]
    h.sim.edit_item(tid, edited.id, {"content": b"a new text\n" * 50})
    target_folder = next(f for f in folders if f.id != moved.parent_id)
    h.sim.move_item(tid, moved.id, target_folder.id)
    h.sim.edit_item(tid, renamed.id, {"name": "renamed " + renamed.name})
    h.sim.delete_item(tid, deleted.id)
    doomed = next(f for f in folders if f.id != target_folder.id)  # delete a folder tree
    doomed_subtree = {
        i.id for i in live(drive).values() if drive.path_of(i).startswith(drive.path_of(doomed))
    }
    h.sim.delete_item(tid, doomed.id)
    new_id = h.sim.add_file(tid, "Brand new/added.txt", user=user_id, data=b"fresh bytes")
    changed_ids = {edited.id, moved.id, renamed.id, new_id}

    h.sim.reset_counters()
    run, skipped = await h.backup(account, SERVICE_NAME)
    assert skipped == 0
    stored = await assert_matches(h, account, drive)
    # Only new or edited bytes are downloaded: a move or a rename reuses what we hold.
    assert downloads(h) == len({edited.id, new_id} - doomed_subtree)
    assert h.sim.counters()["total"] <= idle_requests + downloads(h) + 2

    versions = await h.all_versions(account, SERVICE_NAME)
    by_item: dict[Any, list[ItemVersion]] = {}
    for v in versions:
        by_item.setdefault(v.item_id, []).append(v)
    for chain in by_item.values():
        chain.sort(key=lambda v: v.first_seq)
        for older, newer in itertools.pairwise(chain):
            assert older.last_seq == newer.first_seq - 1  # an edit closes the old version
        assert len(chain) <= 2
    reversions = {v.meta["id"] for v in versions if v.first_seq == 3 and v.meta.get("id") in stored}
    assert reversions - (set(stored) - original_ids) == changed_ids - {new_id}
    assert h.sim.counters()["retry_after_violations"] == 0
    moved_now = stored[moved.id]
    assert moved_now.parent_external_id == target_folder.id
    moved_chain = by_item[moved_now.item_id]
    assert moved_chain[0].content == moved_chain[1].content  # same blobs, no re-download
    gone = {v.meta["id"] for v in versions if v.last_seq == 2}
    assert deleted.id in gone
    assert doomed_subtree <= gone | {new_id}


async def test_ancestors_and_paths_in_delta_make_no_new_versions(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OneDrive for Business returns, with a changed file, every folder above it (unchanged)
    and each item's ``parentReference.path``: the engine records the file alone."""
    h = engine
    _, account, drive = await fullest_drive(h)
    await h.backup(account, SERVICE_NAME)
    before = await h.all_versions(account, SERVICE_NAME)
    deep = max(
        (i for i in live(drive).values() if not i.is_folder),
        key=lambda i: (drive.path_of(i).count("/"), i.id),
    )
    above: list[str] = []
    parent_id = deep.parent_id
    while parent_id:
        above.append(parent_id)
        parent_id = drive.items[parent_id].parent_id
    assert len(above) >= 2, "the file sits in a folder below the root"

    handed: list[dict[str, Any]] = []
    prepare = drive_collect.DriveCollector.prepare

    async def watching(self: Any, items: list[dict[str, Any]], seen: Any) -> Any:
        handed.extend(items)
        return await prepare(self, items, seen)

    monkeypatch.setattr(drive_collect.DriveCollector, "prepare", watching)
    h.sim.edit_item(h.sim_tenant_id, deep.id, {"content": b"edited far below the root\n"})
    run, skipped = await h.backup(account, SERVICE_NAME)
    assert skipped == 0
    # Graph handed over the file and all its ancestors, each with its parent's path...
    assert [i["id"] for i in handed] == [*reversed(above), deep.id]
    for item in handed:
        if "root" not in item:
            assert item["parentReference"]["path"].startswith(f"/drives/{drive.id}/root:")
    # ...and only the file got a new version.
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 1, 0)
    after = await h.all_versions(account, SERVICE_NAME)
    assert len(after) == len(before) + 1
    assert {v.meta["id"] for v in after} - {v.meta["id"] for v in before} == set()
    assert [v.meta["id"] for v in after if v.first_seq > max(b.first_seq for b in before)] == [
        deep.id
    ]


async def test_interrupted_run_resumes_without_loss_or_duplicates(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    _, account, drive = await fullest_drive(h)
    monkeypatch.setattr(drive_collect, "DELTA_PAGE_SIZE", 2)
    with worker_killed_at(2), pytest.raises(RuntimeError, match="worker killed"):
        await h.backup(account, SERVICE_NAME)
    partial = await current(h, account)
    assert 0 < len(partial) < len(live(drive))

    h.sim.reset_counters()
    run, skipped = await h.backup(account, SERVICE_NAME)
    assert run.resumed
    assert run.seq == 1
    assert skipped == 0
    await assert_matches(h, account, drive)
    versions = await h.all_versions(account, SERVICE_NAME)
    assert len(versions) == len(live(drive))  # each item exactly once
    # The resumed run did not download again what the first one stored.
    assert downloads(h) == sum(
        1 for i in live(drive).values() if not i.is_folder and i.id not in partial
    )


async def test_resync_reenumerates_without_new_versions(engine: EngineHarness) -> None:
    h = engine
    tid = h.sim_tenant_id
    _, account, drive = await fullest_drive(h)
    await h.backup(account, SERVICE_NAME)
    files = sorted((i for i in live(drive).values() if not i.is_folder), key=lambda i: i.id)
    h.sim.edit_item(tid, files[0].id, {"content": b"edited while the token expired"})
    h.sim.delete_item(tid, files[1].id)
    h.sim.expire_delta_tokens(tid, owner=drive.id)

    h.sim.reset_counters()
    run, skipped = await h.backup(account, SERVICE_NAME)
    assert skipped == 0
    assert h.sim.counters()["by_status"].get("410", 0) >= 1
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 1, 1)
    assert downloads(h) == 1
    await assert_matches(h, account, drive)

    run, _ = await h.backup(account, SERVICE_NAME)  # and the new token works
    assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)


async def test_unreadable_file_is_skipped_then_retried(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    _, account, drive = await fullest_drive(h)
    monkeypatch.setattr(drive_collect, "BACKOFF_SECONDS", 0.0)
    victim = min((i for i in live(drive).values() if not i.is_folder), key=lambda i: i.id)
    real_verify = drive_collect.verify
    attempts = {"n": 0}

    def corrupt(ref: Any, item: dict[str, Any], qx: Any) -> None:
        if item["id"] == victim.id:
            attempts["n"] += 1
            raise ContentMismatch("bytes differ from Graph's hash")
        real_verify(ref, item, qx)

    monkeypatch.setattr(drive_collect, "verify", corrupt)
    run, skipped = await h.backup(account, SERVICE_NAME)
    assert skipped == 1
    assert attempts["n"] == 3
    assert victim.id not in await current(h, account)
    async with h.runtime.db.session() as session:
        rows = list((await session.execute(select(SkippedItem))).scalars())
    assert [(r.external_id, r.code) for r in rows] == [(victim.id, "hash_mismatch")]
    snapshot = await snapshot_of(h, account, run.seq)
    assert snapshot.status == "partial"

    monkeypatch.setattr(drive_collect, "verify", real_verify)
    run, skipped = await h.backup(account, SERVICE_NAME)
    assert skipped == 0
    await assert_matches(h, account, drive)
    async with h.runtime.db.session() as session:
        assert list((await session.execute(select(SkippedItem))).scalars()) == []


async def test_large_file_is_streamed_in_bounded_memory(engine: EngineHarness) -> None:
    h = engine
    tid = h.sim_tenant_id
    user_id = first_user(h)
    account = await h.account(user_id)
    size = 70 * 1024 * 1024 + 5
    big_id = h.sim.add_file(tid, "Videos/big.mp4", user=user_id, size=size)
    big = drive_of(h, user_id).items[big_id]
    expected_sha = sha256_of(big)  # graphsim hashes it before we measure

    tracemalloc.start()
    try:
        _, skipped = await h.backup(account, SERVICE_NAME)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert skipped == 0
    # About 40 MiB whatever the size (140 MiB gives the same): the chunker's window and the
    # chunks in flight, on both sides of the simulated wire (graphsim runs in this process).
    assert peak < 56 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while storing 70 MiB"
    stored = (await current(h, account))[big_id]
    assert stored.size == size
    assert stored.content_hash == expected_sha

    # A ranged download reads only the stored chunks it needs.
    repo_content = await SERVICE.content(await _repo(h), stored)
    assert repo_content.rangeable
    assert repo_content.size == size
    part = b"".join([c async for c in repo_content.open(size - 100, size - 1)])
    assert part == b"".join(big.content.iter_range(size - 100, size))  # type: ignore[union-attr]

    # Restored through an upload session, byte for byte (sha256 and quickXorHash).
    h.sim.delete_item(tid, big_id)
    report = await h.restore(account, SERVICE_NAME)
    assert report.failed_count == 0
    back = next(
        i
        for i in live(drive_of(h, user_id)).values()
        if drive_of(h, user_id).path_of(i) == "/Videos/big.mp4"
    )
    assert back.content.hashes() == big.content.hashes()  # type: ignore[union-attr]
    assert (
        h.sim.counters()["by_endpoint"].get(
            "POST /drives/{drive}/items/{item}/children/{name}/createUploadSession", 0
        )
        >= 1
    )


async def _repo(h: EngineHarness) -> Any:
    from safekeep.backup.context import open_repository

    return await open_repository(h.runtime, h.tenant)


# ---- restore -----------------------------------------------------------------------------------


async def test_restore_round_trips_every_rule(engine: EngineHarness) -> None:
    h = engine
    tid = h.sim_tenant_id
    user_id = first_user(h)
    other_id = first_user(h, 1)
    account, other = await h.account(user_id), await h.account(other_id)
    drive = drive_of(h, user_id)
    await h.backup(account, SERVICE_NAME)
    before = files_by_path(drive)
    before_folders = folders_by_path(drive)
    files = sorted((i for i in live(drive).values() if not i.is_folder), key=lambda i: i.id)
    folder = next(i for i in live(drive).values() if i.is_folder)

    # Damage: delete a folder tree and a file, corrupt another.
    h.sim.delete_item(tid, folder.id)
    deleted = next(f for f in files if not f.deleted)
    h.sim.delete_item(tid, deleted.id)
    corrupted = next(f for f in files if not f.deleted)
    h.sim.edit_item(tid, corrupted.id, {"content": b"garbage"})
    corrupted_path = drive.path_of(corrupted)

    # skip: what is missing comes back; the corrupted file (the same driveItem, other bytes)
    # is left alone and reported as not restored, not as already there.
    report = await h.restore(account, SERVICE_NAME, conflict="skip")
    now = files_by_path(drive)
    assert set(now) == set(before)
    assert folders_by_path(drive) >= before_folders
    assert {p: s for p, s in now.items() if p != corrupted_path} == {
        p: s for p, s in before.items() if p != corrupted_path
    }
    assert now[corrupted_path] == hashlib.sha256(b"garbage").hexdigest()
    assert (report.failed_count, report.skipped_count) == (0, 1)
    assert report.existing_count == len(before) - report.restored_count - 1

    # overwrite: the corrupted file gets its backed-up bytes back, with a note that says so;
    # files that hold their backed-up bytes are left as they are.
    report = await h.restore(account, SERVICE_NAME, conflict="overwrite")
    assert files_by_path(drive) == before
    assert (report.restored_count, report.noted_count, report.failed_count) == (1, 1, 0)
    assert report.existing_count == len(before) - 1
    backed_up = (await current(h, account))[corrupted.id]

    # keep both: a second copy under a free name, the original untouched.
    report = await h.restore(
        account,
        SERVICE_NAME,
        scope_type="items",
        item_ids=[backed_up.item_id],
        conflict="keep_both",
    )
    assert report.restored_count == 1
    stem, _, _ext = corrupted.name.rpartition(".")
    copies = [
        p
        for p in files_by_path(drive)
        if p.startswith(corrupted_path.rsplit("/", 1)[0] + "/" + stem + " 1")
    ]
    assert len(copies) == 1
    assert files_by_path(drive)[copies[0]] == before[corrupted_path]

    # another account: the same tree and bytes in the other user's drive.
    other_before = files_by_path(drive_of(h, other_id))
    report = await h.restore(account, SERVICE_NAME, target=other)
    assert report.failed_count == 0
    other_now = files_by_path(drive_of(h, other_id))
    for path, sha in before.items():
        if path not in other_before:
            assert other_now[path] == sha

    # a new folder: everything below "Restored ...", tree kept.
    report = await h.restore(account, SERVICE_NAME, folder_mode="new")
    assert report.failed_count == 0
    assert report.restored_count == len(before)
    tops = {i.name for i in live(drive).values() if i.parent_id == drive.root_id and i.is_folder}
    restored_top = next(t for t in tops if t.startswith("Restored "))
    assert files_by_path(drive, under="/" + restored_top) == before


async def test_point_in_time_restore_gives_the_earlier_version(engine: EngineHarness) -> None:
    h = engine
    tid = h.sim_tenant_id
    user_id, account, drive = await fullest_drive(h)
    path = "/Notes/evolving.txt"
    file_id = h.sim.add_file(tid, path, user=user_id, data=b"first")
    await h.backup(account, SERVICE_NAME)
    h.sim.edit_item(tid, file_id, {"content": b"second"})
    await h.backup(account, SERVICE_NAME)
    second = await snapshot_of(h, account, 2)
    h.sim.edit_item(tid, file_id, {"content": b"third"})
    await h.backup(account, SERVICE_NAME)

    stored = (await current(h, account))[file_id]
    report = await h.restore(
        account,
        SERVICE_NAME,
        scope_type="items",
        item_ids=[stored.item_id],
        at=second.completed_at,
        conflict="overwrite",
    )
    assert report.restored_count == 1
    assert files_by_path(drive)[path] == hashlib.sha256(b"second").hexdigest()


async def test_ransomware_restore_puts_originals_back_and_names_the_copies(
    engine: EngineHarness,
) -> None:
    h = engine
    tid = h.sim_tenant_id
    user_id, account, drive = await fullest_drive(h)
    await h.backup(account, SERVICE_NAME)
    before = files_by_path(drive)
    attacked_at = (await snapshot_of(h, account, 1)).completed_at

    victims = h.sim.ransomware(tid, user_id, 3)
    encrypted = {drive.path_of(drive.items[v]) for v in victims}
    assert all(p.endswith(".locked") for p in encrypted)
    await h.backup(account, SERVICE_NAME)  # the nightly backup captures the damage too

    report = await h.restore(account, SERVICE_NAME, at=attacked_at, conflict="skip")
    assert report.failed_count == 0
    now = files_by_path(drive)
    for path, sha in before.items():
        assert now[path] == sha  # every pre-attack file, byte for byte
    assert {o["name"] for o in report.observed_list} == encrypted
    assert report.observed_count == len(encrypted)
    assert all(o["code"] == "not_in_restore_point" for o in report.observed_list)
    assert all("renamed and rewritten" in o["detail"] for o in report.observed_list)


async def test_a_moved_file_is_reported_as_moved_not_as_rewritten(engine: EngineHarness) -> None:
    """After a point-in-time restore in place, a file found under a new path with the bytes
    it had is named as moved, not as ransomware's rewrite."""
    h = engine
    tid = h.sim_tenant_id
    user_id = first_user(h)
    account, drive = await h.account(user_id), drive_of(h, user_id)
    moved = h.sim.add_file(tid, "/A/contract.txt", user=user_id, data=b"contract v1")
    h.sim.add_file(tid, "/B/other.txt", user=user_id, data=b"other")
    await h.backup(account, SERVICE_NAME)
    before = (await snapshot_of(h, account, 1)).completed_at
    folder_b = next(i for i in live(drive).values() if i.is_folder and i.name == "B")
    h.sim.move_item(tid, moved, folder_b.id)
    await h.backup(account, SERVICE_NAME)

    report = await h.restore(account, SERVICE_NAME, at=before, conflict="skip")
    assert report.failed_count == 0
    (seen,) = report.observed_list
    assert seen["name"] == "/B/contract.txt"
    assert "was /A/contract.txt then and has since been moved or renamed" in seen["detail"]
    assert "rewritten" not in seen["detail"]


async def test_a_zero_byte_file_restored_twice_is_there_the_second_time(
    engine: EngineHarness,
) -> None:
    h = engine
    tid = h.sim_tenant_id
    user_id, other_id = first_user(h), first_user(h, 1)
    account, other = await h.account(user_id), await h.account(other_id)
    h.sim.add_file(tid, "/Empty/zero.txt", user=user_id, data=b"")
    await h.backup(account, SERVICE_NAME)
    empty = next(v for v in (await current(h, account)).values() if v.name == "zero.txt")
    for restored, existing in ((1, 0), (0, 1)):
        report = await h.restore(
            account, SERVICE_NAME, scope_type="items", item_ids=[empty.item_id], target=other
        )
        assert (report.restored_count, report.existing_count, report.skipped_count) == (
            restored,
            existing,
            0,
        )
    assert files_by_path(drive_of(h, other_id))["/Empty/zero.txt"] == hashlib.sha256().hexdigest()


async def test_an_empty_folder_that_cannot_be_made_fails_aloud(engine: EngineHarness) -> None:
    """An empty folder has no file to report it: a folder the restore cannot make (a file
    holds its name in the target) is a failed item of its own."""
    h = engine
    tid = h.sim_tenant_id
    user_id, other_id = first_user(h), first_user(h, 1)
    account, other = await h.account(user_id), await h.account(other_id)
    with h.sim.state.lock:
        drive = drive_of(h, user_id)
        ops.drive_folder_path(h.sim.tenant(), drive, "Archive2019/Empty", drive.author)
    await h.backup(account, SERVICE_NAME)
    h.sim.add_file(tid, "/Archive2019", user=other_id, data=b"x")
    report = await h.restore(account, SERVICE_NAME, target=other)
    assert report.failed_count == 2  # Archive2019 and Empty below it
    assert "/Archive2019/Empty" not in folders_by_path(drive_of(h, other_id))


async def test_times_graph_refuses_are_noted_with_the_restored_file(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    user_id, other_id = first_user(h), first_user(h, 1)
    account, other = await h.account(user_id), await h.account(other_id)
    await h.backup(account, SERVICE_NAME)
    version = next(v for v in (await current(h, account)).values() if v.kind == "file")
    sent = GraphClient.request_json

    async def refusing(self: GraphClient, method: str, path: str, **kw: Any) -> Any:
        if method == "PATCH" and "fileSystemInfo" in (kw.get("json") or {}):
            raise BadRequest(400, "invalidRequest", "Invalid request")
        return await sent(self, method, path, **kw)

    monkeypatch.setattr(GraphClient, "request_json", refusing)
    report = await h.restore(
        account, SERVICE_NAME, scope_type="items", item_ids=[version.item_id], target=other
    )
    assert (report.restored_count, report.noted_count, report.failed_count) == (1, 1, 0)


async def test_an_office_document_graph_stored_otherwise_fails_in_a_onedrive(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OneDrive keeps the bytes it receives, Office files included (only a SharePoint
    library rewrites them): a .docx whose stored hash is not the backup's has failed."""
    h = engine
    tid = h.sim_tenant_id
    user_id = first_user(h)
    account = await h.account(user_id)
    h.sim.add_file(tid, "Reports/plan.docx", user=user_id, data=make_docx(["Plan"]))
    await h.backup(account, SERVICE_NAME)
    version = next(v for v in (await current(h, account)).values() if v.name == "plan.docx")
    drive = drive_of(h, user_id)
    h.sim.delete_item(tid, next(i.id for i in live(drive).values() if i.name == "plan.docx"))
    upload = GraphClient.upload_drive_file

    async def enriched(self: GraphClient, *args: Any, **kw: Any) -> Any:
        created = await upload(self, *args, **kw)
        created["file"]["hashes"]["quickXorHash"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
        created["size"] += 190
        return created

    monkeypatch.setattr(GraphClient, "upload_drive_file", enriched)
    failures: list[str] = []
    failed = JobRestoreReport.failed

    async def noting(self: JobRestoreReport, version: Any, *, code: str, detail: str) -> None:
        failures.append(code)
        await failed(self, version, code=code, detail=detail)

    monkeypatch.setattr(JobRestoreReport, "failed", noting)
    report = await h.restore(account, SERVICE_NAME, scope_type="items", item_ids=[version.item_id])
    assert (report.restored_count, report.noted_count, report.failed_count) == (0, 0, 1)
    assert failures == ["hash_mismatch"]


# ---- export, download, search ------------------------------------------------------------------


async def test_export_zip_holds_every_file_with_its_hash(engine: EngineHarness) -> None:
    h = engine
    _, account, drive = await fullest_drive(h)
    await h.backup(account, SERVICE_NAME)
    data = await h.export(account, SERVICE_NAME)
    archive = zipfile.ZipFile(io.BytesIO(data))
    manifest = json.loads(archive.read("manifest.json"))
    top = f"{account.principal_name}/{SERVICE_NAME}"
    expected = {top + p: sha for p, sha in files_by_path(drive).items()}
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert listed == expected
    for path, sha in expected.items():
        assert hashlib.sha256(archive.read(path)).hexdigest() == sha


async def test_export_of_a_deep_tree_unpacks_within_windows_path_limit(
    engine: EngineHarness,
) -> None:
    """OneDrive keeps paths of up to 400 characters; Windows' own extractor creates none past
    260 with the destination folder. Every member of the export fits MAX_PATH_CHARS, the
    files of one folder stay in one folder, and the manifest names each shortened file's
    full path."""
    h = engine
    tid = h.sim_tenant_id
    user_id, account, drive = await fullest_drive(h)
    deep = "/" + "/".join(f"Client engagement {n} - working papers" for n in range(9))
    added = {
        f"{deep}/{name}": data
        for name, data in (
            ("Final statement of account, signed by both parties.pdf", b"pdf bytes"),
            ("notes.txt", b"short name, same folder"),
        )
    }
    for path, data in added.items():
        h.sim.add_file(tid, path, user=user_id, data=data)
    await h.backup(account, SERVICE_NAME)
    archive = zipfile.ZipFile(io.BytesIO(await h.export(account, SERVICE_NAME)))
    assert all(len(name) <= MAX_PATH_CHARS for name in archive.namelist())
    manifest = json.loads(archive.read("manifest.json"))
    top = f"{account.principal_name}/{SERVICE_NAME}"
    by_full = {f.get("full_path", f["path"]): f for f in manifest["files"]}
    assert set(by_full) == {top + p for p in files_by_path(drive)}
    members = [by_full[top + path] for path in added]
    assert all("full_path" in m and len(top + deep) > MAX_PATH_CHARS for m in members)
    assert len({m["path"].rsplit("/", 1)[0] for m in members}) == 1
    for member, data in zip(members, added.values(), strict=True):
        assert archive.read(member["path"]) == data
        assert member["path"].endswith((".pdf", ".txt"))


async def test_search_finds_files_by_words_in_their_text(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    tid = h.sim_tenant_id
    user_id = first_user(h)
    account = await h.account(user_id)
    h.sim.add_file(tid, "Notes/zoo.txt", user=user_id, data=b"the quokka ledger")
    h.sim.add_file(
        tid,
        "Invoices/contoso.docx",
        user=user_id,
        data=make_docx(["Invoice from Contoso", "wombatprefix payment due in March"]),
    )
    await h.backup(account, SERVICE_NAME)
    assert "zoo.txt" in await h.search_titles(SERVICE_NAME, "quokka")
    assert "contoso.docx" in await h.search_titles(SERVICE_NAME, "wombatprefix")
    assert "contoso.docx" in await h.search_titles(SERVICE_NAME, "contoso")  # by name too

    # The indexing retry job builds the same fields from the stored bytes (in a worker that
    # has not read this file: another process, or its text long out of the memory).
    monkeypatch.setattr(drive_model, "TEXTS", TextMemo())
    repo = await _repo(h)
    stored = next(v for v in (await current(h, account)).values() if v.name == "contoso.docx")
    document = await read_document(repo, stored)

    async def read_back() -> bytes | None:
        return b"".join([c async for c in read_content(repo, stored)])

    fields = await SERVICE.search_fields(stored, document, read_back)
    assert fields is not None
    assert "wombatprefix payment due in March" in fields.body
    assert (fields.file_type, fields.folder_path) == ("docx", "/Invoices")


async def test_a_files_text_is_read_once_per_tenant_and_content(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of a file in another folder is not extracted again, and a file moved with its
    bytes unchanged is neither read back from the store nor extracted: its text comes from
    the worker's memory, keyed by the tenant, the bytes' SHA-256 and the type."""
    h = engine
    tid = h.sim_tenant_id
    user_id = first_user(h)
    account = await h.account(user_id)
    extracted: list[str] = []
    real_extract = drive_model.extract_text

    def counted(name: str, *args: Any, **kwargs: Any) -> str:
        extracted.append(name)
        return real_extract(name, *args, **kwargs)

    read_back: list[int] = []
    real_read = TenantRepository.read_bytes

    async def counted_read(self: TenantRepository, ref: Any) -> bytes:
        read_back.append(ref.size)
        return await real_read(self, ref)

    monkeypatch.setattr(drive_model, "TEXTS", TextMemo())
    monkeypatch.setattr(drive_model, "extract_text", counted)
    monkeypatch.setattr(TenantRepository, "read_bytes", counted_read)
    policy = make_docx(["Travel policy", "numbatclause: economy class within Europe"])
    moved = h.sim.add_file(tid, "Policies/travel.docx", user=user_id, data=policy)
    h.sim.add_file(tid, "Archive/travel copy.docx", user=user_id, data=policy)
    h.sim.add_file(tid, "Policies/other.docx", user=user_id, data=make_docx(["bilbyclause"]))
    await h.backup(account, SERVICE_NAME)

    ours = [n for n in extracted if n in ("travel.docx", "travel copy.docx", "other.docx")]
    assert sorted(ours) == ["other.docx", "travel.docx"] or sorted(ours) == [
        "other.docx",
        "travel copy.docx",
    ]
    titles = await h.search_titles(SERVICE_NAME, "numbatclause")
    assert {"travel.docx", "travel copy.docx"} <= set(titles)
    versions = {v.name: v for v in (await current(h, account)).values()}
    assert versions["travel.docx"].content_hash == hashlib.sha256(policy).hexdigest()

    extracted.clear()
    h.sim.move_item(tid, moved, "Travel")
    await h.backup(account, SERVICE_NAME)
    after = {v.name: v for v in (await current(h, account)).values()}
    assert after["travel.docx"].id != versions["travel.docx"].id  # a new version (its path)
    assert "travel.docx" not in extracted
    assert read_back == []  # its unchanged bytes were not read back for their text
    # The moved file's text came from the memory (the first backup's two copies may instead
    # have shared one reading in flight, which counts no hit).
    assert drive_model.TEXTS.hits >= 1

    # Another tenant's file of the same bytes is read for itself.
    fields = await drive_model.drive_search_fields(
        "file",
        "travel.docx",
        len(policy),
        None,
        {"mime_type": None},
        _bytes(policy),
        tenant_id=str(uuid.uuid4()),
        content_hash=hashlib.sha256(policy).hexdigest(),
    )
    assert "numbatclause" in fields.body
    assert extracted == ["travel.docx"]


def _bytes(data: bytes) -> Any:
    async def read() -> bytes | None:
        return data

    return read


async def test_a_files_text_is_kept_by_type_and_only_with_a_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same bytes under another type are read again (a .txt is read as text, a .csv
    likewise but kept apart); bytes with no digest are read every time and never kept."""
    memo = TextMemo()
    monkeypatch.setattr(drive_model, "TEXTS", memo)
    data = b"koala,quoll\n1,2\n"
    digest = hashlib.sha256(data).hexdigest()
    reads: list[str] = []

    def reader(name: str) -> Any:
        async def read() -> bytes | None:
            reads.append(name)
            return data

        return read

    async def text(name: str, content_hash: str | None) -> str:
        fields = await drive_model.drive_search_fields(
            "file",
            name,
            len(data),
            None,
            {},
            reader(name),
            tenant_id="t1",
            content_hash=content_hash,
        )
        return fields.body

    assert "koala" in await text("a.csv", digest)
    assert await text("b.csv", digest) == await text("a.csv", digest)
    assert reads == ["a.csv"]
    assert "koala" in await text("c.txt", digest)
    assert reads == ["a.csv", "c.txt"]
    await text("d.txt", None)
    await text("d.txt", None)
    assert reads == ["a.csv", "c.txt", "d.txt", "d.txt"]
    assert (memo.hits, memo.misses) == (2, 2)


# ---- the scale-out column ----------------------------------------------------------------------


async def test_scaleout_backup_restore_search(scaleout_engine: EngineHarness) -> None:
    h = scaleout_engine
    tid = h.sim_tenant_id
    user_id, account, drive = await fullest_drive(h)
    h.sim.add_file(tid, "Notes/platypus.txt", user=user_id, data=b"platypus budget 2025")
    await h.backup(account, SERVICE_NAME)
    await assert_matches(h, account, drive)
    before = files_by_path(drive)
    victim = next(i for i in live(drive).values() if not i.is_folder)
    h.sim.delete_item(tid, victim.id)
    run, _ = await h.backup(account, SERVICE_NAME)
    assert run.counters.removed == 1
    report = await h.restore(
        account, SERVICE_NAME, at=(await snapshot_of(h, account, 1)).completed_at
    )
    assert report.failed_count == 0
    assert report.restored_count == 1
    assert files_by_path(drive) == before
    assert "platypus.txt" in await h.search_titles(SERVICE_NAME, "platypus")


async def test_copies_met_at_once_share_one_reading_of_their_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two copies of a file whose fields are made at the same moment (a delta page stores its
    files side by side) read and extract the bytes once; when that reading fails, the copy
    that waited reads for itself."""
    monkeypatch.setattr(drive_model, "TEXTS", TextMemo())
    data = make_docx(["Expense policy", "quokkaclause: receipts within a month"])
    digest = hashlib.sha256(data).hexdigest()
    reads: list[str] = []
    release = asyncio.Event()

    def reader(name: str, *, fail: bool = False) -> Any:
        async def read() -> bytes:
            reads.append(name)
            await release.wait()
            if fail:
                raise ConnectionError("the store went away")
            return data

        return read

    def fields_of(name: str, read: Any) -> Any:
        return drive_model.drive_search_fields(
            drive_model.FILE,
            name,
            len(data),
            None,
            {"path": f"/Policies/{name}"},
            read,
            tenant_id="t1",
            content_hash=digest,
        )

    first = asyncio.create_task(fields_of("expenses.docx", reader("expenses.docx")))
    copy = asyncio.create_task(fields_of("expenses copy.docx", reader("expenses copy.docx")))
    await asyncio.sleep(0.05)
    release.set()
    bodies = [f.body for f in await asyncio.gather(first, copy)]
    assert reads == ["expenses.docx"]
    assert all("quokkaclause" in body for body in bodies)

    monkeypatch.setattr(drive_model, "TEXTS", TextMemo())
    reads.clear()
    release.clear()
    failing = asyncio.create_task(fields_of("a.docx", reader("a.docx", fail=True)))
    waiting = asyncio.create_task(fields_of("b.docx", reader("b.docx")))
    await asyncio.sleep(0.05)
    release.set()
    with pytest.raises(ConnectionError):
        await failing
    assert "quokkaclause" in (await waiting).body
    assert reads == ["a.docx", "b.docx"]
