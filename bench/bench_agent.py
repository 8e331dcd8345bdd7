"""Agents runtime: call round trip, concurrent throughput, start rate, idle memory, checkpoints.

Figures, each against a baseline measured in the same run:

* ``ref.call`` round trip (route → no-op action → state merge → reply) versus a raw asyncio
  future ping-pong between two tasks; target: p50 ≤ 4× the ping-pong;
* calls/s with concurrent callers into one agent versus the same callers through a raw
  ``asyncio.Queue`` served by one task resolving futures; target ≥ 50,000 calls/s;
* agents started per second versus creating one parked asyncio task per agent (what a
  task-per-agent runtime pays at least); target ≥ 20,000 agents/s;
* resident memory per idle agent (100,000 agents, measured in a fresh process) versus one parked
  asyncio task per agent, in a fresh process too; target ≤ 4 KB;
* a command with a checkpoint per command to :class:`~jido.SQLiteStore` versus a raw ``sqlite3``
  upsert + commit of the same bytes on the loop thread; target p50 ≤ 1 ms.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench._harness import Row, Stats, sample_async_latency, throughput_rounds
from bench.bench_baselines import future_pingpong_latency
from jido import Action, Agent, Runtime, Signal, SQLiteStore
from jido._store import Checkpoint

GROUP = "agents"


class Ping(Action):
    """Do nothing (the no-op of the round-trip figure)."""

    async def run(self, params: Any, ctx: Any) -> Any:
        return None


class Bump(Action):
    """Increment the counter (a state change to checkpoint)."""

    async def run(self, params: Any, ctx: Any) -> Any:
        return {"n": ctx.state.n + 1}


class CounterState(BaseModel):
    n: int = 0


class Counter(Agent):
    """The benchmark agent."""

    state_model = CounterState
    actions = [Ping, Bump]
    routes = [("bench.ping", Ping), ("bench.bump", Bump)]
    mailbox_size = 100_000


PING = Signal(type="bench.ping", source="/bench")
BUMP = Signal(type="bench.bump", source="/bench")


async def call_latency(n: int) -> list[float]:
    """Seconds per sequential ``ref.call`` of the no-op route."""
    async with Runtime() as rt:
        ref = await rt.start(Counter, id="c")
        return await sample_async_latency(lambda: ref.call(PING), n=n, warmup=min(n, 500))


async def call_throughput(ops: int, rounds: int, callers: int) -> list[float]:
    """Calls/s into one agent from ``callers`` concurrent tasks."""
    async with Runtime() as rt:
        ref = await rt.start(Counter, id="c")

        async def one(k: int) -> None:
            for _ in range(k):
                await ref.call(PING)

        async def batch(k: int) -> None:
            await asyncio.gather(*(one(k // callers) for _ in range(callers)))

        return await throughput_rounds(batch, ops=ops - ops % callers, rounds=rounds)


async def raw_queue_throughput(ops: int, rounds: int, callers: int) -> list[float]:
    """The same concurrent callers through an ``asyncio.Queue`` served by one task."""
    queue: asyncio.Queue[asyncio.Future[int]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def serve() -> None:
        while True:
            fut = await queue.get()
            if not fut.done():
                fut.set_result(1)

    task = asyncio.create_task(serve())
    try:

        async def one(k: int) -> None:
            for _ in range(k):
                fut: asyncio.Future[int] = loop.create_future()
                queue.put_nowait(fut)
                await fut

        async def batch(k: int) -> None:
            await asyncio.gather(*(one(k // callers) for _ in range(callers)))

        return await throughput_rounds(batch, ops=ops - ops % callers, rounds=rounds)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def start_rate(n: int, rounds: int) -> list[float]:
    """Agents started per second (each round in a fresh runtime, stopped afterwards)."""
    out: list[float] = []
    for _ in range(rounds):
        async with Runtime() as rt:
            t0 = time.perf_counter()
            for i in range(n):
                await rt.start(Counter, id=f"a{i}")
            out.append(n / (time.perf_counter() - t0))
    return out


async def task_rate(n: int, rounds: int) -> list[float]:
    """Parked asyncio tasks created per second (one per would-be agent)."""
    out: list[float] = []
    for _ in range(rounds):
        gate = asyncio.Event()
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(gate.wait()) for _ in range(n)]
        await asyncio.sleep(0)  # let every task reach its parked state
        out.append(n / (time.perf_counter() - t0))
        gate.set()
        await asyncio.gather(*tasks)
    return out


_MEM_OURS = """
import asyncio, gc, sys
sys.path[:0] = {paths!r}
from bench._harness import rss_bytes
from bench.bench_agent import Counter
from jido import Runtime
async def main():
    async with Runtime() as rt:
        await rt.start(Counter, id="warm")
        gc.collect(); before = rss_bytes()
        for i in range({n}):
            await rt.start(Counter, id=f"agent-{{i}}")
        gc.collect(); after = rss_bytes()
        print((after - before) / {n})
