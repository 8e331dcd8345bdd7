"""Virtual agents across node processes: concurrent first calls from three processes activate an
agent once; a passivated agent is activated again by another process with its state."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from foundation.nats.kv import connect
from foundation.registry.registry import ClusterRegistry
from foundation.testing import NatsServer
from tests.foundation.conftest import REPO_ROOT

pytestmark = [pytest.mark.nats, pytest.mark.slow]

CALLERS = ("c1", "c2", "c3")


@pytest.fixture
async def callers(nats_server: NatsServer) -> AsyncIterator[Any]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.foundation.virtual_caller",
            nats_server.url,
            name,
            ",".join(CALLERS),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(REPO_ROOT),
        )
        for name in CALLERS
    ]
    nc = await connect(nats_server.url)
    try:
        for proc, name in zip(procs, CALLERS, strict=True):
            assert proc.stdout is not None
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line, f"caller {name} exited"
                if f"node {name} ready".encode() in line:
                    break
        yield nc
    finally:
        await nc.close()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


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
