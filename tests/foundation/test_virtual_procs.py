"""Virtual agents across node processes: concurrent first calls from three processes activate an
agent once; a passivated agent is activated again by another process with its state, and one
passivated with a pending schedule is woken when due by another process after its own died."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from foundation._node import Node
from foundation.nats.kv import connect
from foundation.registry.registry import ClusterRegistry
from foundation.testing import NatsServer
from tests.foundation.conftest import REPO_ROOT, eventually

pytestmark = [pytest.mark.nats, pytest.mark.slow]

CALLERS = ("c1", "c2", "c3")


async def _spawn_callers(url: str) -> dict[str, Any]:
    """The caller processes by name, each ready (every caller a member)."""
    procs = {
        name: await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.foundation.virtual_caller",
            url,
            name,
            ",".join(CALLERS),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(REPO_ROOT),
        )
        for name in CALLERS
    }
    try:
        for name, proc in procs.items():
            assert proc.stdout is not None
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line, f"caller {name} exited"
                if f"node {name} ready".encode() in line:
                    break
    except BaseException:
        await _stop(procs)
        raise
    return procs


async def _stop(procs: dict[str, Any]) -> None:
    for proc in procs.values():
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.fixture
async def callers(nats_server: NatsServer) -> AsyncIterator[Any]:
    procs = await _spawn_callers(nats_server.url)
    nc = await connect(nats_server.url)
    try:
        yield nc
    finally:
        await nc.close()
        await _stop(procs)


async def _call(nc: Any, caller: str, agent_id: str) -> dict[str, Any]:
    reply = await nc.request(f"test.vcall.{caller}", agent_id.encode(), timeout=15)
    body: dict[str, Any] = orjson.loads(reply.data)
    assert "error" not in body, body
    return body


async def test_concurrent_first_calls_from_three_processes(callers: Any) -> None:
    nc = callers
    for trial in range(10):
        agent_id = f"session-race{trial}"
        outs = await asyncio.gather(*(_call(nc, c, agent_id) for c in CALLERS))
        assert sorted(o["count"] for o in outs) == [1, 2, 3], outs
    # one activation per agent, whichever process won each race
    totals = await asyncio.gather(*(_call(nc, c, "session-tally") for c in CALLERS))
    assert sum(o["activations"] for o in totals) == 10 + 1


async def test_passivated_agent_reactivates_in_another_process(
    callers: Any, nats_server: NatsServer
) -> None:
    nc = callers
    assert (await _call(nc, "c1", "visit-p1"))["count"] == 1
    registry = ClusterRegistry(await connect(nats_server.url))
    await registry.start()
    try:
        while await registry.lookup("visit-p1", consistent=True) is not None:
            await registry.wait_change()  # passivated: the record is removed
    finally:
        await registry.stop()
    assert (await _call(nc, "c2", "visit-p1"))["count"] == 2
    assert (await _call(nc, "c3", "visit-p1"))["count"] == 3


async def test_a_passivated_agent_is_woken_when_due_after_its_process_was_killed(
    nats_server: NatsServer,
) -> None:
    procs = await _spawn_callers(nats_server.url)
    nc = await connect(nats_server.url)
    driver = Node(nats=nats_server.url, name="vdriver", agents=[], failover=False)
    try:
        await driver.start()
        ask = orjson.dumps({"id": "visit-w1", "remind": 6.0})
        reply = orjson.loads((await nc.request("test.vcall.c1", ask, timeout=15)).data)
        assert reply.get("count") == 1, reply
        record = await driver.registry.lookup("visit-w1", consistent=True)
        assert record is not None
        while await driver.registry.lookup("visit-w1", consistent=True) is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(driver.registry.wait_change(), 1.0)
        # passivated with its reminder pending; the process that held it dies
        cp = await driver.state_store.load("visit-w1")
        assert cp is not None and cp.state["fired"] == 0 and "remind" in cp.timers
        procs[record.node].send_signal(signal.SIGKILL)

        async def fired_once() -> bool:
            cp = await driver.state_store.load("visit-w1")
            return cp is not None and cp.state["fired"] == 1 and cp.timers == {}

        await eventually(fired_once, timeout=30)
        woken = await driver.registry.lookup("visit-w1", consistent=True)
        assert woken is None or woken.node != record.node
    finally:
        await driver.stop()
        await nc.close()
        await _stop(procs)
