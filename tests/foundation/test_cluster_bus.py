"""ClusterBus against a real nats-server: several connections stand for several nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from foundation.messaging.cluster_bus import ClusterBus, ClusterBusError, current_signal
from foundation.testing import NatsServer
from jido import Signal

pytestmark = pytest.mark.nats

Connect = Callable[..., Awaitable[NatsClient]]
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def wait_until(pred: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``pred`` until it holds (a condition wait, bounded by ``within`` seconds).

    The conditions are counters inside the bus and the server, which offer no event to await.
    """
    async with asyncio.timeout(within):
        while not pred():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@pytest.fixture
async def buses(nats_server: NatsServer, nats_connect: Connect) -> AsyncIterator[list[ClusterBus]]:
    """Three buses on three connections ("nodes"); closed at teardown."""
    out: list[ClusterBus] = []
    for _ in range(3):
        nc = await nats_connect(nats_server)
        bus = ClusterBus(nc)
        await bus.start()
        out.append(bus)
    try:
        yield out
    finally:
        for bus in out:
            await bus.close()


def collector() -> tuple[list[Signal], Callable[[Signal], Awaitable[None]]]:
    got: list[Signal] = []

    async def handler(sig: Signal) -> None:
        got.append(sig)

    return got, handler


def sig(type_: str, data: Any = None, **ext: Any) -> Signal:
    return Signal(type=type_, source="/test", data=data, **ext)


async def test_pattern_subscribers_on_every_node_receive(buses: list[ClusterBus]) -> None:
    orders = [collector() for _ in buses]
    audits = [collector() for _ in buses]
    for bus, (_, h1), (_, h2) in zip(buses, orders, audits, strict=True):
        await bus.subscribe("orders.*.created", h1)
        await bus.subscribe("audit.**", h2)
    await buses[0].publish(
        sig("orders.o1.updated"),  # matches nothing
        sig("orders.o1.created", {"n": 1}),
        sig("audit"),  # ** matches zero segments
        sig("audit.login.ok"),
    )
    await buses[1].publish(sig("orders.o2.created", {"n": 2}))
    for got, _ in orders:
        await wait_until(lambda got=got: len(got) == 2)  # type: ignore[misc]
        assert sorted(s.type for s in got) == ["orders.o1.created", "orders.o2.created"]
    for got, _ in audits:
        await wait_until(lambda got=got: len(got) == 2)  # type: ignore[misc]
        assert sorted(s.type for s in got) == ["audit", "audit.login.ok"]


async def test_middle_double_star_is_filtered_locally(buses: list[ClusterBus]) -> None:
    got, handler = collector()
    sub = await buses[1].subscribe("a.**.c", handler)
    assert not sub.plan.exact
    # a.x.d reaches the wide NATS subscription (a.>) and must be dropped by the filter; the
    # later a.end.c on the same NATS subscription proves it was looked at first.
    await buses[0].publish(sig("a.c"), sig("a.x.d"), sig("a.x.y.c"), sig("a.end.c"))
    await wait_until(lambda: len(got) == 3)
    assert [s.type for s in got] == ["a.c", "a.x.y.c", "a.end.c"]
    assert buses[1].statistics().filtered == 1


async def test_queue_group_delivers_each_signal_to_one_member(
    buses: list[ClusterBus], nats_connect: Connect, nats_server: NatsServer
) -> None:
    got: list[tuple[int, str]] = []
    for i, bus in enumerate(buses):

        async def handler(s: Signal, i: int = i) -> None:
            got.append((i, s.id))

        await bus.subscribe("jobs.*", handler, queue="workers")
    sent = [sig(f"jobs.j{n}") for n in range(60)]
    await buses[0].publish(*sent)
    await wait_until(lambda: len(got) >= 60)
    for bus in buses:
        await bus.nc.flush()
    assert sorted(i for _, i in got) == sorted(s.id for s in sent)
    assert len({node for node, _ in got}) >= 2  # spread over members


async def test_at_least_once_signals_reach_at_most_once_subscribers(
    buses: list[ClusterBus],
) -> None:
    got, handler = collector()
    await buses[2].subscribe("evt.**", handler)
    seqs = await buses[0].publish(sig("evt.one"), sig("evt.two.x"), delivery="at_least_once")
    assert len(seqs) == 2 and seqs[0] < seqs[1]
    await wait_until(lambda: len(got) == 2)


