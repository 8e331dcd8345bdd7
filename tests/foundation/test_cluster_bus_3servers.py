"""ClusterBus and AgentInbox on a real 3-server JetStream cluster (R3 streams), with each "node"
connected to a different server, and one server killed mid-way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client as NatsClient

from foundation.messaging.cluster_bus import ClusterBus
from foundation.messaging.inbox import AgentInbox, ensure_inbox_stream, send_to_inbox
from foundation.testing import NatsCluster
from jido import Signal

pytestmark = [pytest.mark.nats, pytest.mark.slow]

Connect = Callable[..., Awaitable[NatsClient]]


async def wait_until(pred: Callable[[], bool], within: float = 20.0) -> None:
    """Poll ``pred`` until it holds (counters offer no event to await)."""
    async with asyncio.timeout(within):
        while not pred():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_bus_and_inbox_across_servers_survive_a_server_loss(
    nats_cluster: NatsCluster, nats_connect: Connect
) -> None:
    # Node i talks to server i first (and fails over to the others).
    ncs = [
        await nats_connect(",".join(nats_cluster.urls[i:] + nats_cluster.urls[:i]))
        for i in range(3)
    ]
    buses = [ClusterBus(nc, replicas=3) for nc in ncs]
    for bus in buses:
        await bus.start()
    await ensure_inbox_stream(ncs[0].jetstream(), replicas=3)

    everywhere: list[list[str]] = [[], [], []]
    heard: list[bool] = [False, False, False]
    for i, bus in enumerate(buses):

        async def handler(s: Signal, i: int = i) -> None:
            if s.source == "/probe":
                heard[i] = True
            else:
                everywhere[i].append(s.id)

        await bus.subscribe("orders.**", handler)
    durable: list[str] = []

    async def on_durable(s: Signal) -> None:
        durable.append(s.id)

    await buses[2].subscribe("orders.*", on_durable, delivery="at_least_once", durable="ship")

    applied: list[tuple[str, int]] = []

    async def deliver(s: Signal, seq: int) -> None:
        applied.append((s.id, seq))

    inbox = AgentInbox(ncs[1].jetstream(), "acc-1", deliver)
    await inbox.start()

    # Interest spreads between servers asynchronously (route protocol): a core subscription
    # made on server 2 is known to server 0 a moment later. Probe until every node hears.
    async with asyncio.timeout(20):
        while not all(heard):
            await buses[0].publish(Signal(type="orders", source="/probe"))
            await asyncio.sleep(0.05)

    first = [Signal(type=f"orders.o{i}", source="/t") for i in range(5)]
    await buses[0].publish(*first)
    seqs = await buses[0].publish(*first, delivery="at_least_once")
    assert len(seqs) == 5
    inbox_seqs = await send_to_inbox(ncs[0].jetstream(), "acc-1", *first)
    # Core subscribers hear both publishes (at-most-once and at-least-once) of each signal.
    await wait_until(lambda: all(len(got) == 10 for got in everywhere))
    assert all(sorted(got) == sorted(2 * [s.id for s in first]) for got in everywhere)
    # The at-least-once subscriber also hears the at-most-once publish (best effort).
    await wait_until(lambda: len(durable) == 10 and len(applied) == 5)
    assert sorted(durable) == sorted(2 * [s.id for s in first])

    # Lose one server: R3 streams keep every acknowledged signal and keep serving.
    nats_cluster.servers[1].kill()
    second = [Signal(type=f"orders.p{i}", source="/t") for i in range(5)]
    async with asyncio.timeout(30):
        while True:
            try:
                await buses[0].publish(*second, delivery="at_least_once")
                await send_to_inbox(ncs[0].jetstream(), "acc-1", *second)
                break
            except Exception:  # a stream may be electing a new leader: retry (de-duplicated)
                await asyncio.sleep(0.2)
    second_ids = {s.id for s in second}
    await wait_until(lambda: second_ids <= set(durable) and len(applied) >= 10, within=60)
    assert set(durable) == {s.id for s in first + second}
    assert [sid for sid, _ in applied] == [s.id for s in first + second]  # once, in order
    assert [seq for _, seq in applied][:5] == inbox_seqs
    await inbox.stop()
    for bus in buses:
        await bus.close()
