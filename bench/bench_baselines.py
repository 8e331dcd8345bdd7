"""The physical floor: raw asyncio and raw nats-py, measured in the same run as everything else.

Nothing here uses the project's code (except, when present, its embedded NATS launcher): these
figures are what any Python agent runtime pays at the least, so the other benchmarks' ratios
against them show how close to the floor we are. The measuring functions are importable
(``bench_peers``, ``bench_seed_table`` and ``bench_scaling`` reuse them as same-run baselines).

Figures (each with its own, simpler baseline):

* asyncio.Queue hand-off round trip (a request queue to a serving task that resolves a
  future): the floor of an in-process ``call``; baseline: one event-loop tick (``sleep(0)``).
* future ping-pong between two tasks; baseline: one event-loop tick.
* asyncio.Queue throughput (``put_nowait`` to a draining task); baseline: a plain ``deque``.
* nats-py request/reply round trip over loopback; baseline: a raw asyncio TCP echo.
* nats-py publish throughput (to a subscriber, until all are received); baseline: raw asyncio
  TCP writes of the same frames to a reading task.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bench._harness import (
    Row,
    Stats,
    nats_server,
    sample_async_latency,
    throughput_rounds,
    until_answered,
)

GROUP = "baselines"
PAYLOAD = b"x" * 128


# --------------------------------------------------------------------------- asyncio


async def loop_tick_latency(n: int) -> list[float]:
    """One event-loop tick (``await asyncio.sleep(0)``), seconds per tick."""
    return await sample_async_latency(lambda: asyncio.sleep(0), n=n, warmup=min(n, 200))


@asynccontextmanager
async def queue_server() -> AsyncIterator[asyncio.Queue[asyncio.Future[int]]]:
    """A task serving a request queue: each item is a future it resolves (a raw ``call``)."""
    queue: asyncio.Queue[asyncio.Future[int]] = asyncio.Queue()

    async def serve() -> None:
        while True:
            fut = await queue.get()
            if not fut.done():
                fut.set_result(1)

    task = asyncio.create_task(serve())
    try:
        yield queue
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def queue_call_latency(n: int) -> list[float]:
    """Round trip: put a future on a queue served by another task, await its result."""
    loop = asyncio.get_running_loop()
    async with queue_server() as queue:

        async def call() -> int:
            fut: asyncio.Future[int] = loop.create_future()
            queue.put_nowait(fut)
            return await fut

        return await sample_async_latency(call, n=n, warmup=min(n, 200))


async def future_pingpong_latency(n: int) -> list[float]:
    """Two tasks hand a token back and forth through bare futures; seconds per round trip."""
    loop = asyncio.get_running_loop()
    slot: list[asyncio.Future[asyncio.Future[None]]] = [loop.create_future()]

    async def partner() -> None:
        while True:
            reply = await slot[0]
            slot[0] = loop.create_future()  # re-armed before the pinger resumes
            reply.set_result(None)

    task = asyncio.create_task(partner())
    try:

        async def ping() -> None:
            reply: asyncio.Future[None] = loop.create_future()
            slot[0].set_result(reply)
            await reply

        return await sample_async_latency(ping, n=n, warmup=min(n, 200))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def queue_throughput(ops: int, rounds: int) -> list[float]:
    """Messages/s through an ``asyncio.Queue`` to a draining task (per round)."""
    queue: asyncio.Queue[int | asyncio.Future[None]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        while True:
            item = await queue.get()
            if isinstance(item, asyncio.Future):
                item.set_result(None)

    task = asyncio.create_task(drain())
    try:

        async def batch(k: int) -> None:
            for i in range(k):
                queue.put_nowait(i)
            done: asyncio.Future[None] = loop.create_future()
            queue.put_nowait(done)
            await done

        return await throughput_rounds(batch, ops=ops, rounds=rounds)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def deque_throughput(ops: int, rounds: int) -> list[float]:
    """Items/s appended and popped through a plain ``collections.deque`` (no tasks)."""
    dq: collections.deque[int] = collections.deque()

    async def batch(k: int) -> None:
        for i in range(k):
            dq.append(i)
        while dq:
            dq.popleft()

    return await throughput_rounds(batch, ops=ops, rounds=rounds)


# --------------------------------------------------------------------------- nats-py


async def nats_request_latency(url: str, n: int) -> list[float]:
    """Raw nats-py request/reply round trip (responder on its own connection), seconds."""
    import nats

    server_nc = await nats.connect(url)
    client_nc = await nats.connect(url)
    try:

        async def respond(msg: Any) -> None:
            await msg.respond(msg.data)

        await server_nc.subscribe("bench.echo", cb=respond)
        await server_nc.flush()
        await until_answered(client_nc, "bench.echo")

        async def call() -> Any:
            return await client_nc.request("bench.echo", PAYLOAD, timeout=5)

        return await sample_async_latency(call, n=n, warmup=min(n, 100))
    finally:
        await client_nc.drain()
        await server_nc.drain()


async def nats_publish_throughput(url: str, ops: int, rounds: int) -> list[float]:
    """Raw nats-py publish rate (messages/s) until a subscriber has received every one."""
    import nats

    sub_nc = await nats.connect(url)
    pub_nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"left": 0, "done": None}

    async def on_msg(_msg: Any) -> None:
        state["left"] -= 1
        if state["left"] == 0 and state["done"] is not None:
            state["done"].set_result(None)

    try:
        await sub_nc.subscribe("bench.pub", cb=on_msg, pending_msgs_limit=ops * 2 + 10)
        await sub_nc.flush()

        async def batch(k: int) -> None:
            state["left"] = k
            state["done"] = loop.create_future()
            for _ in range(k):
                await pub_nc.publish("bench.pub", PAYLOAD)
            await pub_nc.flush()
            await asyncio.wait_for(state["done"], 60)

        return await throughput_rounds(batch, ops=ops, rounds=rounds)
    finally:
        await pub_nc.drain()
        await sub_nc.drain()


@asynccontextmanager
async def _tcp_server(handler: Any) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


async def tcp_echo_latency(n: int) -> list[float]:
    """Raw asyncio TCP echo round trip of a 128-byte frame over loopback, seconds."""
    size = len(PAYLOAD)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.readexactly(size)
                writer.write(data)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async with _tcp_server(echo) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:

            async def call() -> bytes:
                writer.write(PAYLOAD)
                return await reader.readexactly(size)

            return await sample_async_latency(call, n=n, warmup=min(n, 100))
        finally:
            writer.close()
            await writer.wait_closed()


async def tcp_stream_throughput(ops: int, rounds: int) -> list[float]:
    """Raw asyncio TCP: frames/s written and fully read by the peer task (per round)."""
    size = len(PAYLOAD)
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"left": 0, "done": None}

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            buffered = 0
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    return
                buffered += len(chunk)
                frames, buffered = divmod(buffered, size)
                state["left"] -= frames
                if state["left"] <= 0 and state["done"] is not None and not state["done"].done():
                    state["done"].set_result(None)
        finally:
            writer.close()

    async with _tcp_server(sink) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:

            async def batch(k: int) -> None:
                state["left"] = k
                state["done"] = loop.create_future()
                for _ in range(k):
                    writer.write(PAYLOAD)
                    if writer.transport.get_write_buffer_size() > 1 << 20:
                        await writer.drain()
                await writer.drain()
                await asyncio.wait_for(state["done"], 60)

            return await throughput_rounds(batch, ops=ops, rounds=rounds)
        finally:
            writer.close()
            await writer.wait_closed()


# --------------------------------------------------------------------------- run


async def run(quick: bool) -> list[Row]:
    """Measure the physical floor (and each floor's own simpler baseline)."""
    n = 2_000 if quick else 50_000
    nn = 500 if quick else 10_000
    ops = 5_000 if quick else 100_000
    nops = 5_000 if quick else 100_000
    rounds = 3 if quick else 15
    t0 = time.perf_counter()
    tick = Stats.of(await loop_tick_latency(n))
    rows = [
        Row.from_stats(
            GROUP,
            "asyncio.Queue call round trip",
            "s",
            Stats.of(await queue_call_latency(n)),
            "one loop tick",
            tick,
            note="request queue → serving task → future; the floor of an in-process call",
        ),
        Row.from_stats(
            GROUP,
            "future ping-pong round trip",
            "s",
            Stats.of(await future_pingpong_latency(n)),
            "one loop tick",
            tick,
        ),
        Row.from_stats(
            GROUP,
            "asyncio.Queue throughput",
            "msg/s",
            Stats.of(await queue_throughput(ops, rounds)),
            "collections.deque",
            Stats.of(await deque_throughput(ops, rounds)),
            better="higher",
        ),
    ]
    try:
        async with nats_server() as url:
            rows.append(
                Row.from_stats(
                    GROUP,
                    "nats-py request/reply round trip",
                    "s",
                    Stats.of(await nats_request_latency(url, nn)),
                    "raw asyncio TCP echo",
                    Stats.of(await tcp_echo_latency(nn)),
                    note="loopback, 128 B payload, responder on a second connection",
                )
            )
            rows.append(
                Row.from_stats(
                    GROUP,
                    "nats-py publish throughput",
                    "msg/s",
                    Stats.of(await nats_publish_throughput(url, nops, rounds)),
                    "raw asyncio TCP writes",
                    Stats.of(await tcp_stream_throughput(nops, rounds)),
                    better="higher",
                    note="128 B payload, counted when the subscriber has received all",
                )
            )
    except (RuntimeError, OSError) as exc:
        reason = f"no nats-server: {exc}"
        rows.append(Row.unavailable(GROUP, "nats-py request/reply round trip", "s", reason))
        rows.append(
            Row.unavailable(GROUP, "nats-py publish throughput", "msg/s", reason, better="higher")
        )
    rows[0].extra["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return rows
