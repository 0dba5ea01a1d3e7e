"""bench.scratch.scratch_directory: a benchmark's files are made only once an earlier run's
removal can no longer cost it CPU (ext4 without a journal holds freed inodes back a minute
and checks each of them while making a file), and are removed after the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import scratch


def _mountinfo(tmp_path: Path, fstype: str, source: str) -> Path:
    """A mountinfo file whose one line is the mount ``tmp_path`` lives on."""
    dev = os.stat(tmp_path).st_dev
    line = (
        f"29 1 {os.major(dev)}:{os.minor(dev)} / / rw,relatime shared:1 - "
        f"{fstype} {source} rw,discard\n"
    )
    path = tmp_path / f"mountinfo-{fstype}-{Path(source).name}"
    path.write_text("22 29 0:21 / /proc rw shared:12 - proc proc rw\n" + line)
    return path


def test_ext4_frees_inodes_late_only_without_a_journal(tmp_path: Path) -> None:
    journals = tmp_path / "jbd2"
    journals.mkdir()
    ext4 = _mountinfo(tmp_path, "ext4", "/dev/vda1")
    assert scratch.frees_inodes_late(tmp_path, mountinfo=ext4, journals=journals)
    (journals / "vda1-8").mkdir()  # what the kernel lists for a journaled ext4
    assert not scratch.frees_inodes_late(tmp_path, mountinfo=ext4, journals=journals)
    (journals / "vda1-8").rmdir()
    (journals / "vda10-8").mkdir()  # another device's journal says nothing of this one
    assert not scratch.frees_inodes_late(
        tmp_path, mountinfo=_mountinfo(tmp_path, "ext4", "/dev/vda10"), journals=journals
    )
    assert scratch.frees_inodes_late(tmp_path, mountinfo=ext4, journals=journals)
    for other in ("xfs", "tmpfs", "overlay"):
        assert not scratch.frees_inodes_late(
            tmp_path, mountinfo=_mountinfo(tmp_path, other, "/dev/vda1"), journals=journals
        )
    # A mount the file is not on is never taken for it.
    assert not scratch.frees_inodes_late(tmp_path, mountinfo=tmp_path / "absent", journals=journals)


@pytest.fixture
def stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "removed"
    monkeypatch.setattr(scratch, "_REMOVED", path)
    return path


def test_a_run_waits_out_the_rest_of_the_minute_after_an_earlier_removal(
    stamp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = {"value": True}
    monkeypatch.setattr(scratch, "frees_inodes_late", lambda _path: late["value"])
    assert scratch.settle_seconds() == 0.0  # nothing removed yet
    stamp.touch()
    removed = stamp.stat().st_mtime
    assert scratch.settle_seconds(now=removed + 30) == pytest.approx(scratch.SETTLE_S - 30)
    assert scratch.settle_seconds(now=removed + scratch.SETTLE_S + 1) == 0.0
    assert scratch.settle_seconds(now=removed - 600) == scratch.SETTLE_S  # a clock set back
    late["value"] = False  # a journaled or other file system: no wait
    assert scratch.settle_seconds(now=removed + 30) == 0.0


def test_the_directory_is_removed_after_the_run_and_the_removal_stamped(
    stamp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(scratch, "frees_inodes_late", lambda _path: True)
    monkeypatch.setattr(scratch.time, "sleep", slept.append)
    with scratch.scratch_directory("bench-test-") as first:
        (first / "data").mkdir()
        (first / "data" / "chunk").write_bytes(b"x")
        assert first.name.startswith("bench-test-")
    assert not first.exists()
    assert stamp.exists()
    assert slept == []  # the first run had nothing to wait for
    with pytest.raises(RuntimeError), scratch.scratch_directory("bench-test-") as second:
        raise RuntimeError("a run that fails")
    assert not second.exists()  # removed all the same
    assert len(slept) == 1 and 0 < slept[0] <= scratch.SETTLE_S