async def test_handler_crash_is_redelivered_then_acked(buses: list[ClusterBus]) -> None:
    attempts: list[int] = []

    async def flaky(s: Signal) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("boom")

    await buses[1].subscribe(
        "pay.*", flaky, delivery="at_least_once", durable="payments", backoff=(0.01,)
    )
    await buses[0].publish(sig("pay.p1"), delivery="at_least_once")
    await wait_until(lambda: buses[1].statistics().handled == 1)
    assert len(attempts) == 3
    stats = buses[1].statistics()
    assert stats.handler_errors == 2 and stats.redelivered == 2 and stats.dead_lettered == 0
    assert await buses[0].dead_letters() == []


async def test_consumer_closed_before_ack_redelivers_to_another_node(
    nats_server: NatsServer, nats_connect: Connect, buses: list[ClusterBus]
) -> None:
    nc_a = await nats_connect(nats_server)
    bus_a = ClusterBus(nc_a)
    started = asyncio.Event()
    release = asyncio.Event()

    async def stuck(s: Signal) -> None:
        started.set()
        await release.wait()

    sub_a = await bus_a.subscribe(
        "ship.*", stuck, delivery="at_least_once", durable="shipping", ack_wait=0.5
    )
    await buses[0].publish(sig("ship.s1", {"k": 1}), delivery="at_least_once")
    async with asyncio.timeout(10):
        await started.wait()
    await nc_a.close()  # node A dies holding the signal, unacked
    got, handler = collector()
    await buses[1].subscribe(
        "ship.*", handler, delivery="at_least_once", durable="shipping", ack_wait=0.5
    )
    await wait_until(lambda: len(got) == 1)
    assert got[0].data == {"k": 1}
    assert buses[1].statistics().redelivered == 1
    release.set()
    await sub_a.unsubscribe()


async def test_poison_signal_that_kills_its_consumer_is_dead_lettered(
    nats_server: NatsServer, nats_connect: Connect, buses: list[ClusterBus]
) -> None:
    nc_a = await nats_connect(nats_server)
    bus_a = ClusterBus(nc_a)
    started = asyncio.Event()
    release = asyncio.Event()

    async def dies(s: Signal) -> None:
        started.set()
        await release.wait()

    sub_a = await bus_a.subscribe(
        "p.*", dies, delivery="at_least_once", durable="poison", ack_wait=0.5, max_deliver=1
    )
    await buses[0].publish(sig("p.x"), delivery="at_least_once")
    async with asyncio.timeout(10):
        await started.wait()
    await nc_a.close()
    got, handler = collector()
    await buses[1].subscribe(
        "p.*", handler, delivery="at_least_once", durable="poison", ack_wait=0.5, max_deliver=1
    )
    await wait_until(lambda: buses[1].statistics().dead_lettered == 1)
    assert got == []  # never handed to a handler a second time
    [letter] = await buses[2].dead_letters(consumer="poison")
    assert letter.reason == "max deliveries exceeded" and letter.attempts == 1
    release.set()
    await sub_a.unsubscribe()


