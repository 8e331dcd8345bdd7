"""Bus publish → subscriber handler, against a raw ``asyncio.Queue`` hand-off in the same run.

Figures:

* throughput, publish → one (sync) handler, one core: ``await bus.publish(sig)`` per signal
  (full validation incl. the payload-size check, log append, routing, the subscriber's bounded
  queue and its worker task) versus ``queue.put_nowait(sig)`` into an ``asyncio.Queue`` read
  by one consumer task calling the same handler. The publisher yields to the loop every
  ``CHUNK`` signals in both cases; target ≥ 200k signals/s;
* p50 latency of one hand-off (publish to handler running, measured one signal at a time)
  versus ``put_nowait`` to a consumer task waiting on ``queue.get()``; target ≤ 3× the raw
  queue;
* throughput to a persistent (durable, auto-ack) subscription versus the same raw queue;
* fan-out to 10 pattern subscribers versus 10 raw queues.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench._harness import Row, Stats, sample_async_latency
from jido import Bus, Signal

GROUP = "bus"
CHUNK = 256


def _signals(n: int) -> list[Signal]:
    return [Signal(type="bench.order.created", source="/bench", data={"i": i}) for i in range(n)]


async def _rounds(fn: Callable[[int], Awaitable[None]], *, ops: int, rounds: int) -> Stats:
    await fn(min(ops, 2000))
    out: list[float] = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            await fn(ops)
            out.append(ops / (time.perf_counter() - t0))
    finally:
        if gc_was:
            gc.enable()
    return Stats.of(out)


class Counter:
    """A handler counting calls and completing a future at a target count."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done: asyncio.Future[None] | None = None

    def arm(self, n: int) -> asyncio.Future[None]:
        self.count = 0
        self.target = n
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def __call__(self, sig: Any) -> None:
        self.count += 1
        if self.count == self.target and self.done is not None:
            self.done.set_result(None)


async def _bus_throughput(
    sigs: list[Signal], *, ops: int, rounds: int, durable: bool = False, fanout: int = 1
) -> Stats:
    async with Bus(log_size=max(10_000, CHUNK * 4)) as bus:
        counters = [Counter() for _ in range(fanout)]
        for i, c in enumerate(counters):
            if durable:
                bus.subscribe("bench.**", c, durable=f"d{i}", max_in_flight=CHUNK)
            else:
                bus.subscribe("bench.**", c, queue_size=CHUNK * 2)

        async def batch(n: int) -> None:
            waits = [c.arm(n) for c in counters]
            publish = bus.publish
            for i in range(n):
                await publish(sigs[i % len(sigs)])
                if i % CHUNK == CHUNK - 1:
                    await asyncio.sleep(0)
            await asyncio.gather(*waits)

        return await _rounds(batch, ops=ops, rounds=rounds)


async def _queue_throughput(sigs: list[Signal], *, ops: int, rounds: int, fanout: int = 1) -> Stats:
    counters = [Counter() for _ in range(fanout)]
    queues: list[asyncio.Queue[Signal]] = [asyncio.Queue() for _ in range(fanout)]

    async def consume(q: asyncio.Queue[Signal], handler: Counter) -> None:
        while True:
            handler(await q.get())

    tasks = [asyncio.create_task(consume(q, c)) for q, c in zip(queues, counters, strict=True)]
    try:

        async def batch(n: int) -> None:
            waits = [c.arm(n) for c in counters]
            for i in range(n):
                sig = sigs[i % len(sigs)]
                for q in queues:
                    q.put_nowait(sig)
                if i % CHUNK == CHUNK - 1:
                    await asyncio.sleep(0)
            await asyncio.gather(*waits)

        return await _rounds(batch, ops=ops, rounds=rounds)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _latencies(sigs: list[Signal], n: int) -> tuple[list[float], list[float]]:
    loop = asyncio.get_running_loop()
    holder: list[asyncio.Future[None]] = []

    def handler(sig: Signal) -> None:
        holder[0].set_result(None)

    async with Bus() as bus:
        bus.subscribe("bench.**", handler)
        idx = 0

        async def one_bus() -> None:
            nonlocal idx
            holder[:] = [loop.create_future()]
            idx += 1
            await bus.publish(sigs[idx % len(sigs)])
            await holder[0]

        ours = await sample_async_latency(one_bus, n=n, warmup=500)

    queue: asyncio.Queue[Signal] = asyncio.Queue()

    async def consume() -> None:
        while True:
            handler(await queue.get())

    task = asyncio.create_task(consume())
    try:

        async def one_queue() -> None:
            nonlocal idx
            holder[:] = [loop.create_future()]
            idx += 1
            queue.put_nowait(sigs[idx % len(sigs)])
            await holder[0]

        base = await sample_async_latency(one_queue, n=n, warmup=500)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return ours, base


async def run(quick: bool) -> list[Row]:
    """Measure and return the rows."""
    ops = 20_000 if quick else 200_000
    rounds = 3 if quick else 5
    sigs = _signals(4096)
    rows: list[Row] = []

    # interleave ours and the baseline so both see the same machine state
    base = await _queue_throughput(sigs, ops=ops, rounds=rounds)
    ours = await _bus_throughput(sigs, ops=ops, rounds=rounds)
    rows.append(
        Row.from_stats(
            GROUP,
            "publish → 1 handler throughput",
            "signals/s",
            ours,
            "asyncio.Queue put_nowait → consumer task",
            base,
            better="higher",
            target="≥ 200k/s",
        )
    )

    ours_lat, base_lat = await _latencies(sigs, 2_000 if quick else 20_000)
    rows.append(
        Row.from_stats(
            GROUP,
            "publish → handler latency (one at a time)",
            "s",
            Stats.of(ours_lat),
            "asyncio.Queue hand-off to a waiting consumer",
            Stats.of(base_lat),
            target="≤ 3× raw queue p50",
        )
    )

    durable = await _bus_throughput(sigs, ops=ops // 2, rounds=rounds, durable=True)
    base2 = await _queue_throughput(sigs, ops=ops // 2, rounds=rounds)
    rows.append(
        Row.from_stats(
            GROUP,
            "publish → persistent subscription (auto-ack)",
            "signals/s",
            durable,
            "asyncio.Queue put_nowait → consumer task",
            base2,
            better="higher",
        )
    )

    fan_ops = ops // 10
    fan = await _bus_throughput(sigs, ops=fan_ops, rounds=rounds, fanout=10)
    fan_base = await _queue_throughput(sigs, ops=fan_ops, rounds=rounds, fanout=10)
    rows.append(
        Row.from_stats(
            GROUP,
            "publish → 10 subscribers (signals published/s)",
            "signals/s",
            fan,
            "10 asyncio.Queues, one consumer task each",
            fan_base,
            better="higher",
        )
    )
    return rows
