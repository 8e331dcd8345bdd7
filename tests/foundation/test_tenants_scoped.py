"""Soft tenants: several tenants' nodes on one NATS account, each scoped to its own tenant.

Two tenants (``acme``: nodes n1, n3; ``globex``: nodes n2, n4) share one server. The node ids
interleave, so neither tenant's nodes sort first: a placement, failover or rebalancing that
looked at the other tenant's nodes would pick them. Each test checks one thing that must stay
within a tenant: the queue group of the public agent subjects, placement (and a forced
``spawn(node=...)``), the registry cache and refs, the leader and its failover, the same agent
id in both tenants, the dashboard and ``status``, rebalancing and reconciliation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from foundation import _wire as wire
from foundation._errors import WrongTenantError
from foundation._node import Node
from foundation.failover.types import FailoverOptions
from foundation.hosting.clustered import type_name_of
from foundation.messaging.envelope import decode_reply
from foundation.observability.dashboard import Dashboard
from foundation.observability.status import collect_status
from foundation.registry.registry import ClusterRegistry, RegistryChange
from foundation.testing import NatsServer
from jido import AgentNotFoundError, Signal
from tests.foundation.apps import AGENTS, ClusteredCounter
from tests.foundation.conftest import Connect, eventually

pytestmark = pytest.mark.nats

ACME = ("n1", "n3")
GLOBEX = ("n2", "n4")
FAST = FailoverOptions(sweep_interval=0.2, rebalance_interval=0.2)


def add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


def tenant_node(url: str, name: str, tenant: str) -> Node:
    return Node(nats=url, name=name, agents=AGENTS, tenant=tenant, failover=FAST)


@pytest.fixture
async def tenants(nats_server: NatsServer) -> AsyncIterator[dict[str, list[Node]]]:
    """Two started nodes per tenant, each seeing its tenant's other node."""
    nodes = {
        "acme": [tenant_node(nats_server.url, n, "acme") for n in ACME],
        "globex": [tenant_node(nats_server.url, n, "globex") for n in GLOBEX],
    }
    every = [n for group in nodes.values() for n in group]
    try:
        await asyncio.gather(*(n.start() for n in every))
        for group in nodes.values():
            for n in group:
                await n.membership.wait_members([m.id for m in group], timeout=10)
        yield nodes
    finally:
        await asyncio.gather(*(n.stop() for n in every), return_exceptions=True)


async def leader_of(group: list[Node]) -> Node:
    """The one node of ``group`` leading its tenant (waits until there is one)."""

    async def find() -> Node | None:
        leading = [n for n in group if n.failover is not None and n.failover.is_leader]
        return leading[0] if len(leading) == 1 else None

    found: Node = await eventually(find, timeout=15)
    return found


async def test_requests_for_a_tenant_are_served_only_by_its_nodes(
    tenants: dict[str, list[Node]], nats_connect: Connect, nats_server: NatsServer
) -> None:
    g = tenants["globex"][0]
    await g.spawn(ClusteredCounter, id="g-agent")
    # A node of the default tenant sees every agent subject (its wire names are those of a
    # cluster without tenants): it leaves the subjects of a served tenant to that tenant's nodes.
    plain = Node(nats=nats_server.url, name="n0", agents=AGENTS, failover=False)
    await plain.start()
    try:
        await eventually(lambda: _true(set(plain.membership.foreign) == {*ACME, *GLOBEX}))
        nc = await nats_connect(nats_server)
        body = orjson.dumps(add().to_dict())
        counts = []
        for _ in range(40):  # a shared queue group would hand about half of them to acme's nodes
            msg = await nc.request(wire.Subjects().agent("g-agent", "globex"), body, timeout=10)
            counts.append(decode_reply(msg.data)["count"])
        assert counts == list(range(1, 41))
        for a in tenants["acme"]:  # acme's nodes do not serve globex's subjects at all
            assert a.statistics().agents == 0
        assert plain.statistics().agents == 0
        # a tenant no node serves is answered by the default tenant's nodes, as before
        msg = await nc.request(wire.Subjects().agent("g-agent", "nobody"), body, timeout=10)
        with pytest.raises(AgentNotFoundError):
            decode_reply(msg.data)
    finally:
        await plain.stop()


