"""Cluster core: cross-node call and cast, clustered spawn, and the cost of clustering an agent.

One embedded ``nats-server`` on loopback. The agents of the cross-node figures run in a
separate process (``foundation node --name host``), the caller in this one (node ``driver``):
a node pair as deployed. Their raw baselines use the same layout: a separate nats-py process
answers, this process asks.

Figures (each with its same-run baseline):

* cross-node ``call`` p50 — ``driver`` calls an agent on ``host`` through a ``ClusterRef``
  (encode, one request/reply over NATS, dispatch by agent id, the agent's action, reply);
  baseline: raw nats-py ``request`` to a process that answers with a fixed payload.
  Also with a KV checkpoint per command (what durable agents pay), against the same baseline.
* cross-node ``cast`` throughput — ``driver`` casts to an agent on ``host`` until the agent has
  applied them all; baseline: raw nats-py ``publish`` to a process that counts the messages.
* clustered spawn p50 — place + claim (KV create) + start on ``host`` by a direct request;
  baseline: a raw KV create plus a raw request/reply (the floor of those two steps).
* local calls (node ``local``, in this process): a ``ClusterRef`` to a clustered agent on the
  same node vs the ``jido.AgentRef`` of that same agent (the cost of location transparency).
* a 100 ms action: a clustered agent checkpointing to KV vs the same agent class unclustered
  on a plain ``jido.Runtime``.

The benchmark agent checkpoints ``on_stop`` so the transport is measured, not the KV write;
``DurableBench`` checkpoints every command.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench._harness import Row, Stats, sample_async_latency, throughput_rounds
from foundation._node import Node
from foundation.hosting.clustered import Clustered
from foundation.nats.kv import KV, BucketSpec
from foundation.testing import LocalCluster, NatsServer
from jido import Action, ActionContext, Agent, Runtime, Signal

GROUP = "cluster"
ROOT = Path(__file__).resolve().parents[1]


class BenchState(BaseModel):
    """Counter state."""

    count: int = 0


class Bump(Action):
    """Count one."""

    name = "bump"

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        """Increment."""
        return {"count": ctx.state.count + 1}


class Nap(Action):
    """Sleep 100 ms, then count one."""

    name = "nap"

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        """Sleep and increment."""
        await asyncio.sleep(0.1)
        return {"count": ctx.state.count + 1}


class BenchAgent(Agent):
    """A counter that checkpoints only when it stops."""

    state_model = BenchState
    actions = [Bump, Nap]
    routes = [("bench.bump", Bump), ("bench.nap", Nap)]
    checkpoint = "on_stop"


class ClusteredBench(Clustered, BenchAgent, placement="least_loaded"):
    """The clustered benchmark agent."""


class DurableBench(Clustered, BenchAgent, placement="least_loaded"):
    """The clustered benchmark agent checkpointing every command to the KV bucket."""

    checkpoint = "every"


AGENTS: list[type[Agent]] = [ClusteredBench, DurableBench]

BUMP = Signal(type="bench.bump", source="/bench", data={})

_PEER = r"""
import asyncio, sys
import nats

