"""Resource accounting in placement (in-process nodes on a real NATS): reservations are taken by
CAS on a per-node ledger, so no node is over-committed by sequential or concurrent spawns from
any number of nodes; beyond capacity is ``NoCapacityError`` naming what is missing; reservations
are released when agents stop and follow them on failover and hand-over; nodes publish what is
reserved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from foundation._errors import NoCapacityError
from foundation._node import Node
from foundation.hosting.admission import ledger_of
from foundation.hosting.clustered import Clustered
from foundation.placement.reservations import ReservationLedger
from foundation.testing import NatsServer
from jido import Signal
from tests.foundation.apps import Counter
from tests.foundation.conftest import eventually

pytestmark = pytest.mark.nats


class HalfCpu(
    Clustered, Counter, critical=True, placement="resource_aware", resources={"cpu": 0.5}
):
    """A critical counter reserving half a CPU (resource-aware placement)."""


class Plain(Clustered, Counter, critical=True):
    """A counter reserving nothing."""


class HeavyVisit(
    Clustered, Counter, virtual=True, idle_timeout=0.3, resources={"cpu": 0.5}, id_prefix="heavy-"
):
    """A virtual counter reserving half a CPU, passivated after 0.3 s idle."""


TYPES = [HalfCpu, Plain, HeavyVisit]

Cluster = Callable[..., Awaitable[list[Node]]]


@pytest.fixture
async def cluster(nats_server: NatsServer) -> AsyncIterator[Cluster]:
    """``await cluster(n, cpu=1.0, failover=False)``: ``n`` started nodes ``r0..``, each
    offering ``cpu``, that see each other; all stopped at teardown."""
    started: list[Node] = []

    async def make(n: int, *, cpu: float = 1.0, failover: bool = False) -> list[Node]:
        nodes = [
            Node(
                nats=nats_server.url,
                name=f"r{i}",
                agents=TYPES,
                resources={"cpu": cpu},
                failover=failover,
            )
            for i in range(n)
        ]
        started.extend(nodes)
        await asyncio.gather(*(node.start() for node in nodes))
        for node in nodes:
            await node.membership.wait_members([m.id for m in nodes])
        return nodes

    try:
        yield make
    finally:
        await asyncio.gather(*(n.stop() for n in started), return_exceptions=True)


def ledger(node: Node) -> ReservationLedger:
    found = ledger_of(node.placement)
    assert found is not None
    return found


async def registry_cpu(node: Node) -> dict[str, float]:
    """CPU held per node, summed over the registry records (read from the server)."""
    out: dict[str, float] = {}
    for record in await node.registry.scan():
        out[record.node] = out.get(record.node, 0.0) + record.resources.get("cpu", 0.0)
    return out


async def ledger_cpu(node: Node, node_ids: list[str]) -> dict[str, float]:
    """CPU reserved per node, read from the ledgers on the server."""
    out: dict[str, float] = {}
    for node_id in node_ids:
        _, led = await ledger(node).read(node_id)
        out[node_id] = led.totals().get("cpu", 0.0)
    return out


async def test_concurrent_spawns_never_overcommit_a_node(cluster: Cluster) -> None:
    a, b = await cluster(2)
    # Every spawn sees both nodes empty in its cached view: without a CAS they all chose r0.
    refs = await asyncio.gather(*(a.spawn(HalfCpu, id=f"h{i}") for i in range(4)))
    assert len(refs) == 4
    owners = [(await a.registry.lookup(f"h{i}", consistent=True)).node for i in range(4)]  # type: ignore[union-attr]
    assert sorted(owners) == ["r0", "r0", "r1", "r1"]
    assert await registry_cpu(a) == {"r0": 1.0, "r1": 1.0}
    assert await ledger_cpu(a, ["r0", "r1"]) == {"r0": 1.0, "r1": 1.0}
    for i in range(4):
        record = await a.registry.lookup(f"h{i}", consistent=True)
        assert record is not None and record.resources == {"cpu": 0.5}
        assert record.reservation in ledger(a).ledger(record.node).entries

    with pytest.raises(NoCapacityError) as err:
        await b.spawn(HalfCpu, id="h4")
    details = err.value.details
    assert details["missing"] == {"cpu": {"asked": 0.5, "free": {"r0": 0.0, "r1": 0.0}}}
    assert "cpu: 0.5 asked, free r0 0, r1 0" in err.value.message
    assert await a.registry.lookup("h4", consistent=True) is None

    # An agent that reserves nothing still fits, and takes no ledger entry.
    await b.spawn(Plain, id="p0")
    record = await a.registry.lookup("p0", consistent=True)
    assert record is not None and record.reservation == "" and record.resources == {}

    # Both nodes publish what is reserved on them, beside their capacity.
    async def published() -> bool:
        members = {m.id: m for m in b.membership.members()}
        return all(
            members[n].load.get("cpu") == 1.0 and members[n].resources == {"cpu": 1.0}
            for n in ("r0", "r1")
        )

    await eventually(published)


async def test_an_explicit_node_is_not_overcommitted_either(cluster: Cluster) -> None:
    a, _ = await cluster(2)
    await a.spawn(HalfCpu, id="x0", node="r1")
    await a.spawn(HalfCpu, id="x1", node="r1")
    with pytest.raises(NoCapacityError) as err:
        await a.spawn(HalfCpu, id="x2", node="r1")
    assert err.value.details["node"] == "r1"
    assert err.value.details["missing"] == {"cpu": {"asked": 0.5, "free": {"r1": 0.0}}}
    assert await a.registry.lookup("x2", consistent=True) is None
    await a.spawn(HalfCpu, id="x2")  # placement finds the free node
    assert (await a.registry.lookup("x2", consistent=True)).node == "r0"  # type: ignore[union-attr]


async def test_concurrent_spawns_from_three_nodes(cluster: Cluster) -> None:
    nodes = await cluster(3)
    results = await asyncio.gather(
        *(node.spawn(HalfCpu, id=f"c{n}-{i}") for n, node in enumerate(nodes) for i in range(3)),
        return_exceptions=True,
    )
    placed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(placed) == 6
    assert len(refused) == 3 and all(isinstance(r, NoCapacityError) for r in refused)
    ids = ["r0", "r1", "r2"]
    assert await registry_cpu(nodes[0]) == dict.fromkeys(ids, 1.0)
    assert await ledger_cpu(nodes[0], ids) == dict.fromkeys(ids, 1.0)


async def test_reservations_are_released_when_agents_stop(cluster: Cluster) -> None:
    a, _ = await cluster(2)
    await a.spawn(HalfCpu, id="s0", node="r1")
    await a.spawn(HalfCpu, id="s1", node="r1")
    record = await a.registry.lookup("s0", consistent=True)
    assert record is not None
    await a.stop_agent("s0")  # the owner (r1) releases its entry once it sees the removal

    async def released() -> bool:
        _, led = await ledger(a).read("r1")
        return record.reservation not in led.entries and led.totals() == {"cpu": 0.5}

    await eventually(released)
    await a.spawn(HalfCpu, id="s2", node="r1")  # fits again
    assert await registry_cpu(a) == {"r1": 1.0}


async def test_the_sweep_repairs_a_ledger(cluster: Cluster) -> None:
    (a,) = await cluster(1)
    await a.spawn(HalfCpu, id="w0")
    led = ledger(a)
    led.sweep_interval = 3600.0  # the node's own periodic sweep stays out of the way
    ghost = await led.reserve("r0", "ghost", {"cpu": 0.5})  # a placer that died before its claim
    record = await a.registry.lookup("w0", consistent=True)
    assert record is not None
    await led.release("r0", [record.reservation])  # an entry lost
    led.grace = -1.0
    assert await led.sweep() == (1, 1)
    _, current = await led.read("r0")
    assert set(current.entries) == {record.reservation} and ghost not in current.entries
    assert await led.sweep() == (0, 0)


async def test_failover_moves_the_reservations(cluster: Cluster) -> None:
    nodes = await cluster(3, failover=True)
    victim = nodes[2]
    for i in range(2):
        await nodes[0].spawn(HalfCpu, id=f"f{i}", node=victim.id)
    await nodes[0].spawn(HalfCpu, id="f2", node="r0")
    before = {f"f{i}": await nodes[0].registry.lookup(f"f{i}", consistent=True) for i in range(2)}
    await victim.stop()  # records stay assigned to it: the leader moves them

    async def moved() -> bool:
        for agent_id in before:
            record = await nodes[0].registry.lookup(agent_id, consistent=True)
            if record is None or record.node == victim.id:
                return False
        return True

    await eventually(moved, timeout=20)
    for agent_id, old in before.items():
        new = await nodes[0].registry.lookup(agent_id, consistent=True)
        assert new is not None and old is not None
        assert new.reservation and new.reservation != old.reservation
        _, owner_ledger = await ledger(nodes[0]).read(new.node)
        assert owner_ledger.entries[new.reservation].agent == agent_id  # the new owner holds it
    # r0 held 0.5 already; the 1.0 moved fits beside it only without over-committing a node
    held = await registry_cpu(nodes[0])
    assert set(held) == {"r0", "r1"} and sum(held.values()) == 1.5
    assert all(cpu <= 1.0 for cpu in held.values())
    assert await ledger_cpu(nodes[0], ["r0", "r1"]) == held

    async def released_by_the_leader() -> bool:
        _, dead = await ledger(nodes[0]).read(victim.id)
        return dead.entries == {}

    await eventually(released_by_the_leader)


async def test_hand_over_moves_the_reservation(cluster: Cluster) -> None:
    a, b = await cluster(2)
    await a.spawn(HalfCpu, id="d0", node="r1")
    await a.spawn(HalfCpu, id="d1", node="r1")
    old = await a.registry.lookup("d0", consistent=True)
    assert old is not None
    await b.drain()  # hands both over to r0, whose ledger takes them by CAS
    for agent_id in ("d0", "d1"):
        record = await a.registry.lookup(agent_id, consistent=True)
        assert record is not None and record.node == "r0"
    assert await ledger_cpu(a, ["r0"]) == {"r0": 1.0}
    _, left = await ledger(a).read("r1")
    assert old.reservation not in left.entries
    with pytest.raises(NoCapacityError):  # r0 is full now and r1 is gone
        await a.spawn(HalfCpu, id="d2")


async def test_rebalancing_moves_only_what_fits(nats_server: NatsServer) -> None:
    from foundation.failover.failover import FailoverOptions

    opts = FailoverOptions(rebalance_interval=0.2, max_moves=2)
    first = Node(
        nats=nats_server.url, name="r0", agents=TYPES, resources={"cpu": 1.0}, failover=opts
    )
    # joins without any cpu: the agents reserving cpu cannot go there, the others can
    late = Node(nats=nats_server.url, name="r1", agents=TYPES, failover=opts)
    try:
        await first.start()
        assert first.failover is not None
        await first.failover.wait_leader()
        for i in range(2):
            await first.spawn(HalfCpu, id=f"a{i}")  # sorted first: the first ones a step tries
        for i in range(4):
            await first.spawn(Plain, id=f"b{i}")
        await late.start()

        async def filled() -> bool:
            return len(first.registry.assigned_to("r1")) >= 2

        await eventually(filled, timeout=20)
        assert {r.type for r in first.registry.assigned_to("r1")} == {Plain.__cluster__.type_name}
        assert {r.agent_id for r in first.registry.assigned_to("r0")} >= {"a0", "a1"}
    finally:
        await asyncio.gather(first.stop(), late.stop(), return_exceptions=True)


async def test_a_passivated_virtual_agent_releases_its_reservation(
    nats_server: NatsServer,
) -> None:
    add = Signal(type="counter.add", source="/test", data={"n": 1})
    async with Node(
        nats=nats_server.url,
        name="r0",
        agents=TYPES,
        resources={"cpu": 0.5},
        reconcile_interval=0.2,
        failover=False,
    ) as node:
        assert (await node.ref("heavy-1", cls=HeavyVisit).call(add))["count"] == 1
        record = await node.registry.lookup("heavy-1", consistent=True)
        assert record is not None and record.reservation
        assert (await ledger(node).read("r0"))[1].totals() == {"cpu": 0.5}

        async def passivated_and_released() -> bool:
            gone = await node.registry.lookup("heavy-1", consistent=True) is None
            return gone and (await ledger(node).read("r0"))[1].entries == {}

        await eventually(passivated_and_released)
        # the half CPU is free again: another virtual agent of the type activates here
        assert (await node.ref("heavy-2", cls=HeavyVisit).call(add))["count"] == 1
