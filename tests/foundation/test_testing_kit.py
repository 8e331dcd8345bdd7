"""The public test kit: a LocalCluster with its own NATS, faults per node, nothing left running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from foundation.testing import LocalCluster, NatsServer
from tests.foundation.conftest import REPO_ROOT, node_cluster

pytestmark = [pytest.mark.nats, pytest.mark.slow]

APP = "tests.foundation.apps:AGENTS"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_local_cluster_with_its_own_nats_restarts_a_killed_node_and_cleans_up(
    tmp_path: Path,
) -> None:
    async with LocalCluster(
        nodes=2, app=APP, store_dir=tmp_path, pythonpath=[REPO_ROOT], cwd=REPO_ROOT
    ) as lc:
        assert lc.names == ["node-1", "node-2"]
        first = lc.pids()
        assert set(first) == {"node-1", "node-2", "nats"}
        await lc.wait_joined("node-1", "node-2")
        lc.kill("node-2")
        assert await lc.wait_exit("node-2") == -signal.SIGKILL
        await lc.wait_left("node-2")  # its lease expired
        again = await lc.restart_node("node-2")
        assert again.pid != first["node-2"] and again.alive
        await lc.wait_joined("node-2")
        assert "node node-2 ready" in again.log_tail()
        assert "node node-2 ready" in again.log_path.read_text()
        everything = [*first.values(), again.pid]
    assert not [pid for pid in everything if _alive(pid)], "processes left running"


async def test_a_node_that_exits_before_it_is_ready_fails_the_start_with_its_output(
    nats_server: NatsServer,
) -> None:
    async with node_cluster(nats_server, app="tests.foundation.no_such_module:AGENTS") as lc:
        with pytest.raises(RuntimeError, match="exited before it was ready") as info:
            await lc.start_node("broken")
        assert "no_such_module" in str(info.value)
        assert not lc.node("broken").alive
