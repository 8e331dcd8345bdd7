"""Node, spawn, lookup and location-transparent refs with in-process nodes on a real NATS."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from foundation._errors import AlreadyRegisteredError, NodeUnavailableError
from foundation._node import Node, NodeDrainingError, Stage
from foundation.messaging.ref import FailFast
from foundation.testing import NatsServer
from jido import AgentNotFoundError, Signal, ValidationError
from tests.foundation.apps import AGENTS, ClusteredCounter, Counter, LocalCounter
from tests.foundation.conftest import TcpProxy, eventually

pytestmark = pytest.mark.nats


def add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


@pytest.fixture
async def trio(nats_server: NatsServer) -> AsyncIterator[list[Node]]:
    # The cluster core alone: no failover, refs fail fast (failover has its own tests).
    nodes = [
        Node(nats=nats_server.url, name=f"n{i}", agents=AGENTS, failover=False) for i in range(3)
    ]
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        for n in nodes:
            await n.membership.wait_members([m.id for m in nodes])
        yield nodes
    finally:
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def test_node_id_and_stages(nats_server: NatsServer) -> None:
    node = Node(nats=nats_server.url, name="solo", agents=AGENTS)
    assert node.id == "solo" and node.stage == Stage.CREATED
    async with node:
        assert node.stage == Stage.RUNNING
        await node.wait_started()
        stats = node.statistics()
        assert stats.node_id == "solo" and stats.stage == "running" and stats.agents == 0
    assert node.stage == Stage.STOPPED
    await node.wait_stopped()
    default = Node(nats=nats_server.url)
    assert default.id and default.id != Node(nats=nats_server.url).id


async def test_spawn_lookup_call_state_across_nodes(trio: list[Node]) -> None:
    a, b, c = trio
    ref = await a.spawn(ClusteredCounter, id="acc-1", node="n1")
    record = await c.registry.lookup("acc-1")
    assert record is not None and record.node == "n1" and record.epoch >= 1
    assert "acc-1" in b.local_agents()
    # from every node, local or remote, the same API
    for node in trio:
        out = await node.ref("acc-1").call(add(2))
        assert out["count"] >= 2
    assert (await ref.state()).count == 6
    st = await c.ref("acc-1").state()
    assert st.count == 6 and type(st).__name__ == "CounterState"
    await c.ref("acc-1").cast(add(10))
    # a call from the same node travels behind the cast on the same connection and subject tree
    assert (await c.ref("acc-1").call(add(1)))["count"] == 17
    assert (await b.ref("acc-1").state()).count == 17


async def test_typed_errors_cross_nodes(trio: list[Node]) -> None:
    a = trio[0]
    await a.spawn(ClusteredCounter, id="acc-err", node="n1")
    with pytest.raises(ValidationError) as info:
        await a.ref("acc-err").call(Signal(type="counter.fail", source="/t"))
    assert info.value.details == {"why": "test"}
    with pytest.raises(AgentNotFoundError):
        await a.ref("nobody").call(add())


async def test_placement_spreads_and_local(trio: list[Node]) -> None:
    a = trio[0]
    for i in range(6):
        await a.spawn(ClusteredCounter, id=f"spread-{i}")
    owners = {(await a.registry.lookup(f"spread-{i}")).node for i in range(6)}
    assert len(owners) == 3  # least_loaded puts them on every node
    await a.spawn(LocalCounter, id="here")
    assert (await a.registry.lookup("here")).node == "n0"


async def test_concurrent_spawn_exactly_one_winner(trio: list[Node]) -> None:
    for trial in range(100):
        agent_id = f"race-{trial}"
        results = await asyncio.gather(
            *(n.spawn(ClusteredCounter, id=agent_id) for n in trio), return_exceptions=True
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1, results
        assert all(isinstance(e, AlreadyRegisteredError) for e in losers), losers
        record = await trio[0].registry.lookup(agent_id, consistent=True)
        assert all(e.owner == record.node for e in losers)  # type: ignore[union-attr]


async def test_unclustered_agent_runs_on_this_node_only(trio: list[Node]) -> None:
    a, b, _ = trio
    ref = await a.spawn(Counter, id="plain")
    assert (await ref.call(add(3)))["count"] == 3
    assert await a.registry.lookup("plain", consistent=True) is None
    await a.reconcile()  # not in the registry, yet reconciliation leaves it alone
    assert (await ref.call(add(1)))["count"] == 4
    with pytest.raises(AgentNotFoundError):
        await b.ref("plain").call(add())


async def test_call_to_stopped_node_fails_fast(trio: list[Node]) -> None:
    a, _, c = trio
    for n in trio:  # no failover here: the record stays on the dead node
        if n.failover is not None:
            await n.failover.stop()
    a.ref_policy = FailFast()
    await a.spawn(ClusteredCounter, id="doomed", node="n2")
    await c.stop()  # not drained: the record stays assigned to n2
    await a.membership.wait_gone("n2")
    with pytest.raises(NodeUnavailableError):
        await a.ref("doomed").call(add(), timeout=5)


async def test_moved_agent_is_followed(trio: list[Node]) -> None:
    a, b, _ = trio
    await a.spawn(ClusteredCounter, id="mover", node="n1")
    await a.ref("mover").call(add(5))
    # hand it over n1 -> n2 through the registry (what drain and failover do)
    await b._hand_over("mover")
    rec = await a.registry.lookup("mover", consistent=True)
    assert rec.node != "n1"
    out = await a.ref("mover").call(add(1))
    assert out["count"] == 6  # state came along


async def test_drain_hands_agents_over_with_state(trio: list[Node]) -> None:
    a, b, _ = trio
    for i in range(4):
        await a.spawn(ClusteredCounter, id=f"dr-{i}", node="n1")
        await a.ref(f"dr-{i}").call(add(i + 1))
    await b.drain()
    assert b.stage == Stage.STOPPED
    for i in range(4):
        rec = await a.registry.lookup(f"dr-{i}", consistent=True)
        assert rec is not None and rec.node in ("n0", "n2")
        assert (await a.ref(f"dr-{i}").state()).count == i + 1
    with pytest.raises(NodeDrainingError):
        await b.spawn(ClusteredCounter, id="late")


async def test_raw_nats_client_talks_to_agent(trio: list[Node], nats_connect) -> None:  # type: ignore[no-untyped-def]
    import orjson

    a = trio[0]
    await a.spawn(ClusteredCounter, id="raw-1", node="n2")
    nc = await nats_connect(a.url)
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "0190f1c2-0000-7000-8000-00000000000a",
        "ce-source": "/raw",
        "ce-type": "counter.add",
        "content-type": "application/json",
    }
    msg = await nc.request(
        "foundation.agent.default.raw-1", b'{"n": 4}', headers=headers, timeout=5
    )
    assert orjson.loads(msg.data) == {"ok": {"count": 4}}
    event = {
        "specversion": "1.0",
        "id": "0190f1c2-0000-7000-8000-00000000000b",
        "source": "/raw",
        "type": "counter.add",
        "datacontenttype": "application/json",
        "data": {"n": 1},
    }
    msg = await nc.request("foundation.agent.default.raw-1", orjson.dumps(event), timeout=5)
    assert orjson.loads(msg.data) == {"ok": {"count": 5}}
    msg = await nc.request(
        "foundation.agent.default.raw-1",
        orjson.dumps({**event, "id": "x2", "type": "counter.fail", "data": {}}),
        timeout=5,
    )
    err = orjson.loads(msg.data)["error"]
    assert err["type"] == "validation_error" and err["details"] == {"why": "test"}
    msg = await nc.request("foundation.agent.default.nobody", orjson.dumps(event), timeout=5)
    assert orjson.loads(msg.data)["error"]["type"] == "agent_not_found"
    msg = await nc.request("foundation.agent.other.raw-1", orjson.dumps(event), timeout=5)
    assert orjson.loads(msg.data)["error"]["type"] == "agent_not_found"
    msg = await nc.request("foundation.agent.default.raw-1", b"{not json", timeout=5)
    assert orjson.loads(msg.data)["error"]["type"] == "signal_error"
    # a message without a reply subject is a cast (count 5 -> 6)
    await nc.publish("foundation.agent.default.raw-1", orjson.dumps({**event, "id": "c1"}))
    from tests.foundation.conftest import eventually

    async def applied() -> bool:
        return bool((await a.ref("raw-1").state()).count == 6)

    await eventually(applied)


async def test_traceparent_crosses_nodes(trio: list[Node]) -> None:
    a = trio[0]
    await a.spawn(ClusteredCounter, id="tracer", node="n2")
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    out = await a.ref("tracer").call(
        Signal(type="counter.echo", source="/t", data={"x": 1}, traceparent=tp)
    )
    assert out["traceparent"] == tp and out["data"] == {"x": 1} and out["agent"] == "tracer"


async def test_node_cut_from_nats_fences_itself_then_rejoins(
    nats_server: NatsServer,
    tcp_proxy,  # type: ignore[no-untyped-def]
) -> None:
    """A node whose NATS link is cut stops its agents before its lease can expire elsewhere."""
    watcher = Node(nats=nats_server.url, name="watcher", agents=AGENTS, failover=False)
    cut = Node(nats=tcp_proxy.url, name="cut", agents=AGENTS, failover=False)
    async with watcher, cut:
        await watcher.membership.wait_members(["cut"])
        await watcher.spawn(ClusteredCounter, id="cut-1", node="cut")
        assert (await watcher.ref("cut-1").call(add(3)))["count"] == 3
        tcp_proxy.pause()
        await cut.wait_fenced()
        # fenced before the lease can expire anywhere: the agent is already stopped here
        assert "cut-1" not in cut.local_agents()
        assert cut.statistics().fenced
        await watcher.membership.wait_gone("cut")
        # while fenced the store refuses every write, without the network
        from jido import Checkpoint, FencedError

        with pytest.raises(FencedError):
            await cut.state_store.save(
                "cut-1", Checkpoint(state={"count": 99}, agent_type="x", seq=9, epoch=10**9)
            )
        tcp_proxy.resume()
        await watcher.membership.wait_members(["cut"])  # it rejoins cleanly
        # its record still points at it, so its reconciliation starts the agent again
        assert (await watcher.ref("cut-1").call(add(1), timeout=10))["count"] == 4


async def test_a_call_arriving_while_the_node_takes_its_lease_back_waits_for_the_rejoin(
    nats_server: NatsServer, tcp_proxy: TcpProxy
) -> None:
    """After a fence, the renewal thread creates the node's new record: other nodes route to it
    again at once, before the node's own loop has rejoined (store unfenced, agents restarted).
    A call arriving in between waits for the rejoin instead of answering ``NotOwnerError``."""
    watcher = Node(nats=nats_server.url, name="watcher", agents=AGENTS, failover=False)
    # A 2 s lease: the renewal thread is held below, and its fresh lease must outlast the hold.
    cut = Node(nats=tcp_proxy.url, name="cut", agents=AGENTS, failover=False, lease_ttl=2)
    async with watcher, cut:
        await watcher.membership.wait_members(["cut"])
        await watcher.spawn(ClusteredCounter, id="win-1", node="cut")
        assert (await watcher.ref("win-1").call(add(3)))["count"] == 3
        membership = cut.membership
        created, release = threading.Event(), threading.Event()
        join = membership._join

        async def join_then_hold(kv: Any, *, wait: bool) -> None:
            # On the renewal thread: the new record is written, the thread goes no further.
            await join(kv, wait=wait)
            created.set()
            release.wait(10)

        membership._join = join_then_hold  # type: ignore[method-assign]
        call: asyncio.Future[dict[str, Any]] | None = None
        tcp_proxy.pause()
        try:
            await cut.wait_fenced()
            await watcher.membership.wait_gone("cut")
            tcp_proxy.resume()
            assert await asyncio.to_thread(created.wait, 10)
            await watcher.membership.wait_members(["cut"])  # it routes to "cut" again
            assert cut.fenced and not membership.holds_lease  # the window is open
            calls_in = cut.statistics().calls_in
            call = asyncio.ensure_future(watcher.ref("win-1").call(add(1), timeout=10))

            async def arrived() -> bool:
                return call is not None and (call.done() or cut.statistics().calls_in > calls_in)

            await eventually(arrived)  # the call reached "cut" while the thread was held
        finally:
            release.set()  # let the renewal thread go on (also when the test failed)
        assert (await call)["count"] == 4
        assert not cut.fenced and membership.holds_lease


async def test_at_least_once_casts_go_through_the_inbox(trio: list[Node]) -> None:
    from tests.foundation.apps import DurableCounter

    a, b, _ = trio
    await a.spawn(DurableCounter, id="dur-1", node="n1")
    for _ in range(20):
        await a.ref("dur-1").cast(add(1))
    # the stream of this fresh server holds only these 20 signals: sequences 1..20
    await b.host._inboxes["dur-1"].wait_applied(20)
    assert (await a.ref("dur-1").state()).count == 20
    checkpoint = await b.state_store.load("dur-1")
    assert checkpoint is not None and checkpoint.meta["stream_seq"] == 20


async def test_local_cast_to_at_least_once_agent_uses_the_inbox(trio: list[Node]) -> None:
    from tests.foundation.apps import DurableCounter

    b = trio[1]
    await b.spawn(DurableCounter, id="dur-local", node="n1")
    for _ in range(5):
        await b.ref("dur-local").cast(add(2))
    await b.host._inboxes["dur-local"].wait_applied(5)
    checkpoint = await b.state_store.load("dur-local")
    assert checkpoint is not None
    assert checkpoint.state["count"] == 10 and checkpoint.meta["stream_seq"] == 5


async def test_embedded_nats_when_no_url_is_given(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``Node(agents=[...])`` with no URL starts its own nats-server and stops it on exit."""
    async with Node(agents=AGENTS, store_dir=tmp_path / "js", failover=False) as node:
        assert node.url.startswith("nats://127.0.0.1:")
        server = node._server
        assert server is not None and server.running
        ref = await node.spawn(ClusteredCounter, id="emb-1")
        assert (await ref.call(add(2)))["count"] == 2
        record = await node.registry.lookup("emb-1")
        assert record is not None and record.node == node.id
    assert not server.running


@pytest.mark.parametrize("turns", range(5))
async def test_stop_ends_the_reconciler_even_in_the_turn_it_was_woken(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture, turns: int
) -> None:
    # A stop that lands in the event-loop turns between a wake-up of the reconciler and its
    # resumption must still end it: the cancel must not be lost (no step abandoned).
    node = Node(nats=nats_server.url, name="wake", agents=AGENTS, failover=False)
    await node.start()
    task = node._reconcile_task
    assert task is not None
    try:
        node.host.reconcile_wake.set()
        for _ in range(turns):
            await asyncio.sleep(0)
    finally:
        await node.stop()
    assert task.done()
    assert not [r for r in caplog.records if "abandoned" in r.getMessage()]
