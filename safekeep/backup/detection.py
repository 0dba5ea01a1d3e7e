"""Ransomware and mass-change detection, from what each incremental already sees.

The catalog tells every run what it records and removes (``RunStats``): files whose content
changed, renames, extension changes, known ransom-note names, deletions, and for new file
content the Shannon entropy of its first bytes (the drive collector measures it while the
bytes stream past; encrypted data is ~8 bits per byte, documents and text far less). A file
whose content jumps from low to high entropy, or turns into an unknown high-entropy type, or
changes extension on a rename, is suspicious.

``assess`` measures a finished run against the account and service's own baseline (a running
mean and spread of suspicious files and deletions per run, fed only by runs that raised
nothing) and the deployment's floors. Above the threshold it records a ``Detection`` naming
the first suspicious time and the last clean snapshot, emits a webhook and an audit event,
and from then on retention keeps every version of the account until the hold is released.
Backups keep running; a continuing attack updates the open detection instead of raising a
new one.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.runtime import Runtime
from safekeep.tenants.audit import service as audit
from safekeep.tenants.detection import repository
from safekeep.tenants.models import (
    Account,
    Detection,
    DetectionBaseline,
    DetectionKind,
    DetectionThreshold,
    Tenant,
    utcnow,
)
from safekeep.tenants.webhook import service as webhooks

if TYPE_CHECKING:
    from safekeep.backup.catalog import ItemRecord, SnapshotRun
    from safekeep.tenants.models import ItemVersion

log = structlog.get_logger(__name__)

HEAD_BYTES = 4096  # what the entropy is measured on: the first chunk's first bytes
ENCRYPTED_BITS = 7.5  # at or above: looks encrypted (random data of 4 KiB measures ~7.95)
PLAIN_BITS = 7.0  # a previous version below this was not encrypted or compressed
# Formats whose bytes are compressed already: high entropy is their normal.
COMPRESSED = frozenset(
    {
        ".docx",
        ".xlsx",
        ".pptx",
        ".docm",
        ".xlsm",
        ".zip",
        ".7z",
        ".rar",
        ".gz",
        ".tgz",
        ".bz2",
        ".xz",
        ".zst",
        ".jpg",
        ".jpeg",
        ".png",
        ".gif",
        ".webp",
        ".heic",
        ".mp3",
        ".mp4",
        ".m4a",
        ".mov",
        ".avi",
        ".mkv",
        ".pdf",
        ".one",
        ".msg",
        ".pst",
        ".cab",
        ".jar",
        ".apk",
    }
)
RANSOM_NOTE = re.compile(
    r"(read[_ -]?me|how[_ -]?to|help|instructions?|restore|recover|decrypt)[^/]*"
    r"(decrypt|restore|recover|files|ransom|instructions?)|^_?readme\.txt$|ransom",
    re.IGNORECASE,
)
SAMPLES = 20


def shannon_entropy(data: bytes) -> float:
    """Bits per byte, 0 (constant) to 8 (uniformly random)."""
    if not data:
        return 0.0
    total = len(data)
    return -sum(n / total * math.log2(n / total) for n in Counter(data).values())


def head_entropy(head: bytes) -> float:
    return round(shannon_entropy(head[:HEAD_BYTES]), 3)


def _extension(name: str) -> str:
    return PurePosixPath(name.lower()).suffix


def looks_like_ransom_note(name: str) -> bool:
    return bool(RANSOM_NOTE.search(name))


@dataclass
class RunStats:
    """What one run saw, for detection. Fed by the catalog, one call per record/removal."""

    files_changed: int = 0
    files_added: int = 0
    renamed: int = 0
    extension_changed: int = 0
    encrypted: int = 0
    deleted: int = 0
    ransom_notes: list[str] = field(default_factory=list)
    suspicious: set[str] = field(default_factory=set)
    touched_ids: set[str] = field(default_factory=set)
    samples: list[str] = field(default_factory=list)
    first_suspicious_at: datetime | None = None

    def _suspect(self, rec: ItemRecord) -> None:
        if rec.external_id in self.suspicious:
            return
        self.suspicious.add(rec.external_id)
        if len(self.samples) < SAMPLES:
            self.samples.append(rec.name)
        when = rec.modified_at
        if when is not None and (
            self.first_suspicious_at is None or when < self.first_suspicious_at
        ):
            self.first_suspicious_at = when

    def observe_record(self, previous: ItemVersion | None, rec: ItemRecord, outcome: str) -> None:
        if rec.kind != "file" or outcome not in ("added", "changed"):
            return
        self.touched_ids.add(rec.external_id)
        entropy = rec.meta.get("head_entropy") if rec.meta else None
        high = isinstance(entropy, int | float) and entropy >= ENCRYPTED_BITS
        extension = _extension(rec.name)
        if looks_like_ransom_note(rec.name) and previous is None:
            self.ransom_notes.append(rec.name[:200])
        if previous is None:
            self.files_added += 1
            if high and extension not in COMPRESSED:
                self.encrypted += 1
                self._suspect(rec)
            return
        content_changed = previous.content_hash != (rec.content.sha256 if rec.content else None)
        if content_changed:
            self.files_changed += 1
        if previous.name != rec.name:
            self.renamed += 1
            if _extension(previous.name or "") != extension:
                self.extension_changed += 1
                self._suspect(rec)
        if content_changed and high:
            before = (previous.meta or {}).get("head_entropy")
            was_plain = isinstance(before, int | float) and before < PLAIN_BITS
            if was_plain or (before is None and extension not in COMPRESSED):
                self.encrypted += 1
                self._suspect(rec)

    def observe_removal(self, version: ItemVersion) -> None:
        if "folder" not in (version.kind or ""):
            self.deleted += 1

    @property
    def quiet(self) -> bool:
        """Nothing suspicious and nothing deleted: no threshold can be reached."""
        return not self.suspicious and not self.deleted

    @property
    def touched(self) -> int:
        """Files added, changed or renamed, each once (a rename with new bytes is one)."""
        return len(self.touched_ids) or self.files_changed + self.files_added + self.renamed


@dataclass(frozen=True)
class Thresholds:
    min_files: int
    min_deletions: int
    sigmas: float


def _limit(mean: float, m2: float, runs: int, sigmas: float, floor: int) -> float:
    spread = math.sqrt(m2 / (runs - 1)) if runs > 1 else 0.0
    return max(float(floor), mean + sigmas * spread)


def _limits(base: DetectionBaseline | None, t: Thresholds) -> tuple[float, float]:
    """The suspicious-file and deletion counts a run must reach to be flagged; without a
    baseline, the floors alone."""
    if base is None:
        return float(t.min_files), float(t.min_deletions)
    return (
        _limit(base.suspicious_mean, base.suspicious_m2, base.runs, t.sigmas, t.min_files),
        _limit(base.deleted_mean, base.deleted_m2, base.runs, t.sigmas, t.min_deletions),
    )


def _welford(mean: float, m2: float, runs: int, value: float) -> tuple[float, float]:
    delta = value - mean
    mean += delta / runs
    return mean, m2 + delta * (value - mean)


@dataclass
class Verdict:
    kind: DetectionKind
    evidence: dict[str, Any]
    first_suspicious_at: datetime


def judge(stats: RunStats, base: DetectionBaseline | None, t: Thresholds) -> list[Verdict]:
    """What this run's figures say, against the baseline (none yet: the floors alone)."""
    runs = base.runs if base else 0
    out: list[Verdict] = []
    suspicious = len(stats.suspicious)
    limit, deletion_limit = _limits(base, t)
    share = suspicious / max(stats.touched, 1)
    noted = bool(stats.ransom_notes) and suspicious >= 3
    if (suspicious >= limit and share >= 0.5) or noted:
        out.append(
            Verdict(
                DetectionKind.ransomware,
                {
                    "suspicious_files": suspicious,
                    "threshold": round(limit, 2),
                    "share_of_changed": round(share, 3),
                    "files_changed": stats.files_changed,
                    "files_added": stats.files_added,
                    "renamed": stats.renamed,
                    "extension_changed": stats.extension_changed,
                    "looks_encrypted": stats.encrypted,
                    "ransom_notes": stats.ransom_notes[:SAMPLES],
                    "samples": stats.samples,
                    "baseline_runs": runs,
                },
                stats.first_suspicious_at or utcnow(),
            )
        )
    if stats.deleted >= deletion_limit:
        out.append(
            Verdict(
                DetectionKind.mass_deletion,
                {
                    "deleted": stats.deleted,
                    "threshold": round(deletion_limit, 2),
                    "baseline_runs": runs,
                },
                utcnow(),
            )
        )
    return out


