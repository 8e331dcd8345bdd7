"""Three node processes on a real NATS: spawn/lookup/call across processes, concurrent spawns,
membership events, self-fencing of a paused node, graceful drain."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from foundation._node import Node
from foundation.testing import LocalCluster, NatsServer
from jido import Signal
from tests.foundation.apps import AGENTS, ClusteredCounter
from tests.foundation.conftest import REPO_ROOT, node_cluster

pytestmark = [pytest.mark.nats, pytest.mark.slow]

APP = "tests.foundation.apps:AGENTS"
NAMES = ("p1", "p2", "p3")


def add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


@pytest.fixture
async def cluster(nats_server: NatsServer) -> AsyncIterator[tuple[LocalCluster, Node]]:
    async with node_cluster(nats_server, app=APP) as procs:
        await procs.start_nodes(*NAMES)
        driver = Node(nats=nats_server.url, name="driver", agents=AGENTS, capabilities=["driver"])
        async with driver:
            await driver.membership.wait_members(list(NAMES))
            yield procs, driver


async def test_spawn_lookup_call_across_processes(cluster: tuple[LocalCluster, Node]) -> None:
    _, driver = cluster
    for i, name in enumerate(NAMES):
        ref = await driver.spawn(ClusteredCounter, id=f"x{i}", node=name)
        assert (await ref.call(add(i + 1)))["count"] == i + 1
        record = await driver.registry.lookup(f"x{i}", consistent=True)
        assert record.node == name
    # placement spreads over processes (the driver hosts the type too)
    for i in range(8):
        await driver.spawn(ClusteredCounter, id=f"auto{i}")
    owners = {(await driver.registry.lookup(f"auto{i}")).node for i in range(8)}
    assert len(owners & set(NAMES)) >= 2
    assert (await driver.ref("x2").state()).count == 3


async def test_concurrent_spawn_from_all_processes(nats_server: NatsServer) -> None:
    """Three processes spawn the same id at the same moment: exactly one wins every trial."""
    import orjson

    from foundation.nats.kv import connect

    racers = ("r1", "r2", "r3")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.foundation.race_spawner",
            nats_server.url,
            name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(REPO_ROOT),
        )
        for name in racers
    ]
    nc = await connect(nats_server.url)
    try:
        for proc, name in zip(procs, racers, strict=True):
            assert proc.stdout is not None
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line, f"racer {name} exited"
                if f"node {name} ready".encode() in line:
                    break
        for trial in range(25):
            agent_id = f"prace-{trial}"
            replies = await asyncio.gather(
                *(nc.request(f"test.race.{n}", agent_id.encode(), timeout=10) for n in racers)
            )
            outcomes = [orjson.loads(r.data) for r in replies]
            winners = [o["ok"] for o in outcomes if "ok" in o]
            assert len(winners) == 1, outcomes
            errors = [o["error"] for o in outcomes if "error" in o]
            assert len(errors) == len(racers) - 1, outcomes
            assert all(e["type"] == "already_registered" for e in errors), errors
    finally:
        await nc.close()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_membership_join_leave_expire_events(
    cluster: tuple[LocalCluster, Node],
) -> None:
    procs, driver = cluster
    events: list[tuple[str, str]] = []
    driver.membership.add_listener(lambda ev: events.append((ev.kind, ev.node_id)))
    await procs.start_nodes("p4")
    await driver.membership.wait_members(["p4"])
    await procs.stop_node("p4", within=20)  # graceful: drain and leave
    await driver.membership.wait_gone("p4")
    procs.kill("p3")  # crash: the lease expires
    await driver.membership.wait_gone("p3")
    kinds = {(k, n) for k, n in events}
    assert ("join", "p4") in kinds
    assert ("leave", "p4") in kinds
    assert ("expire", "p3") in kinds


async def test_paused_node_fences_itself(cluster: tuple[LocalCluster, Node]) -> None:
    procs, driver = cluster
    await driver.spawn(ClusteredCounter, id="frozen", node="p2")
    await driver.ref("frozen").call(add(5))
    procs.pause("p2")
    await driver.membership.wait_gone("p2")  # its lease expired while it was stopped
    # the leader's failover moves the agent to a live node with a new epoch
    async with asyncio.timeout(20):
        while True:
            seen = driver.registry.version  # before the read: a change after it wakes us
            if (await driver.registry.lookup("frozen", consistent=True)).node != "p2":
                break
            await driver.registry.wait_change(after=seen)
    assert (await driver.ref("frozen").call(add(1)))["count"] == 6
    procs.resume("p2")
    await procs.wait_joined("p2")  # it rejoins cleanly
    # the woken node must not have applied anything: the state is the new owner's
    assert (await driver.ref("frozen").state()).count == 6
    stats = await driver.nc.request("foundation.node.p2.stats", b"{}", timeout=5)
    import orjson

    body = orjson.loads(stats.data)["ok"]
    assert "frozen" not in body.get("agent_ids", [])


async def test_sigterm_drains_agents_with_their_state(cluster: tuple[LocalCluster, Node]) -> None:
    procs, driver = cluster
    for i in range(5):
        await driver.spawn(ClusteredCounter, id=f"drain-{i}", node="p3")
        await driver.ref(f"drain-{i}").call(add(i + 1))
    assert await procs.stop_node("p3", within=20) == 0  # SIGTERM: drain, hand over, leave, exit 0
    await driver.membership.wait_gone("p3")
    for i in range(5):
        record = await driver.registry.lookup(f"drain-{i}", consistent=True)
        assert record is not None and record.node != "p3"
        assert (await driver.ref(f"drain-{i}").state()).count == i + 1
