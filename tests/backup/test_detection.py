"""Ransomware and mass-deletion detection on real incrementals against graphsim: ordinary
edits stay quiet, an attack raises one detection (webhook, audit, last clean snapshot), a
continuing attack grows it, retention holds the account's versions until released."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select

from graphsim import Simulator
from graphsim.subscriptions import mass_delete
from safekeep.backup import detection, recovery
from safekeep.backup.jobs.purge import retention_sweep
from safekeep.backup.jobs.restore import run_restore_job
from safekeep.tenants import outbox
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import (
    Account,
    AuditEvent,
    Detection,
    DetectionBaseline,
    DetectionKind,
    DetectionStatus,
    DetectionThreshold,
    ItemVersion,
    JobIssue,
    JobKind,
    Snapshot,
    WebhookDelivery,
)
from safekeep.tenants.scope import system_principal
from tests.backup.harness import EngineHarness
from tests.backup.services.test_onedrive import drive_of, files_by_path
from tests.factories import create_webhook


def test_entropy_tells_random_bytes_from_text() -> None:
    assert detection.shannon_entropy(b"") == 0.0
    assert detection.shannon_entropy(b"aaaa") == 0.0
    assert detection.head_entropy(os.urandom(4096)) >= detection.ENCRYPTED_BITS
    text = b"Quarterly report: revenue grew in every region, costs fell slightly. " * 60
    assert detection.head_entropy(text) < 5


@pytest.mark.parametrize(
    ("name", "note"),
    [
        ("README_DECRYPT.txt", True),
        ("HOW_TO_RECOVER_FILES.html", True),
        ("_readme.txt", True),
        ("restore-my-files.txt", True),
        ("Quarterly report.docx", False),
        ("holiday photos.zip", False),
    ],
)
def test_ransom_note_names(name: str, note: bool) -> None:
    assert detection.looks_like_ransom_note(name) is note


def test_baseline_raises_the_threshold_for_a_noisy_account() -> None:
    stats = detection.RunStats(files_changed=12, suspicious={str(i) for i in range(12)})
    floors = detection.Thresholds(min_files=10, min_deletions=50, sigmas=4.0)
    assert [v.kind for v in detection.judge(stats, None, floors)] == [DetectionKind.ransomware]
    # An account that routinely writes ~12 high-entropy files a run, give or take 3.
    noisy = DetectionBaseline(
        runs=30, suspicious_mean=12.0, suspicious_m2=29 * 9.0, deleted_mean=0.0, deleted_m2=0.0
    )
    assert detection.judge(stats, noisy, floors) == []
    stats.suspicious |= {f"x{i}" for i in range(20)}
    assert [v.kind for v in detection.judge(stats, noisy, floors)] == [DetectionKind.ransomware]


def add_notes(sim: Simulator, user_id: str, count: int) -> None:
    for n in range(count):
        text = f"Minutes of meeting {n}: agreed to ship the plan on time.\n" * 40
        sim.add_file(sim.tenant().id, f"/Notes/meeting-{n}.txt", user=user_id, data=text.encode())


async def detections(h: EngineHarness) -> list[Detection]:
    async with h.runtime.db.session() as session:
        rows = await session.execute(
            select(Detection)
            .where(Detection.tenant_id == h.tenant.id)
            .order_by(Detection.created_at)
        )
        return list(rows.scalars())


async def drive_user(h: EngineHarness, sim: Simulator, skip: int = 0) -> tuple[Account, str]:
    users = sorted((u for u in sim.tenant().users.values() if u.drive_id), key=lambda u: u.upn)
    user = users[skip]
    return await h.account(user.id), user.id


def drive_files(sim: Simulator, user_id: str) -> list[str]:
    """The ids of the live files in a user's OneDrive at graphsim, sorted."""
    tenant = sim.tenant()
    drive = tenant.drives[tenant.users[user_id].drive_id or ""]
    return sorted(i.id for i in drive.items.values() if not i.is_folder and not i.deleted)