asyncio.run(main())
"""

_MEM_TASKS = """
import asyncio, gc, sys
sys.path[:0] = {paths!r}
from bench._harness import rss_bytes
async def main():
    gate = asyncio.Event()
    gc.collect(); before = rss_bytes()
    tasks = [asyncio.create_task(gate.wait()) for _ in range({n})]
    await asyncio.sleep(0)
    gc.collect(); after = rss_bytes()
    print((after - before) / {n})
    gate.set(); await asyncio.gather(*tasks)
asyncio.run(main())
"""


def _mem(code: str, n: int) -> float:
    root = str(Path(__file__).resolve().parent.parent)
    paths = [root, str(Path(root) / "src")]
    out = subprocess.run(
        [sys.executable, "-c", code.format(paths=paths, n=n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(out.stdout.strip().splitlines()[-1])


async def checkpoint_latency(n: int, path: Path) -> list[float]:
    """Seconds per ``ref.call`` of a state change with a SQLite checkpoint per command."""
    async with SQLiteStore(path) as store, Runtime(store=store, checkpoint="every") as rt:
        ref = await rt.start(Counter, id="c")
        return await sample_async_latency(lambda: ref.call(BUMP), n=n, warmup=min(n, 200))


def raw_sqlite_latency(n: int, path: Path) -> list[float]:
    """Seconds per raw ``sqlite3`` upsert + commit (WAL, synchronous=NORMAL) of a checkpoint."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (key TEXT PRIMARY KEY, data BLOB)")
    blob = Checkpoint(state={"n": 1}, agent_type="bench:Counter", seq=1).to_bytes()
    sql = "INSERT INTO t VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET data = excluded.data"
    out: list[float] = []
    perf = time.perf_counter
    try:
        for i in range(n + 100):
            t0 = perf()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, ("c", blob))
            conn.execute("COMMIT")
            if i >= 100:
                out.append(perf() - t0)
    finally:
        conn.close()
    return out


async def run(quick: bool) -> list[Row]:
    """Measure the agents runtime against its same-run baselines."""
    n = 2_000 if quick else 30_000
    ops = 5_000 if quick else 100_000
    rounds = 3 if quick else 10
    callers = 64
    starts = 2_000 if quick else 20_000
    idle = 10_000 if quick else 100_000
    cp_n = 300 if quick else 5_000
    rows = [
        Row.from_stats(
            GROUP,
            "ref.call round trip (no-op action)",
            "s",
            Stats.of(await call_latency(n)),
            "raw asyncio future ping-pong",
            Stats.of(await future_pingpong_latency(n)),
            target="p50 ≤ 4× baseline",
            note="route → action → state merge → reply, one caller",
        ),
        Row.from_stats(
            GROUP,
            f"ref.call throughput, {callers} concurrent callers, one agent",
            "calls/s",
            Stats.of(await call_throughput(ops, rounds, callers)),
            "raw asyncio.Queue + future server",
            Stats.of(await raw_queue_throughput(ops, rounds, callers)),
            better="higher",
            target="≥ 50,000 calls/s",
        ),
        Row.from_stats(
            GROUP,
            "agent start rate",
            "agents/s",
            Stats.of(await start_rate(starts, rounds)),
            "one parked asyncio task per agent",
            Stats.of(await task_rate(starts, rounds)),
            better="higher",
            target="≥ 20,000 agents/s",
        ),
    ]
    mem_ours = await asyncio.to_thread(_mem, _MEM_OURS, idle)
    mem_tasks = await asyncio.to_thread(_mem, _MEM_TASKS, idle)
    rows.append(
        Row(
            GROUP,
            f"resident memory per idle agent ({idle:,} agents)",
            "B",
            mem_ours,
            "one parked asyncio task per agent",
            mem_tasks,
            target="≤ 4 KB",
            note="RSS delta in a fresh process / agents",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        ours = Stats.of(await checkpoint_latency(cp_n, Path(tmp) / "agents.db"))
        base = Stats.of(raw_sqlite_latency(cp_n, Path(tmp) / "raw.db"))
    rows.append(
        Row.from_stats(
            GROUP,
            "command with SQLite checkpoint (ref.call)",
            "s",
            ours,
            "raw sqlite3 upsert + commit",
            base,
            target="p50 ≤ 1 ms",
            note="checkpoint='every': the reply waits for the commit",
        )
    )
    return rows
