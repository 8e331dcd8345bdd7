"""Virtual agents: activation on the first message (once, however many nodes race), passivation
when idle (state kept, record released), reactivation anywhere."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from foundation._node import Node
from foundation.testing import NatsServer
from jido import AgentNotFoundError, Signal
from tests.foundation.apps import ClusteredCounter
from tests.foundation.conftest import eventually
from tests.foundation.virtual_app import AGENTS, Session, TallyState, Visit

pytestmark = [pytest.mark.nats]


def bump(n: int = 1, remind: float | None = None) -> Signal:
    return Signal(type="tally.bump", source="/test", data={"n": n, "remind": remind})


@pytest.fixture
async def nodes(nats_server: NatsServer) -> AsyncIterator[list[Node]]:
    out = [
        Node(
            nats=nats_server.url,
            name=f"v{i}",
            agents=[*AGENTS, ClusteredCounter],
            reconcile_interval=0.2,
        )
        for i in range(3)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for node in out:
            await stack.enter_async_context(node)
        await out[0].membership.wait_members([n.id for n in out])
        yield out


async def _gone(node: Node, agent_id: str) -> None:
    """Wait until ``agent_id`` has no registry record (it was passivated)."""
    while await node.registry.lookup(agent_id, consistent=True) is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(node.registry.wait_change(), 1.0)


async def test_call_by_id_prefix_activates_without_spawn(nodes: list[Node]) -> None:
    out = await nodes[0].ref("session-42").call(bump(2))
    assert out["count"] == 2
    record = await nodes[1].registry.lookup("session-42", consistent=True)
    assert record is not None and record.metadata.get("virtual") is True
    # any node reaches the same activation
    assert (await nodes[2].ref("session-42").call(bump(1)))["count"] == 3


async def test_ref_with_class_and_cast_activate(nodes: list[Node]) -> None:
    await nodes[1].ref("s-cast", cls=Session).cast(bump(5))
    state = await nodes[2].ref("s-cast", cls=Session).state()
    while isinstance(state, TallyState) and state.count < 5:  # the cast is at most once, async
        await asyncio.sleep(0.02)
        state = await nodes[2].ref("s-cast", cls=Session).state()
    assert isinstance(state, TallyState) and state.count == 5


async def test_concurrent_first_calls_from_three_nodes_activate_once(nodes: list[Node]) -> None:
    before = sum(n._counters.get("activations", 0) for n in nodes)
    calls = [n.ref("session-race").call(bump()) for n in nodes for _ in range(5)]
    outs = await asyncio.gather(*calls)
    assert sorted(o["count"] for o in outs) == list(range(1, 16))
    assert sum(n._counters.get("activations", 0) for n in nodes) - before == 1
    owners = [n.id for n in nodes if n.host.local_ref("session-race") is not None]
    assert len(owners) == 1


async def test_idle_agent_passivates_and_reactivates_with_its_state(nodes: list[Node]) -> None:
    await nodes[0].ref("visit-1").call(bump(7))
    await _gone(nodes[0], "visit-1")
    assert all(n.host.local_ref("visit-1") is None for n in nodes)
    cp = await nodes[1].state_store.load("visit-1")
    assert cp is not None and cp.state["count"] == 7
    assert (await nodes[2].ref("visit-1", cls=Visit).call(bump(1)))["count"] == 8


async def test_a_passivated_agent_is_woken_when_its_schedule_is_due(nodes: list[Node]) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time() + 5.0
    await nodes[0].ref("visit-2").call(bump(1, remind=5.0))
    await _gone(nodes[0], "visit-2")  # idle 0.3 s: passivated with its reminder pending
    assert loop.time() < due, "passivation came after the reminder was due"
    assert all(n.host.local_ref("visit-2") is None for n in nodes)
    cp = await nodes[0].state_store.load("visit-2")
    assert cp is not None and cp.state["fired"] == 0 and "remind" in cp.timers
    woken = [n for n in nodes if n._wakeups is not None and "visit-2" in n._wakeups.pending()]
    assert woken, "the due index knows the passivated agent"

    async def fired() -> bool:
        cp = await nodes[1].state_store.load("visit-2")
        return cp is not None and cp.state["fired"] == 1

    await eventually(fired, timeout=20)
    assert loop.time() >= due - 0.1  # fired at its time, not at the passivation
    # woken, fired once (committed with its command), then passivated again: nothing pending
    await _gone(nodes[0], "visit-2")
    cp = await nodes[2].state_store.load("visit-2")
    assert cp is not None and cp.state["fired"] == 1 and cp.timers == {}
    assert cp.state["count"] == 1

    async def index_empty() -> bool:
        return all(n._wakeups is None or "visit-2" not in n._wakeups.pending() for n in nodes)

    await eventually(index_empty)


async def _count(node: Node, agent_id: str, n: int) -> TallyState:
    """Wait until the agent's count reaches ``n`` (casts are applied asynchronously)."""
    while True:
        state = await node.ref(agent_id).state()
        assert isinstance(state, TallyState)
        if state.count >= n:
            return state
        await asyncio.sleep(0.02)


async def test_inbox_agent_passivates_and_resumes_after_its_position(nodes: list[Node]) -> None:
    for _ in range(3):
        await nodes[0].ref("ledger-1").cast(bump())  # acked once stored in the inbox
    assert (await _count(nodes[0], "ledger-1", 3)).count == 3
    await _gone(nodes[0], "ledger-1")
    cp = await nodes[0].state_store.load("ledger-1")
    assert cp is not None and cp.state["count"] == 3 and cp.meta.get("stream_seq")
    for _ in range(2):
        await nodes[1].ref("ledger-1").cast(bump())  # activates it again first
    state = await _count(nodes[2], "ledger-1", 5)
    assert state.count == 5  # nothing of the first three applied twice


async def test_unknown_id_of_a_spawned_type_is_still_not_found(nodes: list[Node]) -> None:
    with pytest.raises(AgentNotFoundError):
        await nodes[0].ref("nobody").call(Signal(type="counter.add", source="/t"))
