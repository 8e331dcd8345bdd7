"""The peers' private virtualenv (``.bench-peers/``): find it, or create it and install peers.

Peers are installed with pip from the package index on first use of a full run; a smoke run
never installs (it only uses what is already there). An installation failure is reported as a
reason string, never raised: the benchmark then shows the peer's rows as unavailable.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".bench-peers"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Peer:
    """A peer: its pip requirement(s), the module proving it is importable, its workload."""

    name: str
    requirements: tuple[str, ...]
    module: str
    script: str


PEERS: dict[str, Peer] = {
    "ray": Peer("ray", ("ray==2.60.0", "psutil"), "ray", "ray_workload.py"),
    "autogen": Peer("autogen", ("autogen-core==0.7.5",), "autogen_core", "autogen_workload.py"),
}


def venv_python() -> Path:
    """The peers' interpreter (it may not exist yet)."""
    return VENV / "bin" / "python"


def importable(peer: Peer) -> bool:
    """Whether ``peer`` is installed in the peers' virtualenv."""
    py = venv_python()
    if not py.exists():
        return False
    try:
        res = subprocess.run(
            [str(py), "-c", f"import {peer.module}"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def _log(name: str, text: str) -> Path:
    path = VENV / f"install-{name}.log"
    path.write_text(text)
    return path


def install(peer: Peer, *, timeout: float = 1800.0) -> str | None:
    """Create the virtualenv if needed and pip-install ``peer``; the failure reason, or None."""
    t0 = time.monotonic()
    if not venv_python().exists():
        res = subprocess.run(
            [sys.executable, "-m", "venv", str(VENV)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if res.returncode != 0:
            return f"could not create {VENV.name}/: {res.stderr.strip()[-300:]}"
    try:
        res = subprocess.run(
            [str(venv_python()), "-m", "pip", "install", "-q", *peer.requirements],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"pip install {' '.join(peer.requirements)} took over {timeout:.0f}s"
    log = _log(peer.name, res.stdout + res.stderr)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return (
            f"pip install {' '.join(peer.requirements)} failed ({tail[0][:200]}); "
            f"see {log.relative_to(ROOT)}"
        )
    if not importable(peer):
        return f"{peer.module} not importable after installing; see {log.relative_to(ROOT)}"
    _log(peer.name, f"installed in {time.monotonic() - t0:.0f}s\n" + res.stdout + res.stderr)
    return None


def ensure(peer: Peer, *, allow_install: bool) -> str | None:
    """Make ``peer`` usable; returns why it is unavailable, or None when it is ready."""
    if importable(peer):
        return None
    if not allow_install:
        return f"not installed in {VENV.name}/ and smoke runs never download; run a full bench"
    return install(peer)