def thresholds(runtime: Runtime, own: DetectionThreshold | None = None) -> Thresholds:
    """The tenant's own thresholds when it set them, else the deployment's."""
    if own is not None:
        return Thresholds(own.min_files, own.min_deletions, own.sigmas)
    s = runtime.settings
    return Thresholds(s.detection_min_files, s.detection_min_deletions, s.detection_sigmas)


async def assess(
    session: AsyncSession, runtime: Runtime, tenant: Tenant, account: Account, run: SnapshotRun
) -> list[Detection]:
    """Judge a finished run; record, notify and hold on a detection; else learn from it.

    Runs in the caller's transaction, the one that completes the run, which it must never
    fail: the judging is done before anything is written; raising a detection (its row, the
    webhook, the audit event) runs under a savepoint, so a failure there is undone alone;
    learning is one write of the baseline, which fails only when the database itself does.
    A run that raises nothing costs one read and one write. A run that saw nothing at all
    (nearly every run) costs one write, learnt in SQL (``repository.learn_quiet_run``): no
    limit can be reached by it, whatever the baseline, since every limit is at least its
    floor and floors are at least 1. No baseline yet, or a hold, falls through to the read."""
    if run.stats.quiet and await repository.learn_quiet_run(
        session, account.id, run.service, now=utcnow()
    ):
        return []
    standing = await repository.standing(session, tenant.id, account.id, run.service)
    if standing is None:  # the tenant was deleted meanwhile
        return []
    base, own, held = standing
    verdicts = judge(run.stats, base, thresholds(runtime, own))
    if verdicts:
        async with session.begin_nested():
            return await _raise(session, tenant, account, run, verdicts)
    if not held:  # an attack under way is never learnt as normal
        _learn(session, tenant, account, run, base)
    return []


