"""The seed's performance table, single node (``jido``) vs cluster (``foundation``).

| metric | seed single | seed clustered | seed overhead |
| agent startup | 50 ms | 75 ms | 50 % |
| signal routing | 1 ms | 5 ms | 400 % |
| action execution (100 ms action) | 100 ms | 105 ms | 5 % |
| state persistence | 10 ms | 15 ms | 50 % |

What each figure measures here (median and p99 over repeated rounds):

* **agent startup** — start an agent and get the answer to its first call (ready to serve);
  single: ``Runtime.start`` + ``call``; clustered: ``Node.spawn`` (placement, registry claim,
  remote start) + ``call`` from a node that hosts nothing, so the agent is always remote;
* **signal routing** — a call routed to a no-op action and answered;
* **action execution** — a call of a 100 ms action (overhead = ours / the same-run
  ``asyncio.sleep(0.1)`` − 1; target ≤ 1 %);
* **state persistence** — a state-changing call answered only once its checkpoint is durable:
  single with :class:`jido.SQLiteStore` (checkpoint per command), clustered with the agent's
  state committed to the cluster's store (a critical agent).

Baselines, same run: single — one raw asyncio task started and answering one queue round trip,
the raw asyncio queue call, ``asyncio.sleep(0.1)``, a raw ``sqlite3`` upsert + commit of the
same bytes; clustered — raw nats-py request/reply, ``sleep(0.1)`` + one request/reply, and a
raw JetStream KV ``put``. The cluster is a ``nats-server`` and 3 ``foundation node``
processes on this machine, driven from a 4th node in the benchmark process that hosts no agent.
While ``foundation.Node`` does not exist, the clustered rows say "not yet available".

Targets (issue 7): every clustered figure better than the seed's single-node figure, and the
action execution overhead ≤ 1 %.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench._harness import Row, Stats, nats_server, sample_async_latency
from bench.bench_baselines import nats_request_latency, queue_call_latency
from foundation.testing import LocalCluster

GROUP = "seed table"
ROOT = Path(__file__).resolve().parents[1]

#: metric → (seed single, seed clustered) in seconds
SEED: dict[str, tuple[float, float]] = {
    "agent startup": (0.050, 0.075),
    "signal routing": (0.001, 0.005),
    "action execution (100 ms action)": (0.100, 0.105),
    "state persistence": (0.010, 0.015),
}
ACTION = "action execution (100 ms action)"
NODES = 3


def _row(metric: str, mode: str, ours: Stats, base_name: str, base: Stats) -> Row:
    seed_single, seed_clustered = SEED[metric]
    if metric == ACTION:
        target = "overhead ≤ 1 %"
        met = ours.median <= base.median * 1.01
    else:
        target = f"< seed single ({seed_single * 1e3:.0f} ms)"
        met = ours.median < seed_single
    return Row.from_stats(
        GROUP,
        f"{metric} · {mode}",
        "s",
        ours,
        base_name,
        base,
        target=target,
        extra={
            "metric": metric,
            "mode": mode,
            "seed_single": seed_single,
            "seed_clustered": seed_clustered,
            "target_met": met,
            "overhead_vs_baseline": ours.median / base.median - 1.0,
        },
    )


# --------------------------------------------------------------------------- baselines


async def raw_task_startup(n: int) -> list[float]:
    """Start one asyncio task serving a queue and get one answer from it; seconds each."""
    loop = asyncio.get_running_loop()
    out: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            queue: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

            async def serve(q: asyncio.Queue[asyncio.Future[None]] = queue) -> None:
                while True:
                    (await q.get()).set_result(None)

            tasks.append(asyncio.create_task(serve()))
            fut: asyncio.Future[None] = loop.create_future()
            queue.put_nowait(fut)
            await fut
            out.append(time.perf_counter() - t0)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return out


async def sleep_100ms(n: int) -> list[float]:
    """``asyncio.sleep(0.1)`` on its own; seconds each."""
    return await sample_async_latency(lambda: asyncio.sleep(0.1), n=n, warmup=1)


def raw_sqlite_upsert(path: Path, n: int) -> list[float]:
    """A raw ``sqlite3`` upsert + commit of a small JSON state (WAL); seconds each."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v BLOB)")
        out: list[float] = []
        for i in range(n + 20):
            blob = json.dumps({"n": i, "note": "x" * 64}).encode()
            t0 = time.perf_counter()
            con.execute(
                "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                ("a", blob),
            )
            con.commit()
            if i >= 20:
                out.append(time.perf_counter() - t0)
        return out
    finally:
        con.close()


# --------------------------------------------------------------------------- single node


