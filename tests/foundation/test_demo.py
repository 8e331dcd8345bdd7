"""``foundation demo`` end to end, in a subprocess, bounded in time; nothing is left running."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.foundation.conftest import REPO_ROOT, repo_env

pytestmark = [pytest.mark.nats, pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of an exited parent is reaped by init; treat "Z" as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_demo_runs_and_cleans_up() -> None:
    env = repo_env(COLUMNS="200")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "foundation.cli.main",
            "demo",
            "--duration",
            "2",
            "--orders",
            "6",
            "--concurrency",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(REPO_ROOT),
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "summary" in out and "p50" in out and "p99" in out, out
    assert "acknowledged orders applied once" in out, out
    nodes = [int(p) for p in re.findall(r"node-\d \(pid (\d+)\)", out)]
    assert len(nodes) == 3, out
    nats = [int(p) for p in re.findall(r"nats \(pid (\d+)\)", out)]
    assert len(nats) == 1, out
    assert not [p for p in nodes + nats if _alive(p)], "processes left running"
