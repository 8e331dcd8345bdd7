"""Failover with in-process nodes on a real NATS: leader, re-placement with state, term stamps,
non-critical removal, callers waiting through the failover, leader change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from foundation._node import Node
from foundation.failover.failover import LEADER_KEY, TERM_KEY, Failover, FailoverEvent
from foundation.messaging.policies import AwaitFailover
from foundation.testing import NatsServer
from jido import AgentNotFoundError, Signal
from tests.foundation.apps import AGENTS, ClusteredCounter, LocalCounter
from tests.foundation.conftest import eventually

pytestmark = pytest.mark.nats


def add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


def failover_of(node: Node) -> Failover:
    existing = getattr(node, "failover", None)
    if isinstance(existing, Failover):
        return existing
    fo: Failover = node.__dict__.setdefault("_test_failover", Failover(node))
    return fo


@pytest.fixture
async def trio(nats_server: NatsServer) -> AsyncIterator[list[Node]]:
    nodes = [Node(nats=nats_server.url, name=f"n{i}", agents=AGENTS) for i in range(3)]
    started: list[Failover] = []
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        for n in nodes:
            await n.membership.wait_members([m.id for m in nodes])
            n.ref_policy = AwaitFailover()
            fo = failover_of(n)
            if getattr(n, "failover", None) is not fo:
                await fo.start()
                started.append(fo)
        yield nodes
    finally:
        for fo in started:
            await fo.stop()
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def leader_of(nodes: list[Node]) -> tuple[Node, int]:
    async def find() -> tuple[Node, int] | None:
        for n in nodes:
            fo = failover_of(n)
            if fo.is_leader:
                return n, fo.term
        return None

    found: tuple[Node, int] = await eventually(find, timeout=10)
    return found


async def test_one_leader_and_critical_agents_come_back_with_state(trio: list[Node]) -> None:
    leader, term = await leader_of(trio)
    assert sum(failover_of(n).is_leader for n in trio) == 1
    victim = next(n for n in trio if n is not leader)
    survivor = next(n for n in trio if n is not leader and n is not victim)
    events: list[FailoverEvent] = []
    failover_of(leader).add_listener(events.append)

    ids = [f"c{i}" for i in range(6)]
    for i, agent_id in enumerate(ids):
        await survivor.spawn(ClusteredCounter, id=agent_id, node=victim.id)
        await survivor.ref(agent_id).call(add(i + 1))
    await victim.spawn(LocalCounter, id="scratch")
    before = {a: (await survivor.registry.lookup(a, consistent=True)).epoch for a in ids}

    await victim.stop()  # records stay assigned to it: the leader must move them

    # Callers wait through the failover (AwaitFailover) instead of failing.
    outs = await asyncio.gather(*(survivor.ref(a).call(add(0), timeout=10) for a in ids))
    assert [o["count"] for o in outs] == [i + 1 for i in range(6)]
    for agent_id in ids:
        rec = await survivor.registry.lookup(agent_id, consistent=True)
        assert rec is not None and rec.node != victim.id
        assert rec.epoch > before[agent_id]
        assert rec.metadata[TERM_KEY] == term and rec.metadata[LEADER_KEY] == leader.id
    await eventually(
        lambda: _none(survivor.registry.lookup("scratch", consistent=True)), timeout=10
    )
    moved = [e for e in events if e.kind == "moved"]
    assert {e.agent_id for e in moved} == set(ids)
    assert all(e.from_node == victim.id and e.term == term for e in moved)
    assert any(e.kind == "removed" and e.agent_id == "scratch" for e in events)
    # spread over both remaining nodes
    owners = {(await survivor.registry.lookup(a)).node for a in ids}  # type: ignore[union-attr]
    assert owners == {leader.id, survivor.id}
    stats = failover_of(leader).statistics()
    assert stats.leader and stats.moved == 6 and stats.removed == 1


async def _none(coro: object) -> bool:
    return await coro is None  # type: ignore[misc]


async def test_a_new_leader_takes_over_and_finishes_the_job(trio: list[Node]) -> None:
    leader, term = await leader_of(trio)
    others = [n for n in trio if n is not leader]
    await others[0].spawn(ClusteredCounter, id="k1", node=leader.id)
    await others[0].ref("k1").call(add(5))
    await failover_of(leader).stop()
    await leader.stop()
    new_leader, new_term = await leader_of(others)
    assert new_term > term
    out = await others[0].ref("k1").call(add(1), timeout=10)
    assert out["count"] == 6
    rec = await others[1].registry.lookup("k1", consistent=True)
    assert rec is not None and rec.metadata[TERM_KEY] == new_term
    assert rec.metadata[LEADER_KEY] == new_leader.id


async def test_a_caller_without_the_policy_fails_fast(trio: list[Node]) -> None:
    from foundation._errors import NodeUnavailableError
    from foundation.messaging.ref import FailFast

    leader, _ = await leader_of(trio)
    victim = next(n for n in trio if n is not leader)
    caller = next(n for n in trio if n is not leader and n is not victim)
    await caller.spawn(ClusteredCounter, id="ff", node=victim.id)
    await failover_of(victim).stop()
    await victim.stop()
    caller.ref_policy = FailFast()
    # Either it is already moved (then the call works) or it fails fast: never hangs.
    try:
        out = await caller.ref("ff").call(add(1), timeout=10)
    except NodeUnavailableError:
        pass
    else:
        assert out["count"] == 1


class _Lead:
    """A fake tenure for unit tests of the leader's checks."""

    def __init__(self, term: int, held: bool = True) -> None:
        self.term = term
        self.held = held

    async def wait_lost(self) -> None:
        await asyncio.Event().wait()

    async def resign(self) -> None:
        self.held = False