async def single_node(quick: bool) -> list[Row]:
    """The single-node half on ``jido.Runtime``."""
    from bench._seed_agents import BUMP, NOOP, WORK, SeedAgent
    from jido import Runtime, SQLiteStore

    n_start = 200 if quick else 5_000
    n_route = 1_000 if quick else 20_000
    n_action = 5 if quick else 40
    n_persist = 200 if quick else 5_000
    rows: list[Row] = []
    async with Runtime() as rt:
        counter = iter(range(10**9))

        async def start_one() -> None:
            ref = await rt.start(SeedAgent, id=f"s{next(counter)}")
            await ref.call(NOOP)

        startup = await sample_async_latency(start_one, n=n_start, warmup=50)
        rows.append(
            _row(
                "agent startup",
                "single",
                Stats.of(startup),
                "raw asyncio task start + 1 round trip",
                Stats.of(await raw_task_startup(n_start)),
            )
        )
        ref = await rt.start(SeedAgent, id="router")
        routing = await sample_async_latency(lambda: ref.call(NOOP), n=n_route, warmup=200)
        rows.append(
            _row(
                "signal routing",
                "single",
                Stats.of(routing),
                "asyncio.Queue call round trip",
                Stats.of(await queue_call_latency(n_route)),
            )
        )
        work = await sample_async_latency(lambda: ref.call(WORK), n=n_action, warmup=1)
        rows.append(
            _row(
                ACTION,
                "single",
                Stats.of(work),
                "asyncio.sleep(0.1)",
                Stats.of(await sleep_100ms(n_action)),
            )
        )
    with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp:
        store = SQLiteStore(Path(tmp) / "state.db")
        async with Runtime(store=store, checkpoint="every") as rt:
            ref = await rt.start(SeedAgent, id="persist")
            persist = await sample_async_latency(lambda: ref.call(BUMP), n=n_persist, warmup=50)
        await store.close()
        raw = await asyncio.to_thread(raw_sqlite_upsert, Path(tmp) / "raw.db", n_persist)
    rows.append(
        _row(
            "state persistence",
            "single",
            Stats.of(persist),
            "raw sqlite3 upsert + commit",
            Stats.of(raw),
        )
    )
    return rows


# --------------------------------------------------------------------------- cluster


def cluster_unavailable_reason() -> str | None:
    """Why the clustered half cannot run yet, or None when ``foundation.Node`` exists."""
    try:
        import foundation
    except ImportError as exc:  # pragma: no cover - the package is part of this project
        return f"foundation not importable: {exc}"
    missing = [n for n in ("Node", "Clustered") if not hasattr(foundation, n)]
    if missing:
        return f"not yet available: foundation.{'/'.join(missing)} not built yet"
    return None


def _failure(nodes: LocalCluster) -> str:
    """The last output line of the first node process that exited, or of the first one."""
    for node in nodes.nodes.values():
        if not node.alive:
            return f"node process exited {node.returncode}: {node.log_tail(1)[:200]}"
    first = next(iter(nodes.nodes.values()), None)
    return (first.log_tail(1)[:200] or "(no output)") if first is not None else ""


@contextlib.asynccontextmanager
async def node_processes(url: str, n: int, prefix: str) -> AsyncIterator[LocalCluster]:
    """``n`` ``foundation node`` processes joined to ``url`` (each ready), killed on exit.

    Killed, not SIGTERM: that makes a node drain, handing its agents over to the others, which
    are being stopped too. The cluster is thrown away with its NATS server right after, so
    there is nothing to hand over or keep.
    """
    async with LocalCluster(
        nats=url,
        nodes=[f"{prefix}{i}" for i in range(n)],
        app="bench._seed_cluster_app:AGENTS",
        pythonpath=[ROOT],
        cwd=ROOT,
        ready_timeout=60.0,
    ) as nodes:
        yield nodes


async def wait_nodes(driver: Any, nodes: LocalCluster, limit: float = 60.0) -> None:
    """Wait until the driver sees every node process in the membership (they are joining)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not all(driver.membership.is_live(n) for n in nodes.names):
        missing = [n for n in nodes.names if not driver.membership.is_live(n)]
        if loop.time() > deadline or any(not node.alive for node in nodes.nodes.values()):
            raise RuntimeError(
                f"node processes {missing} did not join within {limit:.0f}s; {_failure(nodes)}"
            )
        await asyncio.sleep(0.1)  # membership has no "joined" event to await from outside


async def warm_up(driver: Any, nodes: LocalCluster, limit: float = 60.0) -> list[Any]:
    """Start one agent on each node process and wait until each answers; returns their refs.

    A node that has just joined may not confirm a start in time; the agent then stays
    registered and starts when that node reconciles, so the call is retried until ``limit``.
    """
    from bench._seed_agents import NOOP
    from bench._seed_cluster_app import SeedClustered

    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    refs = []
    for name in nodes.names:
        agent_id = f"warm-{name}"
        try:
            ref = await driver.spawn(SeedClustered, id=agent_id, node=name)
        except Exception:  # not confirmed in time: registered, it starts on reconciliation
            ref = driver.ref(agent_id)
        while True:
            try:
                await ref.call(NOOP)
                break
            except Exception as exc:
                if loop.time() > deadline:
                    raise RuntimeError(
                        f"agent on node process {name} did not answer within {limit:.0f}s: "
                        f"{type(exc).__name__}: {exc}; {_failure(nodes)}"
                    ) from exc
                await asyncio.sleep(0.1)  # waiting for the node's reconciliation to start it
        refs.append(ref)
    return refs


async def raw_kv_put_latency(url: str, n: int) -> list[float]:
    """Raw JetStream KV ``put`` of the same small state; seconds each."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="bench_seed_raw")
        blob = json.dumps({"n": 0, "note": "x" * 64}).encode()
        return await sample_async_latency(lambda: kv.put("a", blob), n=n, warmup=20)
    finally:
        await nc.drain()