async def backed_up_drive_user(
    h: EngineHarness, sim: Simulator, notes: int, **floors: int
) -> tuple[Account, str]:
    """The clean start an attack is judged against: the deployment's detection floors set to
    ``floors``, the tenant discovered, and the first drive user's OneDrive, with ``notes``
    plain-text files added, backed up once."""
    h.runtime.settings = h.runtime.settings.model_copy(update=floors)
    await h.discover()
    victim, victim_graph_id = await drive_user(h, sim)
    add_notes(sim, victim_graph_id, notes)
    await h.backup(victim, "onedrive")
    return victim, victim_graph_id


async def test_ransomware_raises_once_and_holds_clean_versions(
    engine: EngineHarness, sim: Simulator
) -> None:
    h = engine
    victim, victim_graph_id = await backed_up_drive_user(
        h, sim, 20, detection_min_files=4, detection_min_deletions=5
    )
    await create_webhook(
        h.runtime,
        h.msp.id,
        "https://hooks.example.com/detections",
        ["tenant.ransomware_suspected", "tenant.mass_deletion_suspected"],
    )
    tid = sim.tenant().id
    files = drive_files(sim, victim_graph_id)
    # A week of ordinary edits: a few files touched per run, text appended.
    for day in range(7):
        for item_id in files[day % 3 :: 5]:
            sim.edit_item(tid, item_id)
        await h.backup(victim, "onedrive")
    assert await detections(h) == []
    async with h.runtime.db.session() as session:
        base = await session.get(DetectionBaseline, (victim.id, "onedrive"))
    assert base is not None and base.runs == 8

    async with h.runtime.db.session() as session:
        clean = (
            await session.execute(
                select(Snapshot)
                .where(Snapshot.account_id == victim.id, Snapshot.service == "onedrive")
                .order_by(Snapshot.seq.desc())
                .limit(1)
            )
        ).scalar_one()
    hit = sim.ransomware(tid, victim_graph_id, 6)
    run, _ = await h.backup(victim, "onedrive")
    [found] = await detections(h)
    assert found.kind == DetectionKind.ransomware
    assert found.status == DetectionStatus.open
    assert found.account_id == victim.id
    assert found.snapshot_id == run.snapshot_id
    assert found.last_clean_snapshot_id == clean.id
    assert found.last_clean_at == clean.completed_at
    assert clean.completed_at is not None and found.first_suspicious_at >= clean.completed_at
    assert found.evidence["suspicious_files"] == len(hit)
    assert found.evidence["extension_changed"] == len(hit)
    # Encrypted-looking: those whose clean bytes were not high-entropy already (graphsim's
    # generated binaries are; its text and office stand-ins are not).
    with sim.engine.world.lock:
        drive = sim.tenant().drives[sim.tenant().users[victim_graph_id].drive_id or ""]
        before = [
            detection.head_entropy(b"".join(drive.items[i].versions[0].content.iter_range(0, 4096)))
            for i in hit
        ]
    assert found.evidence["looks_encrypted"] == sum(1 for e in before if e < detection.PLAIN_BITS)
    assert found.evidence["looks_encrypted"] >= 1
    assert all(name.endswith(".locked") for name in found.evidence["samples"])
    async with h.runtime.db.session() as session:
        deliveries = list(
            (
                await session.execute(
                    select(WebhookDelivery).where(WebhookDelivery.msp_id == h.msp.id)
                )
            ).scalars()
        )
        audits = list(
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == "detection.ransomware_suspected")
                )
            ).scalars()
        )
    assert [d.event_type for d in deliveries] == ["tenant.ransomware_suspected"]
    data = deliveries[0].payload["data"]
    assert data["account_id"] == str(victim.id)
    assert data["last_clean_snapshot_id"] == str(clean.id)
    assert data["first_suspicious_at"] == found.first_suspicious_at.isoformat()
    assert len(audits) == 1 and audits[0].target_id == str(victim.id)

    # The attack goes on: the same detection grows, no second webhook.
    sim.ransomware(tid, victim_graph_id, 12)
    await h.backup(victim, "onedrive")
    [again] = await detections(h)
    assert again.id == found.id and again.evidence["runs"] == 2
    async with h.runtime.db.session() as session:
        count = len(list((await session.execute(select(WebhookDelivery))).scalars()))
    assert count == 1

    # Retention: superseded clean versions of the held account stay; others' go.
    other, other_graph_id = await drive_user(h, sim, skip=1)
    await h.backup(other, "onedrive")
    other_files = drive_files(sim, other_graph_id)
    sim.edit_item(tid, other_files[0])
    await h.backup(other, "onedrive")
    await h.set_policy(retention_days=0)
    job = await h.start_job(JobKind.purge, {"retention": True})
    tenant = await h.reload_tenant()
    await retention_sweep(h.runtime, tenant, job)

    async def superseded(account: Account) -> int:
        async with h.runtime.db.session() as session:
            rows = await session.execute(
                select(ItemVersion.id).where(
                    ItemVersion.account_id == account.id, ItemVersion.valid_to.is_not(None)
                )
            )
            return len(list(rows))

    assert await superseded(victim) > 0
    assert await superseded(other) == 0
    async with h.runtime.db.session() as session:
        row = await session.get(Detection, found.id)
        assert row is not None
        row.status = DetectionStatus.released
    await retention_sweep(h.runtime, tenant, job)
    assert await superseded(victim) == 0