async def _raise(
    session: AsyncSession,
    tenant: Tenant,
    account: Account,
    run: SnapshotRun,
    verdicts: list[Verdict],
) -> list[Detection]:
    raised: list[Detection] = []
    for verdict in verdicts:
        found = await repository.unreleased(session, account.id, run.service, verdict.kind)
        if found is not None:
            # The attack goes on: one detection, its evidence growing, its clean point kept.
            found.evidence = {
                **verdict.evidence,
                "runs": int(found.evidence.get("runs", 1)) + 1,
            }
            continue
        clean = await repository.last_clean_snapshot(session, account.id, run.service, run.seq)
        first = verdict.first_suspicious_at
        if clean is not None and clean.completed_at and first < clean.completed_at:
            # Timestamps come from the files; what was backed up clean bounds them.
            first = clean.completed_at
        detection = Detection(
            tenant_id=tenant.id,
            account_id=account.id,
            service=run.service,
            kind=verdict.kind,
            first_suspicious_at=first,
            snapshot_id=run.snapshot_id,
            last_clean_snapshot_id=clean.id if clean else None,
            last_clean_at=clean.completed_at if clean else None,
            evidence={**verdict.evidence, "runs": 1},
        )
        session.add(detection)
        await session.flush()
        data = detection_event(detection)
        event = f"tenant.{verdict.kind.value}_suspected"
        await webhooks.emit(session, msp_id=tenant.msp_id, event_type=event, data=data)
        await audit.record(
            session,
            msp_id=tenant.msp_id,
            actor="detection",
            action=f"detection.{verdict.kind.value}_suspected",
            tenant_id=tenant.id,
            target_type="account",
            target_id=account.id,
            details=data,
        )
        raised.append(detection)
        log.warning(
            "detection_raised",
            tenant_id=str(tenant.id),
            account_id=str(account.id),
            kind=verdict.kind.value,
        )
    return raised


def _learn(
    session: AsyncSession,
    tenant: Tenant,
    account: Account,
    run: SnapshotRun,
    base: DetectionBaseline | None,
) -> None:
    """Fold a quiet run into the account and service's baseline (written at commit)."""
    stats = run.stats
    runs = (base.runs if base else 0) + 1
    suspicious = _welford(
        base.suspicious_mean if base else 0.0,
        base.suspicious_m2 if base else 0.0,
        runs,
        len(stats.suspicious),
    )
    deleted = _welford(
        base.deleted_mean if base else 0.0, base.deleted_m2 if base else 0.0, runs, stats.deleted
    )
    if base is None:
        base = DetectionBaseline(account_id=account.id, service=run.service, tenant_id=tenant.id)
        session.add(base)
    base.runs = runs
    base.suspicious_mean, base.suspicious_m2 = suspicious
    base.deleted_mean, base.deleted_m2 = deleted


def detection_event(detection: Detection) -> dict[str, Any]:
    return {
        "detection_id": str(detection.id),
        "tenant_id": str(detection.tenant_id),
        "account_id": str(detection.account_id),
        "service": detection.service,
        "kind": detection.kind.value,
        "first_suspicious_at": detection.first_suspicious_at.isoformat(),
        "last_clean_snapshot_id": (
            str(detection.last_clean_snapshot_id) if detection.last_clean_snapshot_id else None
        ),
        "last_clean_at": detection.last_clean_at.isoformat() if detection.last_clean_at else None,
        "evidence": detection.evidence,
    }
