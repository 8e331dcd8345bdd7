"""Durable schedules across node processes: the owner is SIGKILLed (or drained) shortly before
a schedule is due; the agent's next owner re-arms it from the checkpoint and it fires once.
Durable sensors likewise: the next owner starts the sensor recorded in the checkpoint again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from foundation._node import Node
from foundation.testing import LocalCluster, NatsServer
from jido import Signal
from tests.foundation.conftest import eventually, node_cluster
from tests.foundation.timers_app import AGENTS, Beacon, BeaconState, Reminder, ReminderState

pytestmark = [pytest.mark.nats, pytest.mark.slow]

APP = "tests.foundation.timers_app:AGENTS"
NAMES = ("t1", "t2")


def arm(at: float) -> Signal:
    return Signal(type="reminder.arm", source="/test", data={"at": at})


PID = Signal(type="reminder.pid", source="/test")


@pytest.fixture
async def cluster(nats_server: NatsServer) -> AsyncIterator[tuple[LocalCluster, Node]]:
    async with node_cluster(nats_server, app=APP) as procs:
        await procs.start_nodes(*NAMES)
        driver = Node(nats=nats_server.url, name="driver", agents=AGENTS, capabilities=["driver"])
        async with driver:
            await driver.membership.wait_members(list(NAMES))
            yield procs, driver


async def _fired(driver: Node, agent_id: str, old_node: str) -> ReminderState:
    """Wait until the agent has a new owner and the reminder fired there."""
    await driver.membership.wait_gone(old_node)
    while True:
        record = await driver.registry.lookup(agent_id, consistent=True)
        if record is None or record.node == old_node:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(driver.registry.wait_change(), 1.0)
            continue
        state = await driver.ref(agent_id).state()
        assert isinstance(state, ReminderState)
        if state.fired:
            return state
        await asyncio.sleep(0.1)  # activated: its due schedule fires right away


async def _armed_on_t1(driver: Node, agent_id: str, lead: float) -> tuple[int, float]:
    ref = await driver.spawn(Reminder, id=agent_id, node="t1")
    pid = (await ref.call(PID))["pid"]
    due = time.time() + lead
    await ref.call(arm(due))
    cp = await driver.state_store.load(agent_id)
    assert cp is not None and set(cp.timers) == {"ring"}  # committed with the arming command
    return pid, due


async def _fired_once_elsewhere(driver: Node, agent_id: str, old_pid: int) -> None:
    state = await _fired(driver, agent_id, "t1")
    assert len(state.fired) == 1 and state.fired[0][0] != old_pid
    # the firing was committed with its state change: nothing is left to fire again
    cp = await driver.state_store.load(agent_id)
    assert cp is not None and cp.timers == {}
    assert len(cp.state["fired"]) == 1


async def test_owner_killed_one_second_before_due(cluster: tuple[LocalCluster, Node]) -> None:
    procs, driver = cluster
    pid, due = await _armed_on_t1(driver, "rem-kill", lead=2.0)
    assert pid == procs.node("t1").pid
    await asyncio.sleep(max(0.0, due - 1.0 - time.time()))  # fault timing, not synchronisation
    procs.kill("t1")
    await _fired_once_elsewhere(driver, "rem-kill", pid)


async def test_owner_drained_before_due(cluster: tuple[LocalCluster, Node]) -> None:
    procs, driver = cluster
    pid, _due = await _armed_on_t1(driver, "rem-drain", lead=3.0)
    assert await procs.stop_node("t1", within=20) == 0  # SIGTERM: drain and hand over
    await _fired_once_elsewhere(driver, "rem-drain", pid)


async def test_due_while_owner_is_down_fires_once_on_failover(
    cluster: tuple[LocalCluster, Node],
) -> None:
    procs, driver = cluster
    pid, _due = await _armed_on_t1(driver, "rem-late", lead=0.5)
    procs.pause("t1")  # frozen past the due time: it cannot fire, the next owner does
    try:
        await _fired_once_elsewhere(driver, "rem-late", pid)
    finally:
        procs.resume("t1")


async def _beats_again_elsewhere(
    procs: LocalCluster, driver: Node, agent_id: str, drain: bool
) -> None:
    """Start the agent's durable sensor on t1, kill or drain t1, see it beat on the new owner."""
    ref = await driver.spawn(Beacon, id=agent_id, node="t1")
    pid = (await ref.call(Signal(type="beacon.pid", source="/test")))["pid"]
    assert pid == procs.node("t1").pid
    await ref.call(Signal(type="beacon.start", source="/test", data={"interval": 0.1}))
    cp = await driver.state_store.load(agent_id)
    assert cp is not None and set(cp.sensors) == {"beacon"}  # committed with the command

    async def beating(min_ticks: int, owner: int | None) -> BeaconState | None:
        """The state once ``min_ticks`` beats were counted by ``owner`` (None: not t1)."""
        record = await driver.registry.lookup(agent_id, consistent=True)
        if record is None or (owner is None and record.node == "t1"):
            return None
        state = await driver.ref(agent_id).state()
        assert isinstance(state, BeaconState)
        if state.ticks < min_ticks or state.pid == 0:
            return None
        counted_there = state.pid == owner if owner is not None else state.pid != pid
        return state if counted_there else None

    await eventually(lambda: beating(2, pid), timeout=30)
    if drain:
        assert await procs.stop_node("t1", within=20) == 0  # SIGTERM: drain and hand over
    else:
        procs.kill("t1")
    await driver.membership.wait_gone("t1")
    first = await eventually(lambda: beating(1, None), timeout=60)
    assert first.pid != pid
    # the new owner's sensor keeps feeding the agent: its counter grows there
    later = await eventually(lambda: beating(first.ticks + 3, first.pid), timeout=30)
    assert later.ticks >= first.ticks + 3


async def test_sensor_beats_again_on_the_new_owner_after_a_kill(
    cluster: tuple[LocalCluster, Node],
) -> None:
    procs, driver = cluster
    await _beats_again_elsewhere(procs, driver, "beacon-kill", drain=False)


async def test_sensor_beats_again_on_the_drain_target(cluster: tuple[LocalCluster, Node]) -> None:
    procs, driver = cluster
    await _beats_again_elsewhere(procs, driver, "beacon-drain", drain=True)