async def test_mass_deletion_is_raised_against_the_floor(
    engine: EngineHarness, sim: Simulator
) -> None:
    h = engine
    victim, victim_graph_id = await backed_up_drive_user(h, sim, 20, detection_min_deletions=5)
    tid = sim.tenant().id
    # Two deletions are ordinary housekeeping.
    with sim.engine.world.lock:
        tenant = sim.tenant(tid)
        mass_delete(tenant, tenant.users[victim_graph_id], 2, "files")
    await h.backup(victim, "onedrive")
    assert await detections(h) == []
    with sim.engine.world.lock:
        tenant = sim.tenant(tid)
        gone = mass_delete(tenant, tenant.users[victim_graph_id], 12, "files")
    await h.backup(victim, "onedrive")
    [found] = await detections(h)
    assert found.kind == DetectionKind.mass_deletion
    assert found.evidence["deleted"] == len(gone)
    # The floor is 5, but this account deleted 0 then 2 before: its own spread sets the bar.
    assert 5 < found.evidence["threshold"] < len(gone)
    async with h.runtime.db.session() as session:
        still = await catalog.open_external_ids(session, victim.id, "onedrive", ["file"])
    assert not set(gone) & set(still)


async def test_one_call_restore_brings_the_onedrive_back(
    engine: EngineHarness, sim: Simulator
) -> None:
    h = engine
    victim, victim_graph_id = await backed_up_drive_user(h, sim, 10, detection_min_files=4)
    drive = drive_of(h, victim_graph_id)
    clean = files_by_path(drive)
    hit = sim.ransomware(sim.tenant().id, victim_graph_id, 8)
    await h.backup(victim, "onedrive")
    [found] = await detections(h)
    with outbox.collect():
        async with h.runtime.db.session() as session:
            job = await recovery.request_clean_restore(
                session, system_principal(h.msp.id), h.tenant.id, found.id
            )
    await run_restore_job(h.runtime, str(job.id))
    done = await h.job(job.id)
    assert done.status in ("succeeded", "partial"), (done.status, done.error_detail)
    now = files_by_path(drive)
    for path, sha in clean.items():
        assert now[path] == sha  # every clean file, byte for byte, under its own name
    # The encrypted copies are left alone (named in the report), nothing else is new.
    assert set(now) - set(clean) == {drive.path_of(drive.items[i]) for i in hit}


