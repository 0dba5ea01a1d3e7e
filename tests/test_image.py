"""The container image: its Dockerfile linted, and its build steps replayed into a folder.

No container registry is reachable from these machines, so the base image cannot be pulled and
`make image` (buildah, daemonless) cannot complete here. What can be checked without it is
checked: hadolint's rules on the Dockerfile, the properties the chart relies on (uid 10001, the
`safekeep` entry point, no build tools in the final stage), and the build stage itself: its
COPY and RUN steps are read from the Dockerfile and replayed into a temporary `/app`, and the
result is run the way the image runs it — as uid 10001, from a working directory outside the
checkout — for `safekeep --version`, `safekeep migrate` and the API's `/healthz`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.fixtures.live import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
UV = ROOT / ".tools" / "bin" / "uv"
IMAGE_UID = 10001

pytestmark = pytest.mark.timeout(600)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Instructions with continuation lines joined; global ARG defaults; the stages in order."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede FROM, not {keyword}"
            arg_name, _, default = rest.partition("=")
            global_args[arg_name] = default
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return global_args, stages


def env_pairs(rest: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(rest))


GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
BUILD, FINAL = STAGES[0], STAGES[-1]


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [VENV_BIN / "hadolint", "--format", "json", "--failure-threshold", "style", DOCKERFILE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0


def test_hadolint_would_catch_a_careless_dockerfile(tmp_path: Path) -> None:
    """The lint is a real gate: the usual mistakes of a hand-written Dockerfile fail it."""
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n"
        "RUN pip install safekeep\nCOPY . /src\n"
    )
    result = subprocess.run(
        [VENV_BIN / "hadolint", "--format", "json", careless],
        capture_output=True,
        text=True,
        check=False,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3008", "DL3013", "DL3042"} <= codes
    assert result.returncode != 0


def test_the_image_runs_as_10001_with_safekeep_as_entry_point() -> None:
    assert len(STAGES) >= 2, "multi-stage: build tools stay in the build stage"
    assert GLOBAL_ARGS["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert BUILD.base == FINAL.base == "${PYTHON_IMAGE}"
    final = dict(FINAL.instructions[::-1])  # the last of each keyword wins, as in Docker
    assert final["USER"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert json.loads(final["ENTRYPOINT"]) == ["safekeep"]
    labels = " ".join(rest for keyword, rest in FINAL.instructions if keyword == "LABEL")
    for label in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels


def test_the_final_stage_installs_nothing_and_copies_only_the_built_app() -> None:
    runs = [rest for keyword, rest in FINAL.instructions if keyword == "RUN"]
    for run in runs:
        for tool in ("apt-get", "pip", "uv ", "gcc", "make"):
            assert tool not in run, f"the final stage runs {tool}: {run}"
    copies = [rest for keyword, rest in FINAL.instructions if keyword in ("COPY", "ADD")]
    assert copies, "the final stage must take the built app"
    for copy in copies:
        assert copy.startswith(f"--from={BUILD.name} ") and copy.endswith(" /app /app"), copy
    build_runs = " ".join(rest for keyword, rest in BUILD.instructions if keyword == "RUN")
    assert "uv sync --frozen --no-dev" in build_runs, "the image installs exactly uv.lock"


def replay_build_stage(app_dir: Path, python: str) -> None:
    """Run the build stage's steps with `/app` mapped to ``app_dir``.

    The one step not replayed is the stage's `pip install uv==X`: the checkout's own uv (the
    Makefile's pin) is used instead, after checking it is the same version.
    """
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1]
        for keyword, rest in BUILD.instructions
        if keyword == "ARG" and "=" in rest
    }
    uv_version = subprocess.run(
        [UV, "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert args["UV_VERSION"] == uv_version
    env = {
        "PATH": f"{UV.parent}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "UV_PYTHON": python,
        "UV_NATIVE_TLS": "1",
    }
    for name in ("UV_CACHE_DIR", "SSL_CERT_FILE"):
        if name in os.environ:
            env[name] = os.environ[name]
    workdir = app_dir
    for keyword, rest in BUILD.instructions:
        if keyword == "ENV":
            for name, value in env_pairs(rest).items():
                env[name] = value.replace("/app", str(app_dir))
        elif keyword == "WORKDIR":
            assert rest == "/app"
            workdir = app_dir
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, target = shlex.split(rest)
            for source in sources:
                origin = ROOT / source
                destination = workdir / (target if target not in ("./", ".") else origin.name)
                if target.endswith("/") and target not in ("./",):
                    destination = workdir / target / origin.name
                if origin.is_dir():
                    shutil.copytree(
                        origin, destination, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(origin, destination)
        elif keyword == "RUN":
            if rest.startswith("pip install"):
                assert "uv==${UV_VERSION}" in rest
                continue
            subprocess.run(["bash", "-c", rest], cwd=workdir, env=env, check=True)
        elif keyword != "ARG":
            raise AssertionError(f"the replay does not know {keyword}")


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A folder the image's user can reach (pytest's own tmp_path sits under a 0700 folder)."""
    with tempfile.TemporaryDirectory(prefix="safekeep-image-") as name:
        folder = Path(name)
        folder.chmod(0o755)
        yield folder


def test_the_build_stage_yields_an_app_that_runs_as_the_image_user(image_root: Path) -> None:
    tmp_path = image_root
    # Debian's interpreter at the path the image's would be on: a non-root user can reach it
    # (the checkout's own Python lives under root's home).
    python = shutil.which("python3.11", path="/usr/local/bin:/usr/bin")
    assert python, "a system Python 3.11 is needed to stand in for the base image's"
    app_dir = tmp_path / "app"
    replay_build_stage(app_dir, python)
    bin_dir = app_dir / ".venv" / "bin"
    assert not (bin_dir / "pytest").exists(), "dev dependencies must stay out of the image"
    assert not (bin_dir / "uv").exists()

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    os.chown(scratch, IMAGE_UID, IMAGE_UID)
    as_image_user = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups"]
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "PYTHONDONTWRITEBYTECODE": "1",
        "SAFEKEEP_DATA_DIR": str(scratch / "data"),
    }

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_image_user, *argv], cwd=scratch, env=env, capture_output=True, text=True
        )

    version = run("safekeep", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "safekeep 0.1.0"
    where = run("python", "-c", "import safekeep, sys; print(safekeep.__file__, sys.prefix)")
    assert where.returncode == 0, where.stderr
    module_file, prefix = where.stdout.split()
    assert module_file.startswith(str(app_dir)) and prefix == str(app_dir / ".venv")
    migrated = run("safekeep", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "database is up to date" in migrated.stderr

    port = free_port()
    server = subprocess.Popen(
        [*as_image_user, "safekeep", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=scratch,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        answer = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        assert answer is not None and answer.status_code == 200, answer
        assert answer.json()["status"] == "ok"
    finally:
        server.terminate()
        server.wait(timeout=30)