async def main():
    nc = await nats.connect(sys.argv[1])
    count = 0
    reply = b'{"ok":{"count":1}}'

    async def on_msg(msg):
        nonlocal count
        kind = msg.subject[4:]
        if kind == "echo":
            await nc.publish(msg.reply, reply)
        elif kind == "cast":
            count += 1
        elif kind == "sync":
            await nc.publish(msg.reply, str(count).encode())
            count = 0
        elif kind == "start":
            await nc.publish(msg.reply, b'{"ok":{}}')

    await nc.subscribe("raw.>", cb=on_msg, pending_msgs_limit=-1)
    await nc.flush()
    print("peer ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def _spawn_process(*args: str, ready: str) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    lines: list[bytes] = []
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError(
                f"{args[:2]} exited: {b''.join(lines[-20:]).decode(errors='replace')}"
            )
        lines.append(line)
        if ready.encode() in line:
            return proc


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass


async def run(quick: bool) -> list[Row]:
    """Measure the cluster-core figures (``quick``: a few seconds for CI)."""
    import nats

    n_call = 300 if quick else 3000
    n_spawn = 30 if quick else 300
    cast_ops = 2000 if quick else 20000
    rounds = 2 if quick else 5
    n_nap = 5 if quick else 30
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js")
        await server.astart()
        peer: asyncio.subprocess.Process | None = None
        drain: asyncio.Task[None] | None = None
        try:
            async with LocalCluster(
                nats=server,
                nodes=["host"],
                app="bench.bench_cluster:AGENTS",
                pythonpath=[ROOT],
                cwd=ROOT,
            ):
                peer = await _spawn_process("-c", _PEER, server.url, ready="peer ready")
                drain = asyncio.create_task(_drain(peer))
                raw = await nats.connect(server.url)
                driver = Node(nats=server.url, name="driver", agents=[])
                local = Node(nats=server.url, name="local", agents=AGENTS, capabilities=["local"])
                try:
                    async with driver, local:
                        await driver.membership.wait_members(["host", "local"])
                        rows += await _calls(raw, driver, n_call)
                        rows += await _casts(raw, driver, cast_ops, rounds)
                        rows += await _spawns(raw, driver, n_spawn)
                        rows += await _local(local, n_call)
                        rows += await _nap(local, n_nap)
                finally:
                    await raw.close()
        finally:
            if peer is not None:
                if peer.returncode is None:
                    peer.kill()
                await peer.wait()
            if drain is not None:
                drain.cancel()
                await asyncio.gather(drain, return_exceptions=True)
            await server.astop()
    return rows


async def _calls(raw: Any, driver: Node, n: int) -> list[Row]:
    ref = await driver.spawn(ClusteredBench, id="call-target", node="host")
    payload = b"x" * len(BUMP.to_bytes())
    ours = await sample_async_latency(lambda: ref.call(BUMP), n=n, warmup=200)
    base = await sample_async_latency(
        lambda: raw.request("raw.echo", payload, timeout=5), n=n, warmup=200
    )
    durable = await driver.spawn(DurableBench, id="durable-target", node="host")
    ours_durable = await sample_async_latency(lambda: durable.call(BUMP), n=n // 3, warmup=50)
    return [
        Row.from_stats(
            GROUP,
            "cross-node call p50 (2 processes)",
            "s",
            Stats.of(ours),
            "raw nats-py request/reply (2 processes)",
            Stats.of(base),
            target="≤ 1.3× and < 1 ms",
        ),
        Row.from_stats(
            GROUP,
            "cross-node call p50, KV checkpoint per command",
            "s",
            Stats.of(ours_durable),
            "raw nats-py request/reply (2 processes)",
            Stats.of(base),
            note="includes one KV compare-and-set write per call (what durable agents pay)",
        ),
    ]


async def _casts(raw: Any, driver: Node, ops: int, rounds: int) -> list[Row]:
    ref = await driver.spawn(ClusteredBench, id="cast-target", node="host")

    async def batch(k: int) -> None:
        for _ in range(k):
            await ref.cast(BUMP)
        await ref.call(BUMP, timeout=60)  # ordered after the casts: all applied

    ours = await throughput_rounds(batch, ops=ops, rounds=rounds)
    payload = b"x" * len(BUMP.to_bytes())

    async def raw_batch(k: int) -> None:
        for i in range(k):
            await raw.publish("raw.cast", payload)
            if not i & 0xFF:
                await asyncio.sleep(0)
        msg = await raw.request("raw.sync", b"", timeout=60)
        if int(msg.data) != k:
            raise RuntimeError(f"raw peer counted {msg.data!r} of {k}")

    base = await throughput_rounds(raw_batch, ops=ops, rounds=rounds)
    return [
        Row.from_stats(
            GROUP,
            "cross-node cast throughput, applied by the agent (2 processes)",
            "signals/s",
            Stats.of(ours),
            "raw nats-py publish, counted by a subscriber (2 processes)",
            Stats.of(base),
            better="higher",
            target="≥ 50k/s per node pair",
        )
    ]


async def _spawns(raw: Any, driver: Node, n: int) -> list[Row]:
    counter = 0

    async def one() -> None:
        nonlocal counter
        counter += 1
        await driver.spawn(ClusteredBench, id=f"sp-{counter}", node="host")

    ours = await sample_async_latency(one, n=n, warmup=20)
    kv = await KV.open(driver.nc, BucketSpec("bench_floor"))
    floor = 0

    async def raw_one() -> None:
        nonlocal floor
        floor += 1
        await kv.create(f"k{floor}", b'{"node":"host","epoch":1}')
        await raw.request("raw.start", b'{"a":"x"}', timeout=5)

    base = await sample_async_latency(raw_one, n=n, warmup=20)
    return [
        Row.from_stats(
            GROUP,
            "clustered spawn p50 (place + claim + remote start)",
            "s",
            Stats.of(ours),
            "raw KV create + request/reply",
            Stats.of(base),
            target="≤ 3 ms",
        )
    ]


async def _local(node: Node, n: int) -> list[Row]:
    ref = await node.spawn(ClusteredBench, id="local-target", node=node.id)
    direct = node.runtime.get("local-target")
    assert direct is not None
    ours = await sample_async_latency(lambda: ref.call(BUMP), n=n, warmup=200)
    base = await sample_async_latency(lambda: direct.call(BUMP), n=n, warmup=200)
    return [
        Row.from_stats(
            GROUP,
            "local call via ClusterRef",
            "s",
            Stats.of(ours),
            "jido AgentRef.call of the same agent",
            Stats.of(base),
            target="≤ 1.05×",
        )
    ]


async def _nap(node: Node, n: int) -> list[Row]:
    nap = Signal(type="bench.nap", source="/bench", data={})
    ref = await node.spawn(DurableBench, id="nap-target", node=node.id)
    ours = await sample_async_latency(lambda: ref.call(nap), n=n, warmup=2)
    async with Runtime() as rt:
        plain = await rt.start(BenchAgent, id="nap-plain")
        base = await sample_async_latency(lambda: plain.call(nap), n=n, warmup=2)
    return [
        Row.from_stats(
            GROUP,
            "100 ms action, clustered (KV checkpoint)",
            "s",
            Stats.of(ours),
            "same agent unclustered (plain Runtime)",
            Stats.of(base),
            target="≤ 1.01×",
        )
    ]