async def test_placement_keeps_each_tenants_agents_on_its_own_nodes(
    tenants: dict[str, list[Node]],
) -> None:
    a, g = tenants["acme"][0], tenants["globex"][0]
    for i in range(8):
        await g.spawn(ClusteredCounter, id=f"g{i}")
        await a.spawn(ClusteredCounter, id=f"a{i}")
    for node, own in ((a, ACME), (g, GLOBEX)):
        records = [
            await node.registry.lookup(r.agent_id, consistent=True) for r in node.registry.records()
        ]
        assert len(records) == 8
        assert {r.node for r in records if r is not None} == set(own)  # spread over both
    for i in range(8):
        assert (await g.ref(f"g{i}").call(add(i)))["count"] == i
    # Forcing another tenant's node is refused, typed, and registers nothing.
    with pytest.raises(WrongTenantError) as info:
        await a.spawn(ClusteredCounter, id="forced", node="n2")
    assert info.value.details["node"] == "n2" and info.value.details["tenant"] == "globex"
    assert info.value.details["serves"] == "acme"
    assert await a.registry.lookup("forced", consistent=True) is None
    assert await g.registry.lookup("forced", consistent=True) is None
    assert "forced" not in tenants["globex"][0].local_agents()


async def test_the_cache_and_refs_of_a_node_hold_only_its_tenant(
    tenants: dict[str, list[Node]],
) -> None:
    a, g = tenants["acme"][0], tenants["globex"][0]
    await g.spawn(ClusteredCounter, id="g0")
    await a.spawn(ClusteredCounter, id="a0")
    await eventually(lambda: _true(g.registry.cached("g0") is not None))
    assert a.registry.cached("g0", tenant="globex") is None
    assert [r.key for r in a.registry.records()] == ["acme.a0"]
    assert [r.key for r in g.registry.records()] == ["globex.g0"]
    # A lookup in another tenant reads the server (never acme's cache) and says whose it is.
    other = await a.registry.lookup("g0", tenant="globex")
    assert other is not None and other.tenant == "globex" and other.node in GLOBEX
    assert await a.registry.lookup("g0") is None
    # A node serves its own tenant only: a ref into another tenant is refused, clearly.
    with pytest.raises(WrongTenantError) as info:
        a.ref("g0", tenant="globex")
    assert info.value.details["tenant"] == "globex" and info.value.details["serves"] == "acme"
    assert a.ref("a0", tenant="acme").tenant == "acme"
    with pytest.raises(AgentNotFoundError):
        await a.ref("g0").call(add(), timeout=2)


async def _true(value: bool) -> bool:
    return value


