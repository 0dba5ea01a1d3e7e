"""An embedded process loads no client of a service it does not use: redis-py, pika,
opensearch-py and boto3 cost a worker about 40 MB of memory between them (issue 17's
peak-RSS row), so they are imported where a configured URL needs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCALE_OUT_CLIENTS = ("redis", "pika", "opensearchpy", "boto3", "botocore", "aiohttp")


def test_the_api_and_the_worker_import_no_scale_out_client(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import safekeep.api.app, safekeep.runtime, safekeep.workers.process, safekeep.cli\n"
        "from safekeep.settings import Settings\n"
        "from safekeep.workers import broker\n"
        "broker.configure(Settings())  # the embedded queue, as `safekeep serve` starts it\n"
        f"print(','.join(m for m in {SCALE_OUT_CLIENTS!r} if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEKEEP_")}
    env["SAFEKEEP_DATA_DIR"] = str(tmp_path)
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    assert loaded == "", f"imported at start-up: {loaded}"


def test_their_connection_errors_are_transient_once_loaded() -> None:
    import opensearchpy.exceptions
    import pika.exceptions
    import redis

    from safekeep.transient import is_transient

    for error in (
        redis.ConnectionError("down"),
        redis.TimeoutError("slow"),
        pika.exceptions.AMQPConnectionError(),
        opensearchpy.exceptions.ConnectionError("N/A", "refused", None),
    ):
        assert is_transient(error), error
    assert not is_transient(redis.ResponseError("WRONGTYPE"))
