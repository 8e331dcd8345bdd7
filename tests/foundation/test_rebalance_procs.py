"""``foundation drain NODE`` against node processes: agents move with their state, the node
process exits."""

from __future__ import annotations

import asyncio
import sys

import pytest

from foundation._node import Node
from foundation.testing import NatsServer
from jido import Signal
from tests.foundation.apps import ClusteredCounter
from tests.foundation.conftest import REPO_ROOT, node_cluster, repo_env

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def test_drain_command_moves_agents_and_stops_the_node(nats_server: NatsServer) -> None:
    async with node_cluster(nats_server) as procs:
        await procs.start_nodes("p1", "p2")
        driver = Node(nats=nats_server.url, name="driver", failover=False)
        async with driver:
            await driver.membership.wait_members(["p1", "p2"])
            for i in range(3):
                await driver.spawn(ClusteredCounter, id=f"dr{i}", node="p2")
                await driver.ref(f"dr{i}").call(
                    Signal(type="counter.add", source="/t", data={"n": i + 1})
                )
            env = repo_env(COLUMNS="200")
            cli = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "foundation.cli.main", "drain", "p2", "--nats", nats_server.url),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=str(REPO_ROOT),
            )
            out, _ = await asyncio.wait_for(cli.communicate(), 60)
            text = out.decode()
            assert cli.returncode == 0, text
            assert "drained and left" in text and "dr0" in text, text
            code = await asyncio.wait_for(procs.wait_exit("p2"), 30)
            assert code == 0
            for i in range(3):
                record = await driver.registry.lookup(f"dr{i}", consistent=True)
                assert record is not None and record.node == "p1"
                assert (await driver.ref(f"dr{i}").state()).count == i + 1  # type: ignore[attr-defined]


async def test_drain_command_refuses_an_unknown_node(nats_server: NatsServer) -> None:
    env = repo_env(COLUMNS="200")
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "foundation.cli.main", "drain", "nope", "--nats", nats_server.url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=str(REPO_ROOT),
    )
    out, _ = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 1
    assert "not a live member" in out.decode()