async def test_dead_letter_after_max_attempts_then_redrive_and_purge(
    buses: list[ClusterBus],
) -> None:
    buses[0].wire = "binary"  # dead letters keep the original encoding
    healthy = False
    tries: list[str] = []

    async def handler(s: Signal) -> None:
        tries.append(s.id)
        if not healthy:
            raise ValueError(f"cannot handle {s.type}")

    await buses[1].subscribe(
        "inv.*", handler, delivery="at_least_once", durable="invoices", max_deliver=3,
        backoff=(0.01, 0.02),
    )  # fmt: skip
    other, other_handler = collector()
    await buses[2].subscribe("inv.*", other_handler, delivery="at_least_once", durable="other")
    bad = sig("inv.i1", {"amount": 5}, traceparent=TRACE)
    await buses[0].publish(bad, delivery="at_least_once")
    await wait_until(lambda: buses[1].statistics().dead_lettered == 1)
    assert tries == [bad.id] * 3
    [letter] = await buses[0].dead_letters(consumer="invoices")
    assert letter.attempts == 3 and "ValueError: cannot handle inv.i1" in letter.reason
    assert letter.signal == bad and letter.subject == "foundation.durable.inv.i1"
    await wait_until(lambda: len(other) == 1)  # the other subscriber was not affected

    healthy = True
    assert await buses[0].redrive([letter]) == 1
    await wait_until(lambda: buses[1].statistics().handled == 1)
    assert tries == [bad.id] * 4
    assert await buses[0].dead_letters() == []
    assert len(other) == 1  # redrive goes only to the consumer that gave up

    healthy = False
    await buses[0].publish(sig("inv.i2"), sig("inv.i3"), delivery="at_least_once")
    await wait_until(lambda: buses[1].statistics().dead_lettered == 3)
    assert len(await buses[0].dead_letters(consumer="invoices")) == 2
    assert await buses[0].purge_dead_letters(consumer="invoices") == 2
    assert await buses[0].dead_letters() == []
    with pytest.raises(ClusterBusError):
        await buses[0].redrive([10_000])
    # A letter whose consumer is gone is kept rather than redriven into nothing.
    await buses[0].publish(sig("inv.i4"), delivery="at_least_once")
    await wait_until(lambda: buses[1].statistics().dead_lettered == 4)
    [orphan] = await buses[0].dead_letters(consumer="invoices")
    await buses[0].js.delete_consumer(buses[0].stream, "invoices")
    with pytest.raises(ClusterBusError, match="no longer exists"):
        await buses[0].redrive([orphan])
    assert [d.seq for d in await buses[0].dead_letters()] == [orphan.seq]


async def test_republished_signal_id_is_stored_once(buses: list[ClusterBus]) -> None:
    got, handler = collector()
    await buses[1].subscribe("dup.*", handler, delivery="at_least_once", durable="dups")
    one = sig("dup.a", {"v": 1})
    first = await buses[0].publish(one, delivery="at_least_once")
    again = await buses[2].publish(one, delivery="at_least_once")  # e.g. a retry after timeout
    assert first == again
    end = sig("dup.end")
    await buses[0].publish(end, delivery="at_least_once")
    await wait_until(lambda: len(got) == 2)
    assert [s.id for s in got] == [one.id, end.id]


async def test_queue_group_at_least_once_shares_one_consumer(buses: list[ClusterBus]) -> None:
    got: list[str] = []
    for bus in buses:

        async def handler(s: Signal) -> None:
            got.append(s.id)

        await bus.subscribe("work.*", handler, queue="pool", delivery="at_least_once")
    sent = [sig(f"work.w{i}") for i in range(30)]
    await buses[0].publish(*sent, delivery="at_least_once")
    await wait_until(lambda: len(got) >= 30)
    assert sorted(got) == sorted(s.id for s in sent)


async def test_plain_nats_binary_cloudevent_reaches_a_subscriber(
    buses: list[ClusterBus], nats_connect: Connect, nats_server: NatsServer
) -> None:
    got, handler = collector()
    await buses[1].subscribe("orders.*.created", handler)
    raw = await nats_connect(nats_server)
    await raw.publish(
        "foundation.signal.orders.o9.created",
        b'{"total": 42}',
        headers={
            "ce-specversion": "1.0",
            "ce-id": "raw-1",
            "ce-source": "/plain-client",
            "ce-type": "orders.o9.created",
            "content-type": "application/json",
            "ce-traceparent": TRACE,
        },
    )
    await raw.publish(
        "foundation.signal.orders.o10.created",
        b'{"specversion": "1.0", "id": "raw-2", "source": "/plain", '
        b'"type": "orders.o10.created", "data": {"total": 7}}',
    )
    await raw.flush()
    await wait_until(lambda: len(got) == 2)
    assert (got[0].id, got[0].source, got[0].data, got[0].traceparent) == (
        "raw-1",
        "/plain-client",
        {"total": 42},
        TRACE,
    )
    assert (got[1].id, got[1].data) == ("raw-2", {"total": 7})


