"""Peers: our runtime against Ray actors and AutoGen core on the same workloads, same run.

Each side runs as a fresh subprocess (ours with the project's interpreter, peers in the
``.bench-peers/`` virtualenv made by :mod:`bench.peers._env`), one after the other so they do
not compete for the two cores. The baseline of every ``peers: …`` row is the peer; the
``vs floor`` rows compare the same figures of ours with raw asyncio measured in this run.

Smoke runs (``quick=True``) use a peer only when it is already installed; a full run installs
missing peers first. A peer that cannot be installed or run gives ``unavailable`` rows with
the reason.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bench._harness import Row, Stats
from bench.bench_baselines import queue_call_latency, queue_throughput
from bench.peers._env import HERE as PEERS_DIR
from bench.peers._env import PEERS, ROOT, ensure, venv_python

Figures = dict[str, Any]

#: (peer figure, our figure, row name, unit, better)
RAY_ROWS = [
    ("creation_rate", "creation_rate", "actor/agent creation rate", "/s", "higher"),
    ("call_latency", "call_latency", "1:1 call latency", "s", "lower"),
    (
        "call_throughput",
        "call_throughput",
        "1:1 calls/s (batch of concurrent calls)",
        "/s",
        "higher",
    ),
    ("idle_memory", "idle_memory", "memory per idle actor/agent", "B", "lower"),
]
AUTOGEN_ROWS = [
    ("send_latency", "call_latency", "send latency (request/response)", "s", "lower"),
    ("send_throughput", "call_throughput", "send throughput (concurrent sends)", "/s", "higher"),
    ("publish_latency", "publish_latency", "publish latency (until handled)", "s", "lower"),
    ("publish_throughput", "publish_throughput", "publish throughput", "/s", "higher"),
]


async def _run_json(args: list[str], limit: float) -> tuple[Figures | None, str]:
    """Run a workload process; its last stdout line is JSON. Returns (result, error)."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, f"workload exceeded {limit:.0f}s"
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        return None, f"workload exited {proc.returncode}: {tail[0][:300]}"
    try:
        data = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None, f"workload printed no JSON result: {lines[-1][:200]}"
    return data, ""


def _stats(fig: Figures, key: str) -> Stats:
    return Stats.of([float(x) for x in fig["figures"][key]["samples"]])


def _unit(unit: str, fig: Figures, key: str) -> str:
    return str(fig["figures"][key]["unit"]) if unit == "/s" else unit


def _rows(
    group: str,
    table: list[tuple[str, str, str, str, str]],
    ours: Figures | None,
    ours_err: str,
    peer: Figures | None,
    peer_err: str,
) -> list[Row]:
    rows: list[Row] = []
    for peer_key, our_key, name, unit, better in table:
        b: Any = better
        if ours is None or peer is None:
            reason = f"ours: {ours_err}" if ours is None else f"{group[7:]}: {peer_err}"
            rows.append(Row.unavailable(group, name, unit.replace("/s", "ops/s"), reason, better=b))
            continue
        shown = _unit(unit, ours, our_key)
        peer_shown = _unit(unit, peer, peer_key)
        note = "" if shown == peer_shown else f"ours in {shown}, peer in {peer_shown}"
        rows.append(
            Row.from_stats(
                group,
                name,
                shown,
                _stats(ours, our_key),
                f"{peer['peer']} {peer['version']}",
                _stats(peer, peer_key),
                better=b,
                target="ahead of the peer",
                note=note,
            )
        )
    return rows


