"""Virtual agents at scale: memory per resident agent, activation and calls as residents grow.

One node process (its own, so its memory is its agents') hosts a virtual type; ids are drawn
at random from a space of 1,000,000 (every one addressable, none spawned), and N of them
(100,000; smoke: 2,000) are activated by their first call, 16 in flight:

* **memory per resident agent** — the node process's resident memory after the activations,
  minus before, over N: everything a resident agent costs the node (the jido agent, its state,
  the registry record in the node's cache, the activation's bookkeeping). Baseline: the same
  agents started in a bare ``jido.Runtime`` (its own process too). Target ≤ 4 KB each.
* **activation and calls are not O(agents)** — the first call (activation: placement, CAS
  claim, start, state from the store) p50 over the last 1,000 activations vs the first 1,000,
  and a call to a resident agent at N resident vs at 1,000.

``python -m bench --only virtual``; one phase alone: ``python -m bench.bench_virtual --phase
cluster --n 100000 --url nats://...`` (prints its figures as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench._harness import Row, Stats, rss_bytes
from foundation.hosting.clustered import Clustered
from foundation.testing import NatsServer
from jido import Action, ActionContext, Agent, Runtime, Signal

ROOT = Path(__file__).resolve().parents[1]
SPACE = 1_000_000  # addressable ids: cell-0 .. cell-999999
IN_FLIGHT = 16
MARK = 1000  # the "few residents" point


class Touch(Action):
    """Count one touch."""

    name = "touch"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"touches": ctx.state.touches + 1}


class CellState(BaseModel):
    """A small state."""

    touches: int = 0


class _Cell(Agent):
    state_model = CellState
    actions = [Touch]
    routes = [("cell.touch", Touch)]


class Cell(Clustered, _Cell, virtual=True, type_name="bench.bench_virtual:Cell"):
    """A virtual agent (ids ``cell-...``), never passivated here (no ``idle_timeout``)."""


TOUCH = Signal(type="cell.touch", source="/bench")


async def _activate_all(call: Any, ids: list[str]) -> list[float]:
    """Call each id once (``IN_FLIGHT`` at a time); each call's latency, in order of ``ids``."""
    lat = [0.0] * len(ids)
    pos = 0

    async def worker() -> None:
        nonlocal pos
        while pos < len(ids):
            i = pos
            pos += 1
            t0 = time.perf_counter()
            await call(ids[i])
            lat[i] = time.perf_counter() - t0

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return lat


async def _sample_calls(call: Any, ids: list[str], n: int) -> list[float]:
    out = []
    for agent_id in random.sample(ids, min(n, len(ids))):
        t0 = time.perf_counter()
        await call(agent_id)
        out.append(time.perf_counter() - t0)
    return out


async def cluster_phase(url: str, n: int) -> dict[str, Any]:
    """Activate ``n`` virtual agents on one in-process node; memory and latencies."""
    from foundation._node import Node

    ids = [f"cell-{k}" for k in random.sample(range(SPACE), n)]
    # a 5 s lease: a full GC of a 100k-agent heap pauses the process past the 1 s default
    async with Node(nats=url, name="virt", agents=[Cell], failover=False, lease_ttl=5) as node:

        async def call(agent_id: str) -> None:
            await node.ref(agent_id, cls=Cell).call(TOUCH)

        await _activate_all(call, [f"cell-warm-{i}" for i in range(200)])
        gc.collect()
        before = rss_bytes()
        first = await _activate_all(call, ids[:MARK])
        calls_few = await _sample_calls(call, ids[:MARK], 1000)
        rest = await _activate_all(call, ids[MARK:])
        # no gc.collect() before this reading: a full collection of a 100k-agent heap holds
        # the GIL past the default lease's margin; see the note in BENCHMARKS.md
        after = rss_bytes()
        calls_many = await _sample_calls(call, ids, 1000)
        resident = len(node.local_agents())
        fenced = node.fenced
        gc_full = _full_collection()
    last = (first + rest)[-MARK:]
    return {
        "bytes_per_agent": (after - before) / n,
        "resident": resident,
        "fenced": fenced,
        "gc_full": gc_full,
        "activate_first": first,
        "activate_last": last,
        "calls_few": calls_few,
        "calls_many": calls_many,
    }


async def runtime_phase(n: int) -> dict[str, Any]:
    """The same agents in a bare ``jido.Runtime``: memory per agent."""
    async with Runtime() as rt:

        async def call(agent_id: str) -> None:
            ref = rt.get(agent_id) or await rt.start(_Cell, id=agent_id)
            await ref.call(TOUCH)

        await _activate_all(call, [f"warm-{i}" for i in range(200)])
        gc.collect()
        before = rss_bytes()
        await _activate_all(call, [f"cell-{k}" for k in random.sample(range(SPACE), n)])
        gc.collect()
        after = rss_bytes()
        gc_full = _full_collection()
    return {"bytes_per_agent": (after - before) / n, "gc_full": gc_full}


def _full_collection() -> float:
    """Seconds one full garbage collection of this process's heap takes (the pause)."""
    t0 = time.perf_counter()
    gc.collect()
    return time.perf_counter() - t0


async def _phase(args: list[str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_virtual",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"phase {args[:2]} failed: {err.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def run(quick: bool) -> list[Row]:
    """Measure the virtual-agent figures (``quick``: 2,000 agents, seconds)."""
    n = 2000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="bench-virtual-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js")
        await server.astart()
        try:
            cluster = await _phase(["--phase", "cluster", "--n", str(n), "--url", server.url])
        finally:
            await server.astop()
    bare = await _phase(["--phase", "runtime", "--n", str(n)])
    note = f"{cluster['resident']:,} resident of {SPACE:,} addressable ids"
    return [
        Row(
            "virtual",
            f"memory per resident virtual agent, one node, {n:,} resident",
            "B",
            cluster["bytes_per_agent"],
            "the same agent in a bare jido.Runtime",
            bare["bytes_per_agent"],
            target="≤ 4 KB",
            note=note,
        ),
        Row(
            "virtual",
            f"full garbage collection (the process's pause), {n:,} resident",
            "s",
            cluster["gc_full"],
            "the same in a bare jido.Runtime",
            bare["gc_full"],
            target="report (a node fences after 0.75 s by default)",
        ),
        Row.from_stats(
            "virtual",
            f"activation (first call) p50, last {MARK:,} of {n:,}",
            "s",
            Stats.of(cluster["activate_last"]),
            f"first {MARK:,} activations",
            Stats.of(cluster["activate_first"]),
            target="not O(agents)",
        ),
        Row.from_stats(
            "virtual",
            f"call to a resident virtual agent p50, {n:,} resident",
            "s",
            Stats.of(cluster["calls_many"]),
            f"the same at {MARK:,} resident",
            Stats.of(cluster["calls_few"]),
            target="not O(agents)",
        ),
    ]


def main() -> None:
    """Run one phase and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phase", choices=["cluster", "runtime"], required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--url", default="")
    args = parser.parse_args()
    if args.phase == "cluster":
        result = asyncio.run(cluster_phase(args.url, args.n))
    else:
        result = asyncio.run(runtime_phase(args.n))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
