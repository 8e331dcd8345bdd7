"""Scaling: throughput and memory per agent vs number of agents, and vs node processes.

* **throughput vs agents** (1 → 100,000): N agents in one ``Runtime``; a batch of
  ``max(N, 20,000)`` (smoke: 5,000) fire-and-forget signals sent round-robin to them, timed
  until every one was handled. Baseline: N raw asyncio tasks, each draining its own
  ``asyncio.Queue``, fed the same batch the same way.
* **memory per agent vs agents**: resident memory added by N idle agents, divided by N, each
  point in a fresh process. Baseline: N parked raw asyncio tasks with a queue each, also in a
  fresh process.
* **throughput vs node processes** (1, 2 on two cores): calls from a driver node to agents
  spread over k ``foundation node`` processes. Baseline: raw nats-py request/reply with the
  same concurrency. Reported "not yet available" while ``foundation.Node`` does not exist.

Writes ``scaling.png`` (matplotlib) into the run's artefact directory (``bench/results/`` on
a full run), linked from BENCHMARKS.md.

``python -m bench.bench_scaling --memory N --kind ours|raw`` is the fresh-process probe.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import math
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench._harness import (
    Row,
    Stats,
    nats_server,
    output_dir,
    rss_bytes,
    throughput_rounds,
    until_answered,
)
from jido import Action, Agent, Runtime, Signal

ROOT = Path(__file__).resolve().parents[1]
COUNTER: dict[str, Any] = {"left": 0, "fut": None}


class Hit(Action):
    """Count one signal; wake the sender when the batch is complete."""

    async def run(self, params: Any, ctx: Any) -> Any:
        COUNTER["left"] -= 1
        fut = COUNTER["fut"]
        if COUNTER["left"] <= 0 and fut is not None and not fut.done():
            fut.set_result(None)
        return None


class Ping(Action):
    """Answer a call (the node-scaling figure)."""

    async def run(self, params: Any, ctx: Any) -> Any:
        return None


class ScaleState(BaseModel):
    """A small state."""

    n: int = 0


class ScaleAgent(Agent):
    """The agent of the scaling figures."""

    state_model = ScaleState
    actions = [Hit, Ping]
    routes = [("scale.hit", Hit), ("scale.ping", Ping)]
    mailbox_size = 1_000_000


HIT = Signal(type="scale.hit", source="/bench")


def _arm(k: int) -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    COUNTER["left"] = k
    COUNTER["fut"] = fut
    return fut


async def ours_throughput(n_agents: int, rounds: int, batch_min: int = 20_000) -> list[float]:
    """Signals/s through ``n_agents`` agents, round-robin casts until all handled."""
    ops = max(n_agents, batch_min)
    async with Runtime() as rt:
        refs = [await rt.start(ScaleAgent, id=f"a{i}") for i in range(n_agents)]

        async def batch(k: int) -> None:
            done = _arm(k)
            for i in range(k):
                await refs[i % n_agents].cast(HIT)
            await done

        return await throughput_rounds(batch, ops=ops, rounds=rounds)


async def raw_throughput(n_agents: int, rounds: int, batch_min: int = 20_000) -> list[float]:
    """The same batch through ``n_agents`` raw tasks, each draining its own queue."""
    ops = max(n_agents, batch_min)
    queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(n_agents)]

    async def drain(q: asyncio.Queue[int]) -> None:
        while True:
            await q.get()
            COUNTER["left"] -= 1
            fut = COUNTER["fut"]
            if COUNTER["left"] <= 0 and fut is not None and not fut.done():
                fut.set_result(None)

    tasks = [asyncio.create_task(drain(q)) for q in queues]
    try:

        async def batch(k: int) -> None:
            done = _arm(k)
            for i in range(k):
                queues[i % n_agents].put_nowait(i)
            await done

        return await throughput_rounds(batch, ops=ops, rounds=rounds)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- memory probe


async def _memory_probe(n: int, kind: str) -> float:
    gc.collect()
    before = rss_bytes()
    if kind == "ours":
        async with Runtime() as rt:
            for i in range(n):
                await rt.start(ScaleAgent, id=f"a{i}")
            gc.collect()
            return (rss_bytes() - before) / n
    queues = [asyncio.Queue[int]() for _ in range(n)]
    tasks = [asyncio.create_task(q.get()) for q in queues]
    await asyncio.sleep(0)  # let every task park on its queue
    gc.collect()
    per = (rss_bytes() - before) / n
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return per


async def memory_per_agent(n: int, kind: str) -> float:
    """Bytes per idle agent (``ours``) or parked task (``raw``), in a fresh process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_scaling",
        "--memory",
        str(n),
        "--kind",
        kind,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed: {err.decode(errors='replace')[-300:]}")
    return float(json.loads(out.decode().strip().splitlines()[-1])["bytes_per_agent"])