async def ours_clustered(quick: bool) -> Figures:
    """Ray's workload on our cluster: agents in 2 node processes, called from a driver node.

    A Ray actor is a process of its own, so its cross-process figures are compared with ours
    across processes too: a ``nats-server``, two ``foundation node`` processes and a driver
    node in this process that hosts nothing.
    """
    import foundation
    from bench._harness import nats_server, sample_async_latency, throughput_rounds
    from bench._seed_agents import NOOP
    from bench._seed_cluster_app import SeedClustered
    from bench.bench_seed_table import node_processes, wait_nodes, warm_up

    create_n = 10 if quick else 200
    lat_n = 200 if quick else 3_000
    tp_ops, tp_rounds = (500, 2) if quick else (2_000, 5)
    node_cls: Any = foundation.Node
    async with (
        nats_server() as url,
        node_processes(url, 2, "peer-n") as nodes,
        node_cls(nats=url, name="peer-driver", agents=[SeedClustered], call_timeout=60) as driver,
    ):
        await wait_nodes(driver, nodes, 30 if quick else 60)
        await warm_up(driver, nodes, 30 if quick else 60)
        names = nodes.names
        counter = iter(range(10**9))

        async def create(k: int) -> None:
            for _ in range(k):
                i = next(counter)
                ref = await driver.spawn(SeedClustered, id=f"p{i}", node=names[i % 2])
                await ref.call(NOOP)

        rates = await throughput_rounds(create, ops=create_n, rounds=3, warmup=0)
        ref = driver.ref("p0")
        lat = await sample_async_latency(lambda: ref.call(NOOP), n=lat_n, warmup=50)

        async def batch(k: int) -> None:
            await asyncio.gather(*(ref.call(NOOP) for _ in range(k)))

        tps = await throughput_rounds(batch, ops=tp_ops, rounds=tp_rounds)
    return {
        "peer": "ours (cluster)",
        "version": "foundation",
        "figures": {
            "creation_rate": {"unit": "agents/s", "samples": rates},
            "call_latency": {"unit": "s", "samples": lat},
            "call_throughput": {"unit": "calls/s", "samples": tps},
        },
    }


async def _floor_rows(ours: Figures | None, quick: bool) -> list[Row]:
    if ours is None:
        return []
    n = 2_000 if quick else 20_000
    ops, rounds = (1_000, 2) if quick else (20_000, 10)
    return [
        Row.from_stats(
            "vs floor",
            "1:1 call latency vs raw asyncio",
            "s",
            _stats(ours, "call_latency"),
            "asyncio.Queue call round trip",
            Stats.of(await queue_call_latency(n)),
            note="ours measured in its own process, the floor in the suite's",
        ),
        Row.from_stats(
            "vs floor",
            "fire-and-forget throughput vs raw asyncio",
            "msg/s",
            _stats(ours, "publish_throughput"),
            "asyncio.Queue throughput",
            Stats.of(await queue_throughput(ops, rounds)),
            better="higher",
            note="cast until handled vs put_nowait to a draining task",
        ),
    ]


async def run(quick: bool) -> list[Row]:
    """Ours vs each peer (and ours vs the raw floor) on the same workloads."""
    flag = ["--quick"] if quick else []
    timeout = 300.0 if quick else 1800.0
    ours, ours_err = await _run_json(
        [sys.executable, "-m", "bench.peers.ours_workload", *flag], timeout
    )
    rows: list[Row] = []
    ray_data: Figures | None = None
    ray_reason = ""
    for key, table in (("ray", RAY_ROWS), ("autogen", AUTOGEN_ROWS)):
        peer = PEERS[key]
        group = f"peers: {key}"
        reason = await asyncio.to_thread(ensure, peer, allow_install=not quick)
        data: Figures | None = None
        if reason is None:
            script = Path(PEERS_DIR) / peer.script
            data, reason = await _run_json([str(venv_python()), str(script), *flag], timeout)
        rows += _rows(group, table, ours, ours_err, data, reason or "")
        if key == "ray":
            ray_data, ray_reason = data, reason or ""
    rows += await _cluster_rows(quick, ray_data, ray_reason)
    rows += await _floor_rows(ours, quick)
    return rows


async def _cluster_rows(quick: bool, ray: Figures | None, ray_reason: str) -> list[Row]:
    """Ours across processes (the cluster) vs Ray actors, which are processes."""
    from bench.bench_seed_table import cluster_unavailable_reason

    group = "peers: ray (cross-process)"
    reason = cluster_unavailable_reason()
    clustered: Figures | None = None
    if reason is None:
        try:
            clustered = await ours_clustered(quick)
        except Exception as exc:  # the cluster is young: say why, keep the other rows
            reason = f"cluster run failed: {type(exc).__name__}: {exc}"[:300]
    return _rows(group, RAY_ROWS[:3], clustered, reason or "", ray, ray_reason)
