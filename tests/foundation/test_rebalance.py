"""Rebalancing on join, hand-over after the current command, and drain (in-process nodes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from foundation._node import Node
from foundation.failover.failover import LEADER_KEY, TERM_KEY, FailoverOptions
from foundation.failover.rebalance import hand_over, request_drain
from foundation.hosting.clustered import Clustered
from foundation.testing import NatsServer
from jido import Action, ActionContext, Agent, Signal
from tests.foundation.apps import AGENTS, Add, ClusteredCounter, CounterState
from tests.foundation.conftest import eventually

pytestmark = pytest.mark.nats


STARTED = asyncio.Event()


@pytest.fixture(autouse=True)
def _fresh_started() -> None:
    """A new event per test: an asyncio.Event belongs to the loop that first waits on it."""
    global STARTED
    STARTED = asyncio.Event()


class Gate(Action):
    """Signal the test that the command is running, work a while, count one."""

    name = "gate"

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        STARTED.set()
        await asyncio.sleep(0.3)  # the command in progress during the hand-over
        return {"count": ctx.state.count + 1}


class Gated(Clustered, Agent, critical=True, placement="least_loaded"):
    """A counter with a long command."""

    state_model = CounterState
    actions = [Add, Gate]
    routes = [("counter.add", Add), ("gate.run", Gate)]


HOSTED = [*AGENTS, Gated]


def add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


def opts() -> FailoverOptions:
    return FailoverOptions(rebalance_interval=0.2, max_moves=2)


@pytest.fixture
async def pair(nats_server: NatsServer) -> AsyncIterator[list[Node]]:
    nodes = [
        Node(nats=nats_server.url, name=f"n{i}", agents=HOSTED, failover=opts()) for i in range(2)
    ]
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        for n in nodes:
            await n.membership.wait_members([m.id for m in nodes])
        yield nodes
    finally:
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def leader(nodes: list[Node]) -> Node:
    async def find() -> Node | None:
        return next((n for n in nodes if n.failover is not None and n.failover.is_leader), None)

    found: Node = await eventually(find, timeout=10)
    return found


async def test_a_joining_node_receives_agents_with_their_state(
    pair: list[Node], nats_server: NatsServer
) -> None:
    lead = await leader(pair)
    assert lead.failover is not None
    await lead.failover.wait_leader()
    ids = [f"r{i}" for i in range(6)]
    for i, agent_id in enumerate(ids):
        await lead.spawn(ClusteredCounter, id=agent_id, node="n0")
        await lead.ref(agent_id).call(add(i + 1))
    late = Node(nats=nats_server.url, name="n2", agents=HOSTED, failover=opts())
    await late.start()
    try:

        async def filled() -> bool:
            return len(lead.registry.assigned_to("n2")) >= 2

        await eventually(filled, timeout=20)
        moved = lead.registry.assigned_to("n2")
        for record in moved:
            assert record.metadata[TERM_KEY] == lead.failover.term
            assert record.metadata[LEADER_KEY] == lead.id
        # bounded: never more than the average (6 agents / 3 nodes = 2) plus the tolerance
        assert len(moved) <= 3
        for i, agent_id in enumerate(ids):
            assert (await late.ref(agent_id).state()).count == i + 1
        assert {m.agent_id for m in moved} <= set(late.local_agents())
    finally:
        await late.stop()


async def test_hand_over_waits_for_the_command_in_progress(pair: list[Node]) -> None:
    a, b = pair
    await a.spawn(Gated, id="busy", node="n0")
    STARTED.clear()
    slow = asyncio.ensure_future(b.ref("busy").call(Signal(type="gate.run", source="/t")))
    await asyncio.wait_for(STARTED.wait(), 10)  # the command is running on n0 now
    out = await hand_over(a, "busy", to="n1", metadata={"why": "test"})
    result = await slow  # finished on the old owner before it moved: not failed, not fenced
    assert result["count"] == 1
    assert out["to"] == "n1" and out["from"] == "n0"
    record = await b.registry.lookup("busy", consistent=True)
    assert record is not None and record.node == "n1" and record.metadata["why"] == "test"
    assert (await a.ref("busy").call(add(1)))["count"] == 2
    assert "busy" in b.local_agents() and "busy" not in a.local_agents()


async def test_drain_moves_every_agent_then_leaves(pair: list[Node]) -> None:
    a, b = pair
    for i in range(4):
        await b.spawn(ClusteredCounter, id=f"d{i}", node="n1")
        await b.ref(f"d{i}").call(add(i + 1))
    answer = await request_drain(a.nc, "n1")
    assert answer == {"node": "n1", "draining": True, "agents": 4}
    await b.wait_stopped()
    await a.membership.wait_gone("n1")
    for i in range(4):
        record = await a.registry.lookup(f"d{i}", consistent=True)
        assert record is not None and record.node == "n0"
        assert (await a.ref(f"d{i}").state()).count == i + 1


async def test_a_call_queued_during_a_hand_over_is_answered_by_the_new_owner(
    pair: list[Node],
) -> None:
    a, b = pair
    await a.spawn(Gated, id="queued", node="n0")
    slow = asyncio.ensure_future(b.ref("queued").call(Signal(type="gate.run", source="/t")))
    await asyncio.wait_for(STARTED.wait(), 10)  # the long command runs on n0
    # Two calls wait in n0's mailbox behind it: one from the other node, one from n0 itself.
    remote = asyncio.ensure_future(b.ref("queued").call(add(5)))
    local = asyncio.ensure_future(a.ref("queued").call(add(7)))
    server = a.runtime._servers["queued"]
    await eventually(lambda: _true(len(server.mailbox) == 2))
    await hand_over(a, "queued", to="n1")
    # The command in progress finished on n0; the queued ones were never handled there, so
    # they were sent on to the new owner instead of failing with AgentStoppedError.
    assert (await slow)["count"] == 1
    counts = sorted([(await remote)["count"], (await local)["count"]])
    assert counts in ([6, 13], [8, 13])  # both applied once, in either order, on n1
    assert (await b.ref("queued").state()).count == 13
    assert "queued" in b.local_agents() and "queued" not in a.local_agents()


async def _true(value: bool) -> bool:
    return value


async def test_a_join_seen_before_leading_is_filled_by_the_next_leader(
    nats_server: NatsServer,
) -> None:
    """The leader (here one that does not rebalance) leaves after a node joined: the node that
    leads next noted that join while it followed, and fills the joined node."""
    first = Node(
        nats=nats_server.url,
        name="n0",
        agents=HOSTED,
        failover=FailoverOptions(rebalance=False),
    )
    follower = Node(nats=nats_server.url, name="n1", agents=HOSTED, failover=opts())
    late = Node(nats=nats_server.url, name="n2", agents=HOSTED, failover=opts())
    try:
        await first.start()
        assert first.failover is not None
        await first.failover.wait_leader()
        await follower.start()
        ids = [f"j{i}" for i in range(6)]
        for i, agent_id in enumerate(ids):
            await follower.spawn(ClusteredCounter, id=agent_id, node="n1")
            await follower.ref(agent_id).call(add(i + 1))
        await late.start()
        rebalancer = follower.failover.rebalancer if follower.failover is not None else None
        assert rebalancer is not None
        await eventually(lambda: _true(rebalancer.pending))  # noted while not leading
        assert not late.registry.assigned_to("n2")  # the leader does not rebalance
        await first.stop()
        # Whichever leads next fills n2: the follower noted its join, and n2 its own start.
        lead = await leader([follower, late])
        assert lead.failover is not None

        async def filled() -> bool:
            return len(follower.registry.assigned_to("n2")) >= 3

        await eventually(filled, timeout=20)
        moved = follower.registry.assigned_to("n2")
        assert len(moved) <= 4  # up to the average (6 agents / 2 hosts) within the tolerance
        for record in moved:
            assert record.metadata[TERM_KEY] == lead.failover.term
            assert record.metadata[LEADER_KEY] == lead.id
        for i, agent_id in enumerate(ids):
            assert (await late.ref(agent_id).state()).count == i + 1
    finally:
        await asyncio.gather(*(n.stop() for n in (late, follower, first)), return_exceptions=True)