async def test_each_tenant_has_its_own_leader_and_failover(
    tenants: dict[str, list[Node]],
) -> None:
    acme_leader = await leader_of(tenants["acme"])
    globex_leader = await leader_of(tenants["globex"])
    assert acme_leader.id in ACME and globex_leader.id in GLOBEX
    victim = next(n for n in tenants["globex"] if n is not globex_leader)
    a = tenants["acme"][0]
    # the same id in both tenants: two agents, two states, no fencing of each other
    await a.spawn(ClusteredCounter, id="shared", node=acme_leader.id)
    await globex_leader.spawn(ClusteredCounter, id="shared", node=victim.id)
    outs = []
    for i in range(10):
        node = a if i % 2 == 0 else globex_leader
        outs.append((node.tenant, (await node.ref("shared").call(add()))["count"]))
    assert outs == [(t, i // 2 + 1) for i, t in enumerate(["acme", "globex"] * 5)]
    for i in range(3):
        await globex_leader.spawn(ClusteredCounter, id=f"crit{i}", node=victim.id)
        await globex_leader.ref(f"crit{i}").call(add(i + 1))

    await victim.stop()  # its records stay assigned to it: globex's leader must move them

    for i in range(3):
        out = await globex_leader.ref(f"crit{i}").call(add(0), timeout=15)
        assert out["count"] == i + 1  # back with its state
        record = await globex_leader.registry.lookup(f"crit{i}", consistent=True)
        assert record is not None and record.node == globex_leader.id
        assert record.metadata[wire.LEADER_KEY] == globex_leader.id
    assert (await globex_leader.ref("shared").call(add(0), timeout=15))["count"] == 5
    assert (await a.ref("shared").call(add(0)))["count"] == 5
    acme_shared = await a.registry.lookup("shared", consistent=True)
    assert acme_shared is not None and acme_shared.node == acme_leader.id
    for node in tenants["acme"]:
        assert set(node.local_agents()) <= {"shared"}
    assert a.failover is not None and a.failover.statistics().moved == 0


async def test_the_dashboard_and_status_of_a_tenant_list_only_its_nodes_and_agents(
    tenants: dict[str, list[Node]], nats_server: NatsServer
) -> None:
    a, g = tenants["acme"][0], tenants["globex"][0]
    await a.spawn(ClusteredCounter, id="a-dash")
    await g.spawn(ClusteredCounter, id="g-dash")
    acme_leader = await leader_of(tenants["acme"])
    await leader_of(tenants["globex"])
    async with Dashboard(a, refresh=60) as dash:

        async def seen() -> dict[str, object] | None:
            st = await dash.collect()
            return st if st["agents"]["total"] == 1 and st["leader"] else None

        st = await eventually(seen)
        assert [n["id"] for n in st["nodes"]] == list(ACME)
        assert [i for n in st["nodes"] for i in n["agent_ids"]] == ["a-dash"]
        assert st["leader"]["node"] == acme_leader.id
    report = await collect_status(nats_server.url, tenant="acme")
    assert [n.id for n in report.nodes] == list(ACME)
    assert report.agents == {(await a.registry.lookup("a-dash")).node: ["a-dash"]}  # type: ignore[union-attr]
    assert report.leader == acme_leader.id and report.healthy
    everything = await collect_status(nats_server.url)
    assert [n.id for n in everything.nodes] == ["n1", "n2", "n3", "n4"]


async def test_rebalancing_and_reconciliation_stay_within_a_tenant(
    tenants: dict[str, list[Node]], nats_server: NatsServer, nats_connect: Connect
) -> None:
    a, g = tenants["acme"][0], tenants["globex"][0]
    await leader_of(tenants["acme"])
    await leader_of(tenants["globex"])
    wrong: list[str] = []
    watchers = []
    for tenant, own in (("acme", {*ACME, "n6"}), ("globex", {*GLOBEX, "n5"})):
        reg = ClusterRegistry(await nats_connect(nats_server), tenant=tenant)
        await reg.start()
        watchers.append(reg)

        def check(change: RegistryChange, own: set[str] = own) -> None:
            if change.record is not None and change.record.node not in own:
                wrong.append(f"{change.key} on {change.record.node}")

        reg.add_listener(check)
    for i in range(4):
        await a.spawn(ClusteredCounter, id=f"ra{i}", node="n1")
        await g.spawn(ClusteredCounter, id=f"rg{i}", node="n2")
    joined = [
        tenant_node(nats_server.url, "n5", "globex"),
        tenant_node(nats_server.url, "n6", "acme"),
    ]
    try:
        await asyncio.gather(*(n.start() for n in joined))

        async def filled() -> bool:
            return bool(joined[0].local_agents()) and bool(joined[1].local_agents())

        await eventually(filled, timeout=20)
        assert all(i.startswith("rg") for i in joined[0].local_agents())
        assert all(i.startswith("ra") for i in joined[1].local_agents())
        # A record of globex's assigned (past placement) to an acme node: acme's node does not
        # run it, and globex's failover re-places it on a globex node.
        raw = ClusterRegistry(await nats_connect(nats_server), tenant="globex")
        await raw.start()
        try:
            await raw.claim("stray", node="n1", type=type_name_of(ClusteredCounter), critical=True)
        finally:
            await raw.stop()
        await a.reconcile()
        assert "stray" not in a.local_agents()

        async def re_placed() -> bool:
            record = await g.registry.lookup("stray", consistent=True)
            return record is not None and record.node in {*GLOBEX, "n5"}

        await eventually(re_placed, timeout=20)
        assert (await g.ref("stray").call(add(2)))["count"] == 2
        assert "stray" not in a.local_agents()
        assert [w for w in wrong if w != "globex.stray on n1"] == []
    finally:
        await asyncio.gather(*(n.stop() for n in joined), return_exceptions=True)
        for reg in watchers:
            await reg.stop()