async def clustered(quick: bool) -> list[Row]:
    """The clustered half: 3 node processes + NATS, driven from a node hosting nothing."""
    import foundation
    from bench._seed_agents import BUMP, NOOP, WORK
    from bench._seed_cluster_app import SeedClustered

    node_cls: Any = foundation.Node
    n_start = 20 if quick else 300
    n_route = 200 if quick else 5_000
    n_action = 5 if quick else 40
    n_persist = 100 if quick else 2_000
    rows: list[Row] = []
    async with (
        nats_server() as url,
        node_processes(url, NODES, "seed-n") as nodes,
        node_cls(nats=url, name="seed-driver", agents=[SeedClustered], call_timeout=60) as driver,
    ):
        await wait_nodes(driver, nodes, 30 if quick else 60)
        names = nodes.names
        await warm_up(driver, nodes, 30 if quick else 60)
        counter = iter(range(10**9))

        async def start_one() -> None:
            i = next(counter)
            ref = await driver.spawn(SeedClustered, id=f"s{i}", node=names[i % NODES])
            await ref.call(NOOP)

        startup = await sample_async_latency(start_one, n=n_start, warmup=3)
        floor = Stats.of(await nats_request_latency(url, n_route))
        rows.append(
            _row(
                "agent startup", "clustered", Stats.of(startup), "raw nats-py request/reply", floor
            )
        )
        ref = driver.ref(f"warm-{names[0]}")
        routing = await sample_async_latency(lambda: ref.call(NOOP), n=n_route, warmup=100)
        rows.append(
            _row(
                "signal routing", "clustered", Stats.of(routing), "raw nats-py request/reply", floor
            )
        )
        cross = Row.from_stats(
            "vs floor",
            "cross-node call vs raw nats-py",
            "s",
            Stats.of(routing),
            "raw nats-py request/reply",
            floor,
            target="≤ 1.3× raw request/reply",
            note="ref.call from a node hosting nothing to an agent on a node process",
        )
        cross.extra["target_met"] = cross.ratio <= 1.3
        rows.append(cross)
        work = await sample_async_latency(lambda: ref.call(WORK), n=n_action, warmup=1)
        sleep_base = [s + floor.median for s in await sleep_100ms(n_action)]
        rows.append(
            _row(
                ACTION,
                "clustered",
                Stats.of(work),
                "sleep(0.1) + raw request/reply",
                Stats.of(sleep_base),
            )
        )
        persist = await sample_async_latency(lambda: ref.call(BUMP), n=n_persist, warmup=20)
        rows.append(
            _row(
                "state persistence",
                "clustered",
                Stats.of(persist),
                "raw JetStream KV put",
                Stats.of(await raw_kv_put_latency(url, n_persist)),
            )
        )
    return rows


def _overhead_targets(rows: list[Row]) -> list[Row]:
    """Judge the clustered action row by its overhead over the single-node one (≤ 1 %)."""
    by_name = {r.name: r for r in rows}
    single = by_name.get(f"{ACTION} · single")
    clustered_ = by_name.get(f"{ACTION} · clustered")
    if single is not None and clustered_ is not None and single.ok and clustered_.ok:
        overhead = clustered_.ours / single.ours - 1.0
        clustered_.target = "overhead over single ≤ 1 %"
        clustered_.extra["overhead_vs_single"] = overhead
        clustered_.extra["target_met"] = overhead <= 0.01
    return rows


def _unavailable(reason: str) -> list[Row]:
    rows = []
    for metric, (single, clustered_) in SEED.items():
        rows.append(
            Row.unavailable(
                GROUP,
                f"{metric} · clustered",
                "s",
                reason,
                target="overhead ≤ 1 %"
                if metric == ACTION
                else f"< seed single ({single * 1e3:.0f} ms)",
                extra={
                    "metric": metric,
                    "mode": "clustered",
                    "seed_single": single,
                    "seed_clustered": clustered_,
                },
            )
        )
    return rows


async def run(quick: bool) -> list[Row]:
    """Single-node rows always; clustered rows once ``foundation.Node`` exists."""
    rows = await single_node(quick)
    reason = cluster_unavailable_reason()
    if reason is not None:
        return rows + _unavailable(reason)
    try:
        return _overhead_targets(rows + await clustered(quick))
    except Exception as exc:  # report why (an error row fails the run), keep the single-node half
        detail = f"cluster run failed: {type(exc).__name__}: {exc}"
        return rows + [dataclasses.replace(r, status="error") for r in _unavailable(detail[:300])]
