"""Two compose-tier runs on one machine do not collide (tests/compose/lib.sh, sourced by run.sh).

Each run gets its own compose project, image tag, work dir and free loopback ports; an engine
started by one run is stopped only when no other run still uses it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "tests" / "compose" / "lib.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("flock") is None,
                                reason="needs bash and flock")


def bash(script: str, **env: str) -> str:
    """Run ``script`` in bash after sourcing lib.sh; its stdout."""
    full = {**{k: v for k, v in os.environ.items() if not k.startswith(("AQ_COMPOSE", "AQ_TEST_", "AQ_ENGINE"))},
            **env}
    out = subprocess.run(["bash", "-c", f'set -euo pipefail; source "$1"; {script}', "bash", str(LIB)],
                         env=full, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def run_ids(**env: str) -> dict[str, str]:
    out = bash(f'aq_run_ids "{ROOT}"; for v in PROJECT_NAME WORK WHEELS IMAGE REDIS_PORT FLOWER_PORT; do '
               'echo "$v=${!v}"; done', **env)
    return dict(line.split("=", 1) for line in out.splitlines())


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_two_runs_get_their_own_project_image_work_dir_and_free_ports() -> None:
    a, b = run_ids(), run_ids()

    for key in ("PROJECT_NAME", "WORK", "WHEELS", "IMAGE"):
        assert a[key] != b[key], key
    assert a["WORK"].startswith(str(ROOT / "tests" / "compose" / ".work") + "/")
    # the only .work path .dockerignore lets into the image's build context
    assert a["WHEELS"].startswith(str(ROOT / "tests" / "compose" / ".work" / "wheels") + "/")
    assert "!tests/compose/.work/wheels" in (ROOT / ".dockerignore").read_text().splitlines()
    assert a["PROJECT_NAME"] in a["IMAGE"] and a["PROJECT_NAME"] in a["WORK"]
    ports = [int(x[k]) for x in (a, b) for k in ("REDIS_PORT", "FLOWER_PORT")]
    assert int(a["REDIS_PORT"]) != int(a["FLOWER_PORT"]) and not any(_listening(p) for p in ports)


def test_knobs_still_choose() -> None:
    ids = run_ids(AQ_COMPOSE_PROJECT="mine", AQ_TEST_REDIS_PORT="7001", AQ_TEST_FLOWER_PORT="7002")

    assert (ids["PROJECT_NAME"], ids["REDIS_PORT"], ids["FLOWER_PORT"]) == ("mine", "7001", "7002")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Stand-ins for runs and engines (sleep processes this test starts and ends by pid)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()


def _sleeper(procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(["sleep", "300"])
    procs.append(p)
    return p


def test_an_engine_started_by_one_run_stays_up_while_another_run_uses_it(tmp_path: Path, procs) -> None:
    state = str(tmp_path / "engine")
    run_a, run_b, engine = _sleeper(procs), _sleeper(procs), _sleeper(procs)

    bash(f"AQ_RUN_PID={run_a.pid} engine_register; engine_adopt {engine.pid}", AQ_ENGINE_STATE=state)
    bash(f"AQ_RUN_PID={run_b.pid} engine_register", AQ_ENGINE_STATE=state)

    out = bash(f"AQ_RUN_PID={run_a.pid} engine_release", AQ_ENGINE_STATE=state)
    assert engine.poll() is None, out  # run B still needs it
    out = bash(f"AQ_RUN_PID={run_b.pid} engine_release", AQ_ENGINE_STATE=state)
    assert engine.wait(timeout=30) is not None, out  # the last user out stops the engine an aq run started


def test_a_crashed_run_does_not_keep_the_engine_and_a_foreign_engine_is_never_stopped(tmp_path: Path,
                                                                                         procs) -> None:
    state = str(tmp_path / "engine")
    run_a, run_b, engine = _sleeper(procs), _sleeper(procs), _sleeper(procs)
    bash(f"AQ_RUN_PID={run_a.pid} engine_register; engine_adopt {engine.pid}", AQ_ENGINE_STATE=state)
    bash(f"AQ_RUN_PID={run_b.pid} engine_register", AQ_ENGINE_STATE=state)
    run_a.kill()
    run_a.wait()

    bash(f"AQ_RUN_PID={run_b.pid} engine_release", AQ_ENGINE_STATE=state)
    assert engine.wait(timeout=30) is not None

    foreign = _sleeper(procs)  # an engine no aq run started: never adopted, never stopped
    bash(f"AQ_RUN_PID={run_b.pid} engine_register; AQ_RUN_PID={run_b.pid} engine_release", AQ_ENGINE_STATE=state)
    assert foreign.poll() is None


def test_keep_engine_leaves_it_running(tmp_path: Path, procs) -> None:
    state = str(tmp_path / "engine")
    run_a, engine = _sleeper(procs), _sleeper(procs)
    bash(f"AQ_RUN_PID={run_a.pid} engine_register; engine_adopt {engine.pid}", AQ_ENGINE_STATE=state)

    bash(f"AQ_RUN_PID={run_a.pid} engine_release keep", AQ_ENGINE_STATE=state)

    assert engine.poll() is None