async def test_one_call_restore_puts_back_files_encrypted_in_place(
    engine: EngineHarness, sim: Simulator
) -> None:
    """Ransomware that encrypts synced files in place keeps each file's driveItem and name:
    the recovery puts the clean bytes back into the same items (the encrypted content stays
    in their version history) and names every file it replaced in the job's issues."""
    h = engine
    victim, victim_graph_id = await backed_up_drive_user(h, sim, 10, detection_min_files=4)
    drive = drive_of(h, victim_graph_id)
    clean = files_by_path(drive)
    tid = sim.tenant().id
    notes = [i for i in drive_files(sim, victim_graph_id) if drive.items[i].name.endswith(".txt")]
    hit = sorted(notes)[:8]
    for item_id in hit:
        sim.edit_item(tid, item_id, {"content": os.urandom(2048)})
    await h.backup(victim, "onedrive")
    [found] = await detections(h)
    assert found.kind == DetectionKind.ransomware
    with outbox.collect():
        async with h.runtime.db.session() as session:
            job = await recovery.request_clean_restore(
                session, system_principal(h.msp.id), h.tenant.id, found.id
            )
    assert job.params["conflict"] == "overwrite"
    await run_restore_job(h.runtime, str(job.id))
    done = await h.job(job.id)
    assert done.status == "succeeded", (done.status, done.error_detail)
    assert files_by_path(drive) == clean  # every file, byte for byte, nothing new
    assert {drive.items[i].id for i in hit} == set(hit)  # the same items, not new ones
    totals = done.result["totals"]
    assert (totals["restored"], totals["noted"], totals["failed"]) == (8, 8, 0)
    assert totals["skipped_existing"] == len(clean) - 8
    async with h.runtime.db.session() as session:
        issues = (await session.scalars(select(JobIssue).where(JobIssue.job_id == job.id))).all()
    assert sorted(str(i.item_name) for i in issues) == sorted(drive.items[i].name for i in hit)
    assert {(i.code, i.detail) for i in issues} == {
        (
            "restored_with_note",
            "replaced its content changed since the restore point (the replaced content "
            "stays in the file's version history)",
        )
    }


async def test_mass_deletion_of_mail(engine: EngineHarness, sim: Simulator) -> None:
    h = engine
    await h.discover()
    user = sorted(
        (u for u in sim.tenant().users.values() if u.mailbox_enabled), key=lambda u: u.upn
    )[0]
    account = await h.account(user.id)
    await h.backup(account, "mail")
    # The tenant's own floor wins over the deployment's: 1000 deletions, nothing raised.
    async with h.runtime.db.session() as session:
        session.add(
            DetectionThreshold(tenant_id=h.tenant.id, min_files=10, min_deletions=1000, sigmas=4)
        )
    with sim.engine.world.lock:
        tenant = sim.tenant()
        first = mass_delete(tenant, tenant.users[user.id], 3, "mail")
    await h.backup(account, "mail")
    assert await detections(h) == []
    async with h.runtime.db.session() as session:
        row = await session.get(DetectionThreshold, h.tenant.id)
        assert row is not None
        row.min_deletions, row.sigmas = 3, 1.0  # the 3 deletions above are its normal now
    with sim.engine.world.lock:
        tenant = sim.tenant()
        gone = mass_delete(tenant, tenant.users[user.id], 50, "mail")  # the rest of it
    del first
    assert len(gone) >= 3
    await h.backup(account, "mail")
    [found] = await detections(h)
    assert (found.kind, found.service) == (DetectionKind.mass_deletion, "mail")
    assert found.evidence["deleted"] == len(gone)
    assert found.last_clean_snapshot_id is not None


@pytest.fixture(params=["engine", "scaleout_engine"])
def either_engine(request: pytest.FixtureRequest) -> EngineHarness:
    """The embedded column (SQLite) and the scale-out one (PostgreSQL): savepoints differ."""
    harness: EngineHarness = request.getfixturevalue(request.param)
    return harness


