"""Fault benchmark: the fault suite (``tests/faults``) with more trials, and its figures.

``make test`` runs a few trials; this runs the same tests (real worker processes, real
services, private PostgreSQL and Redis for the restarts) with ``--trials`` kill trials and the
restart trials repeated, then prints each figure beside its target:

* PostgreSQL or Redis down 5 s mid-backup, default lease (600 s) and recovery (1,200 s):
  seconds from the service answering again to the backup finishing (target < 30 s);
* a worker SIGKILLed at a random moment: seconds from the kill to the job finishing (it
  includes the 4 s lease the trial uses and the new worker's start);
* backups through S3 faults (``--s3-rate``) and Graph 5xx/429s: duration and faults met.

Every trial also checks that the catalog matches graphsim (nothing missing, duplicated or
stale, bytes identical); a failed check fails the run. Needs the services of
``scripts/services`` (and ``eval "$(scripts/services env)"``). Run by hand:

    .venv/bin/python -m bench.faults [--trials 10] [--s3-rate 0.05]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURE = re.compile(r"FAULT-FIGURE (\w+)=([\d.]+)s(.*)")
TARGETS = {
    "redis_restart_recovery": "< 30 s after Redis answers again",
    "postgres_restart_recovery": "< 30 s after PostgreSQL answers again",
    "worker_kill_resume": "no target (lease 4 s + worker start)",
    "backup_under_s3_faults": "succeeds, nothing lost",
    "backup_under_graph_faults": "succeeds, nothing lost",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="kill trials (and restart rounds)")
    parser.add_argument("--s3-rate", type=float, default=0.05, help="share of S3 requests failed")
    args = parser.parse_args()
    env = {
        **os.environ,
        "SAFEKEEP_FAULT_TRIALS": str(args.trials),
        "SAFEKEEP_FAULT_S3_RATE": str(args.s3_rate),
        "SAFEKEEP_FAULT_RESTARTS": str(args.trials),
    }
    command = [sys.executable, "-m", "pytest", "tests/faults", "-q", "-s"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    figures: dict[str, list[float]] = defaultdict(list)
    details: dict[str, list[str]] = defaultdict(list)
    for line in done.stdout.splitlines():
        match = FIGURE.search(line)
        if match:
            figures[match[1]].append(float(match[2]))
            details[match[1]].append(match[3].strip())
    print(f"fault suite: {args.trials} trials, S3 fault rate {args.s3_rate:.0%}")
    print(f"{'figure':30} {'n':>3} {'min':>7} {'median':>7} {'max':>7}  target")
    for name, values in figures.items():
        print(
            f"{name:30} {len(values):3d} {min(values):6.1f}s {statistics.median(values):6.1f}s "
            f"{max(values):6.1f}s  {TARGETS.get(name, '')}"
        )
    for name, lines in details.items():
        for line in lines:
            print(f"  {name}: {line}")
    summary = done.stdout.strip().splitlines()[-1:] or ["(no output)"]
    print(f"pytest: {summary[0]}")
    if done.returncode != 0:
        print(done.stdout[-6000:], done.stderr[-3000:], sep="\n")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