async def test_structured_and_binary_buses_interoperate(
    buses: list[ClusterBus], nats_connect: Connect, nats_server: NatsServer
) -> None:
    structured = ClusterBus(await nats_connect(nats_server), wire="structured")
    binary = ClusterBus(await nats_connect(nats_server), wire="binary")
    got_b, hb = collector()
    got_s, hs = collector()
    await buses[0].subscribe("mix.*", hb)
    await structured.subscribe("mix.*", hs)
    s1, s2 = sig("mix.a", {"x": 1}), sig("mix.b", [1, 2])
    await structured.publish(s1)
    await binary.publish(s2)
    await wait_until(lambda: len(got_b) == 2 and len(got_s) == 2)
    assert sorted(got_b, key=lambda s: s.type) == [s1, s2]
    assert sorted(got_s, key=lambda s: s.type) == [s1, s2]
    await structured.close()
    await binary.close()


@pytest.mark.parametrize("wire", ["structured", "binary"])
async def test_trace_continues_across_nodes(buses: list[ClusterBus], wire: str) -> None:
    for bus in buses:
        bus.wire = wire  # type: ignore[assignment]
    finals, final_handler = collector()

    async def relay(s: Signal) -> None:
        assert current_signal() is s
        await buses[1].publish(Signal(type="trace.step2", source="/relay"))  # no trace of its own
        await buses[1].publish(s.caused("trace.step3"))

    await buses[1].subscribe("trace.start", relay)
    await buses[2].subscribe("trace.step2", final_handler)
    await buses[2].subscribe("trace.step3", final_handler)
    first = sig("trace.start", traceparent=TRACE)
    await buses[0].publish(first)
    await wait_until(lambda: len(finals) == 2)
    for s in finals:
        assert s.traceparent is not None
        assert s.trace_id == first.trace_id
        assert s.traceparent != TRACE  # a new span in the same trace
    assert current_signal() is None


async def test_bad_arguments_raise_clear_errors(buses: list[ClusterBus]) -> None:
    bus = buses[0]
    with pytest.raises(ClusterBusError, match="delivery"):
        await bus.publish(sig("a.b"), delivery="exactly_once")  # type: ignore[arg-type]
    with pytest.raises(ClusterBusError, match="delivery"):
        await bus.subscribe("a.*", print, delivery="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ClusterBusError, match="handler"):
        await bus.subscribe("a.*", 42)  # type: ignore[arg-type]
    with pytest.raises(ClusterBusError, match="max_deliver"):
        await bus.subscribe("a.*", print, delivery="at_least_once", max_deliver=0)
    with pytest.raises(ClusterBusError, match="wire"):
        ClusterBus(bus.nc, wire="xml")  # type: ignore[arg-type]


async def test_unsubscribe_stops_delivery_and_removes_ephemeral_consumers(
    buses: list[ClusterBus],
) -> None:
    _, handler = collector()
    sub = await buses[1].subscribe("u.*", handler, delivery="at_least_once")
    assert sub.consumer is not None
    info = await buses[1].js.consumer_info(buses[1].stream, sub.consumer)
    assert info.name == sub.consumer
    await sub.unsubscribe()
    assert buses[1].statistics().subscriptions == 0
    names = [c.name for c in await buses[1].js.consumers_info(buses[1].stream)]
    assert sub.consumer not in names


async def test_bridge_links_local_buses_without_echo(buses: list[ClusterBus]) -> None:
    from jido._bus import Bus

    async with Bus() as local_a, Bus() as local_b:
        bridges = [
            await buses[0].bridge(local_a, "chat.**"),
            await buses[1].bridge(local_b, "chat.**"),
        ]
        seen_a, ha = collector()
        seen_b, hb = collector()
        local_a.subscribe("chat.**", ha)
        local_b.subscribe("chat.**", hb)
        from_a = sig("chat.room1.msg", {"text": "hi"})
        await local_a.publish(from_a)
        from_cluster = sig("chat.room2.msg")
        await buses[2].publish(from_cluster)
        end = sig("chat.end")
        await local_b.publish(end)
        await local_a.publish(sig("other.thing"))  # not bridged
        await wait_until(lambda: len(seen_a) == 3 and len(seen_b) == 3)
        # After the last signal has gone round every path, nothing arrived twice.
        for bus in buses:
            await bus.nc.flush()
        await local_a.drain()
        await local_b.drain()
        everything = sorted([from_a.id, from_cluster.id, end.id])
        assert sorted(s.id for s in seen_a) == everything
        assert sorted(s.id for s in seen_b) == everything
        # Each signal entered the cluster once: no bridge sent back what it received.
        assert [b.statistics().published for b in buses] == [1, 1, 1]
        for bridge in bridges:
            await bridge.close()