async def test_a_failing_detection_never_fails_the_backup_nor_leaves_half_of_itself(
    either_engine: EngineHarness, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Detection runs in the transaction that completes the run, under a savepoint: when it
    fails after writing (the detection row, the webhook), the run still completes and none
    of detection's writes stay; the next run raises the detection whole."""
    h = either_engine
    victim, victim_graph_id = await backed_up_drive_user(
        h, sim, 20, detection_min_files=4, detection_min_deletions=5
    )
    await create_webhook(
        h.runtime, h.msp.id, "https://hooks.example.com/detections", ["tenant.ransomware_suspected"]
    )
    sim.ransomware(sim.tenant().id, victim_graph_id, 6)

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("audit is broken")

    monkeypatch.setattr(detection.audit, "record", broken)
    run, _ = await h.backup(victim, "onedrive")
    async with h.runtime.db.session() as session:
        snapshot = await session.get(Snapshot, run.snapshot_id)
        deliveries = (await session.execute(select(WebhookDelivery))).scalars().all()
    assert snapshot is not None and snapshot.status.value == "complete"
    assert await detections(h) == []
    assert deliveries == []  # emitted inside the savepoint, undone with it

    monkeypatch.undo()
    sim.ransomware(sim.tenant().id, victim_graph_id, 6)
    await h.backup(victim, "onedrive")
    [found] = await detections(h)
    assert found.kind == DetectionKind.ransomware
    async with h.runtime.db.session() as session:
        deliveries = (await session.execute(select(WebhookDelivery))).scalars().all()
    assert [d.event_type for d in deliveries] == ["tenant.ransomware_suspected"]


async def baseline(h: EngineHarness, account: Account, service: str) -> DetectionBaseline:
    async with h.runtime.db.session() as session:
        base = await session.get(DetectionBaseline, (account.id, service))
    assert base is not None
    return base


async def test_a_run_that_saw_nothing_is_learnt_without_a_read_and_never_while_held(
    either_engine: EngineHarness, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nearly every run sees nothing suspicious and deletes nothing: it is folded into the
    baseline by one UPDATE whose arithmetic is Python's Welford step, without reading the
    account's standing. A run with no baseline yet, or under an unreleased detection, takes
    the read: the first makes the baseline, the second leaves it alone."""
    h = either_engine
    victim, _ = await backed_up_drive_user(h, sim, 5)
    first = await baseline(h, victim, "onedrive")  # the first run had none: made through the read
    assert first.runs == 1
    reads: list[object] = []
    real = detection.repository.standing

    async def counted(*args: object, **kwargs: object) -> object:
        reads.append(args)
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(detection.repository, "standing", counted)
    async with h.runtime.db.session() as session:  # a history to fold into: 7 runs
        row = await session.get(DetectionBaseline, (victim.id, "onedrive"))
        assert row is not None
        row.runs, row.suspicious_mean, row.suspicious_m2 = 7, 2.5, 11.0
        row.deleted_mean, row.deleted_m2 = 4.0, 30.0

    run, _ = await h.backup(victim, "onedrive")
    assert run.stats.quiet and reads == []
    learnt = await baseline(h, victim, "onedrive")
    assert learnt.runs == 8
    mean, m2 = detection._welford(2.5, 11.0, 8, 0)
    assert (learnt.suspicious_mean, learnt.suspicious_m2) == pytest.approx((mean, m2), rel=1e-12)
    mean, m2 = detection._welford(4.0, 30.0, 8, 0)
    assert (learnt.deleted_mean, learnt.deleted_m2) == pytest.approx((mean, m2), rel=1e-12)
    assert learnt.updated_at > first.updated_at

    async with h.runtime.db.session() as session:  # an attack under way holds the account
        session.add(
            Detection(
                tenant_id=h.tenant.id,
                account_id=victim.id,
                service="onedrive",
                kind=DetectionKind.ransomware,
                first_suspicious_at=learnt.updated_at,
            )
        )
    await h.backup(victim, "onedrive")
    assert len(reads) == 1  # the UPDATE matched nothing: the read saw the hold
    held = await baseline(h, victim, "onedrive")
    assert (held.runs, held.suspicious_mean, held.deleted_m2) == (
        8,
        learnt.suspicious_mean,
        learnt.deleted_m2,
    )
