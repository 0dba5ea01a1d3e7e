"""bench.common.MachineCPU says where the cores went during a benchmark's load (issue 18's
knee is read against it), so its attribution is tested with processes whose use is known."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.common import MachineCPU

BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"


def test_a_busy_child_is_counted_in_its_group_and_an_idle_one_is_not() -> None:
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    try:
        time.sleep(0.2)  # started (its imports) before the window opens
        with MachineCPU(
            {
                "idle": lambda pid, _cmd, _parent: pid == idle.pid,
                "burner": lambda _pid, _cmd, parent: parent == os.getpid(),
            }
        ) as cpu:
            burner = subprocess.Popen([sys.executable, "-c", BURN])
            time.sleep(1.0)  # the burner spends 0.4 CPU-s, then sleeps until collected
            seconds_so_far = cpu.seconds
        burner.wait(10)
    finally:
        idle.kill()
        idle.wait()
    assert seconds_so_far == {}  # filled in on the way out, not before
    # The burner began inside the window: all of its CPU counts (its start-up too).
    assert 0.4 <= cpu.seconds["burner"] < 1.0
    assert cpu.seconds["idle"] < 0.05
    assert cpu.wall >= 1.0
    assert 0.3 < cpu.cores("burner") < 1.0
    # The machine's total holds everything, this test's own process included.
    assert cpu.machine >= cpu.seconds["burner"] * 0.9
    line = cpu.line()
    assert line.startswith("idle 0.0") and "burner 0." in line and "other" in line
    assert f"of {os.cpu_count()} cores" in line