# --------------------------------------------------------------------------- node processes


def _cluster_reason() -> str | None:
    from bench.bench_seed_table import cluster_unavailable_reason

    return cluster_unavailable_reason()


async def node_throughput(k_nodes: int, quick: bool) -> tuple[list[float], list[float]]:
    """Calls/s from a driver to agents spread over ``k_nodes`` node processes, and raw NATS."""
    import foundation
    from bench._seed_agents import NOOP
    from bench._seed_cluster_app import SeedClustered
    from bench.bench_seed_table import node_processes, wait_nodes, warm_up

    agents, callers = (6, 20) if quick else (60, 50)
    ops, rounds = (500, 2) if quick else (10_000, 5)
    node_cls: Any = foundation.Node
    async with (
        nats_server() as url,
        node_processes(url, k_nodes, "scale-n") as nodes,
        node_cls(nats=url, name="scale-driver", agents=[SeedClustered], call_timeout=60) as driver,
    ):
        await wait_nodes(driver, nodes, 30 if quick else 60)
        await warm_up(driver, nodes, 30 if quick else 60)
        names = nodes.names
        refs = [
            await driver.spawn(SeedClustered, id=f"x{i}", node=names[i % k_nodes])
            for i in range(agents)
        ]

        async def batch(k: int) -> None:
            async def caller(c: int) -> None:
                for j in range(c, k, callers):
                    await refs[j % agents].call(NOOP)

            await asyncio.gather(*(caller(c) for c in range(callers)))

        ours = await throughput_rounds(batch, ops=ops, rounds=rounds)
        raw = await raw_request_throughput(url, callers, ops, rounds)
    return ours, raw


async def raw_request_throughput(url: str, callers: int, ops: int, rounds: int) -> list[float]:
    """Raw nats-py request/reply throughput with ``callers`` concurrent requesters."""
    import nats

    srv = await nats.connect(url)
    cli = await nats.connect(url)
    try:

        async def respond(msg: Any) -> None:
            await msg.respond(b"")

        await srv.subscribe("bench.scale", cb=respond)
        await srv.flush()
        await until_answered(cli, "bench.scale")

        async def batch(k: int) -> None:
            async def caller(c: int) -> None:
                for _ in range(c, k, callers):
                    await cli.request("bench.scale", b"x", timeout=10)

            await asyncio.gather(*(caller(c) for c in range(callers)))

        return await throughput_rounds(batch, ops=ops, rounds=rounds)
    finally:
        await cli.drain()
        await srv.drain()


# --------------------------------------------------------------------------- run