async def test_a_record_from_a_newer_term_deposes_the_leader() -> None:
    import msgspec

    from foundation._errors import LeaseLostError
    from foundation.failover.failover import DeposedError
    from foundation.registry.registry import RegistryRecord

    class _Node:
        id = "n9"

    fo = Failover(_Node())
    record = RegistryRecord(agent_id="a", node="gone", metadata={TERM_KEY: 7})
    await fo._check_term(_Lead(7), record)  # same term: fine
    await fo._check_term(_Lead(8), record)  # older stamp: fine
    with pytest.raises(DeposedError):  # no leader lease to ask here: the stamp is believed
        await fo._check_term(_Lead(6), record)
    with pytest.raises(LeaseLostError):
        await fo._check_term(_Lead(9, held=False), record)
    stamped = fo._stamp(_Lead(9), record)
    assert stamped.metadata == {TERM_KEY: 9, LEADER_KEY: "n9"}
    assert msgspec.structs.replace(stamped, metadata={}).agent_id == "a"


async def test_non_critical_agents_are_re_placed_when_configured(nats_server: NatsServer) -> None:
    from foundation.failover.failover import FailoverOptions

    opts = FailoverOptions(non_critical="replace")
    nodes = [
        Node(nats=nats_server.url, name=f"m{i}", agents=AGENTS, failover=opts) for i in range(2)
    ]
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        a, b = nodes
        await a.membership.wait_members(["m0", "m1"])
        await b.spawn(LocalCounter, id="keep-me")  # non-critical, placed on m1
        await b.ref("keep-me").call(add(4))
        await b.stop()
        out = await a.ref("keep-me").call(add(1), timeout=10)
        assert out["count"] == 5  # re-placed with its last committed state
        record = await a.registry.lookup("keep-me", consistent=True)
        assert record is not None and record.node == "m0" and not record.critical
    finally:
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def test_a_caller_gives_up_when_the_agent_is_removed(trio: list[Node]) -> None:
    from foundation._errors import NodeUnavailableError

    leader, _ = await leader_of(trio)
    victim = next(n for n in trio if n is not leader)
    caller = next(n for n in trio if n is not leader and n is not victim)
    await victim.spawn(LocalCounter, id="gone-for-good")  # non-critical: removed on failover
    await victim.stop()
    with pytest.raises((NodeUnavailableError, AgentNotFoundError)):
        await caller.ref("gone-for-good").call(add(1), timeout=10)
    assert await caller.registry.lookup("gone-for-good", consistent=True) is None
