"""bench.msp_jobs builds its deployment and times an MSP's poll on it: run small here, so that
the benchmark that guards GET /v1/jobs against other MSPs' load keeps working."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bench.msp_jobs import measure
from safekeep.db import to_sync_url


async def test_the_bench_times_one_msps_poll_among_other_msps_running_jobs(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFEKEEP_DATABASE_URL", postgres_url)
    monkeypatch.setenv("SAFEKEEP_DATA_DIR", str(tmp_path))
    args = argparse.Namespace(tenants=4, history=3, msps=2, tenants_per_msp=2, running=8, polls=3)
    # Each poll must list the MSP's one running job and nothing of the others' (or it stops).
    quiet, busy = await measure(args)
    assert quiet > 0
    assert busy > 0
    engine = create_engine(to_sync_url(postgres_url))
    try:
        with engine.connect() as conn:
            counts: dict[str, int] = dict(
                conn.execute(text("SELECT status, count(*) FROM job GROUP BY status")).all()
            )
    finally:
        engine.dispose()
    # 8 tenants of 4 and 2 x 2 have 3 finished jobs each; 1 + 2 a tenant of the others run.
    assert counts == {"succeeded": 8 * 3, "running": 1 + 4 * 2}