def plot(points: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """Write the scaling plot: throughput and memory per agent vs agent count, and (when
    measured) calls/s vs node processes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if points.get("nodes_ours") else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2))
    specs = [
        (
            "Throughput vs number of agents",
            "signals handled / s",
            1.0,
            [("tp_ours", "ours (jido Runtime)", "o-"), ("tp_raw", "raw tasks + queues", "s--")],
        ),
        (
            "Memory per agent vs number of agents",
            "KiB per agent",
            1 / 1024,
            [("mem_ours", "ours (idle agent)", "o-"), ("mem_raw", "raw parked task", "s--")],
        ),
        (
            "Cluster calls/s vs node processes",
            "calls / s",
            1.0,
            [
                ("nodes_ours", "ours (driver → node processes)", "o-"),
                ("nodes_raw", "raw nats-py request/reply", "s--"),
            ],
        ),
    ]
    for ax, (title, ylabel, scale, series) in zip(axes, specs, strict=False):
        for key, label, style in series:
            if points.get(key):
                xs, ys = zip(*points[key], strict=True)
                ax.plot(xs, [y * scale for y in ys], style, label=label)
        if title.startswith("Cluster"):
            ax.set_xlabel("node processes")
            ax.set_xticks([x for x, _ in points.get("nodes_ours", [])])
        else:
            ax.set_xscale("log")
            ax.set_xlabel("agents")
        if title.startswith("Throughput"):
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


async def run(quick: bool) -> list[Row]:
    """Throughput and memory vs agents; throughput vs node processes when the cluster exists."""
    counts = [1, 10, 100] if quick else [1, 10, 100, 1_000, 10_000, 100_000]
    mem_counts = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    rounds = 2 if quick else 5
    rows: list[Row] = []
    points: dict[str, list[tuple[int, float]]] = {}
    for n in counts:
        batch_min = 5_000 if quick else 20_000
        ours = Stats.of(await ours_throughput(n, rounds, batch_min))
        raw = Stats.of(await raw_throughput(n, rounds, batch_min))
        points.setdefault("tp_ours", []).append((n, ours.median))
        points.setdefault("tp_raw", []).append((n, raw.median))
        rows.append(
            Row.from_stats(
                "scaling: throughput",
                f"{n:,} agents",
                "msg/s",
                ours,
                "raw tasks + queues",
                raw,
                better="higher",
                extra={"agents": n},
            )
        )
    for n in mem_counts:
        ours_b = await memory_per_agent(n, "ours")
        raw_b = await memory_per_agent(n, "raw")
        points.setdefault("mem_ours", []).append((n, ours_b))
        points.setdefault("mem_raw", []).append((n, raw_b))
        rows.append(
            Row(
                "scaling: memory",
                f"{n:,} agents",
                "B",
                ours_b,
                "raw parked task + queue",
                raw_b,
                note="resident memory added per idle agent, fresh process",
                extra={"agents": n},
            )
        )
    reason = _cluster_reason()
    for k in (1, 2):
        name = f"{k} node process{'es' if k > 1 else ''}"
        if reason is None:
            try:
                ours_k, raw_k = await node_throughput(k, quick)
            except Exception as exc:  # say why (an error row fails the run), keep the rest
                reason_k = f"cluster run failed: {type(exc).__name__}: {exc}"[:300]
                failed = Row.unavailable(
                    "scaling: nodes", name, "calls/s", reason_k, better="higher"
                )
                rows.append(dataclasses.replace(failed, status="error"))
                continue
            points.setdefault("nodes_ours", []).append((k, Stats.of(ours_k).median))
            points.setdefault("nodes_raw", []).append((k, Stats.of(raw_k).median))
            rows.append(
                Row.from_stats(
                    "scaling: nodes",
                    name,
                    "calls/s",
                    Stats.of(ours_k),
                    "raw nats-py request/reply",
                    Stats.of(raw_k),
                    better="higher",
                    note="driver node → agents on k node processes, concurrent callers",
                )
            )
        else:
            rows.append(Row.unavailable("scaling: nodes", name, "calls/s", reason, better="higher"))
    png = plot(points, output_dir() / "scaling.png")
    rows[0].extra["plot"] = png.name
    return rows


def main(argv: list[str] | None = None) -> int:
    """The fresh-process memory probe: prints ``{"bytes_per_agent": ...}``."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scaling")
    parser.add_argument("--memory", type=int, required=True, help="number of agents")
    parser.add_argument("--kind", choices=["ours", "raw"], required=True)
    args = parser.parse_args(argv)
    per = asyncio.run(_memory_probe(args.memory, args.kind))
    print(json.dumps({"bytes_per_agent": per if math.isfinite(per) else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
