"""``foundation demo``: the main job, as a sequence of acts.

The demo starts an embedded NATS and three local node processes (``foundation node ...``),
deploys the sample order-processing app (:mod:`foundation.demo_app`), drives load with a live
progress display, checks every acknowledged order was applied, and prints a summary (agents per
node, signals/s, p50/p99 latency).

It is built from :class:`Act` objects run in order against one :class:`DemoContext`; an act is a
name, a title and ``async run(ctx)``. Add one by inserting it into :data:`DEMO_ACTS` (or pass
``acts=`` to :func:`run_demo`) — e.g. a failover act after ``load`` that kills a node and waits
for its agents to come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from foundation.cli.cluster import Act, DemoContext, DemoOptions, LocalCluster
from foundation.cli.demo_failover import FailoverAct
from jido import JidoError, Signal


class StartClusterAct:
    """Start an embedded NATS (TLS, one identity per role) and the node processes, then
    connect the demo's driver node."""

    name = "cluster"
    title = "Start NATS and the nodes"

    async def run(self, ctx: DemoContext) -> None:
        """Bring the cluster up."""
        from foundation._node import Node

        t0 = time.perf_counter()
        with ctx.console.status(f"starting embedded NATS and {ctx.options.nodes} nodes..."):
            ctx.cluster = LocalCluster(nodes=ctx.options.nodes, secure=True)
            await ctx.cluster.start()
            auth = ctx.cluster.auth
            ctx.node = Node(nats=ctx.cluster.url, name="demo-driver", agents=[], auth=auth)
            await ctx.node.start()
            await ctx.node.membership.wait_members(ctx.cluster.names)
        nodes = ", ".join(f"{n} (pid {p})" for n, p in ctx.cluster.pids().items())
        ctx.console.print(
            f"  NATS at [cyan]{ctx.cluster.url}[/cyan]; nodes {nodes} up in "
            f"{time.perf_counter() - t0:.1f}s",
            highlight=False,
            soft_wrap=True,
        )
        from foundation.observability.dashboard import Dashboard

        ctx.dashboard = Dashboard(ctx.node, latencies=ctx.latencies, errors=ctx.errors)
        await ctx.dashboard.start()
        ctx.console.print(f"  live dashboard: [cyan]{ctx.dashboard.url}[/cyan]", soft_wrap=True)


class DeployAct:
    """Spawn the app's agents across the cluster (placement decides where)."""

    name = "deploy"
    title = "Deploy the order-processing app"

    async def run(self, ctx: DemoContext) -> None:
        """Spawn desks, the inventory and notifiers; restock; start the notifiers' sensors."""
        from foundation.demo_app import ClusteredInventory, ClusteredNotifier, ClusteredOrderDesk

        node = ctx.node
        t0 = time.perf_counter()
        ctx.desks = [f"desk-{i}" for i in range(ctx.options.orders)]
        ctx.notifiers = [f"notifier-{i}" for i in range(ctx.options.notifiers)]
        for agent_id in ctx.desks:
            await node.spawn(ClusteredOrderDesk, id=agent_id)
        inv = await node.spawn(ClusteredInventory, id=ctx.inventory)
        for agent_id in ctx.notifiers:
            ref = await node.spawn(ClusteredNotifier, id=agent_id)
            await ref.call(_sig("notifier.start", {"interval": 0.5}))
        await inv.call(_sig("inventory.restock", {"sku": "widget", "qty": 1_000_000}))
        spent = time.perf_counter() - t0
        count = len(ctx.desks) + len(ctx.notifiers) + 1
        ctx.console.print(f"  {count} agents spawned in {spent * 1000:.0f} ms")
        ctx.console.print(_placement_table(ctx))


class LoadAct:
    """Drive orders at the desks from concurrent callers, with a live progress bar."""

    name = "load"
    title = "Drive load"

    async def run(self, ctx: DemoContext) -> None:
        """Call ``order.place`` on random desks; cast notifications and reserve stock."""
        node = ctx.node
        duration = ctx.options.duration
        desks = [node.ref(d) for d in ctx.desks]
        notifiers = [node.ref(n) for n in ctx.notifiers]
        inventory = node.ref(ctx.inventory)
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        ctx.acked = dict.fromkeys(ctx.desks, 0)
        rng = random.Random(7)

        async def worker(w: int) -> None:
            n = 0
            while loop.time() < end:
                n += 1
                i = rng.randrange(len(desks))
                ref = desks[i]
                t0 = time.perf_counter()
                try:
                    await ref.call(
                        _sig("order.place", {"order_id": f"o-{w}-{n}", "amount": 100 + n % 50}),
                        timeout=5.0,
                    )
                except JidoError as exc:
                    ctx.errors[exc.type] = ctx.errors.get(exc.type, 0) + 1
                    continue
                ctx.latencies.append(time.perf_counter() - t0)
                ctx.acked[ref.id] += 1
                if n % 10 == 0:
                    with contextlib.suppress(JidoError):
                        await inventory.call(_sig("inventory.reserve", {"sku": "widget", "qty": 1}))
                if n % 5 == 0 and notifiers:
                    with contextlib.suppress(JidoError):
                        await notifiers[n % len(notifiers)].cast(
                            _sig("notify.send", {"order_id": f"o-{w}-{n}"})
                        )
                        ctx.casts += 1

        progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]:>7} orders  {task.fields[rate]:>7} /s"),
            TimeElapsedColumn(),
            console=ctx.console,
            transient=False,
        )
        t_start = time.perf_counter()
        with progress:
            task = progress.add_task("orders", total=duration, done=0, rate="0")
            workers = [asyncio.create_task(worker(w)) for w in range(ctx.options.concurrency)]
            while not all(t.done() for t in workers):
                await asyncio.wait(workers, timeout=0.2)
                elapsed = time.perf_counter() - t_start
                done = len(ctx.latencies)
                progress.update(
                    task,
                    completed=min(elapsed, duration),
                    done=done,
                    rate=f"{done / elapsed:,.0f}" if elapsed else "0",
                )
            for t in workers:
                t.result()
        ctx.load_seconds = time.perf_counter() - t_start


class VerifyAct:
    """Check that every acknowledged order was applied exactly once (desk states vs acks)."""

    name = "verify"
    title = "Verify state"

    async def run(self, ctx: DemoContext) -> None:
        """Read each desk's state and compare its order count with the acknowledged calls."""
        mismatched = []
        total = 0
        for agent_id in ctx.desks:
            state = await ctx.node.ref(agent_id).state()
            total += int(state.orders)
            if int(state.orders) != ctx.acked.get(agent_id, 0):
                mismatched.append((agent_id, int(state.orders), ctx.acked.get(agent_id, 0)))
        ctx.results["applied"] = total
        ctx.results["mismatched"] = mismatched
        if mismatched:
            ctx.console.print(f"  [red]{len(mismatched)} desks disagree with the acks[/red]")
        else:
            ctx.console.print(f"  [green]all {total} acknowledged orders applied once[/green]")


class SummaryAct:
    """Print the summary table."""

    name = "summary"
    title = "Summary"

    async def run(self, ctx: DemoContext) -> None:
        """Agents per node, signals/s, p50/p99 latency, errors."""
        lat = sorted(ctx.latencies)
        p50 = lat[len(lat) // 2] if lat else 0.0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        rate = len(lat) / ctx.load_seconds if ctx.load_seconds else 0.0
        ctx.results.update(
            calls=len(lat), calls_per_s=rate, p50=p50, p99=p99, casts=ctx.casts, errors=ctx.errors
        )
        table = Table(title="foundation demo — summary")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row("nodes", str(len(ctx.cluster.names) if ctx.cluster else 0))
        table.add_row("agents", str(len(ctx.desks) + len(ctx.notifiers) + 1))
        table.add_row("orders acknowledged", f"{len(lat):,}")
        table.add_row("orders applied", f"{ctx.results.get('applied', 0):,}")
        table.add_row("notifications cast", f"{ctx.casts:,}")
        table.add_row("signals/s (calls)", f"{rate:,.0f}")
        table.add_row("call latency p50", f"{p50 * 1000:.2f} ms")
        table.add_row("call latency p99", f"{p99 * 1000:.2f} ms")
        table.add_row("errors", ", ".join(f"{k}={v}" for k, v in ctx.errors.items()) or "none")
        ctx.console.print(_placement_table(ctx))
        ctx.console.print(table)


DEMO_ACTS: list[Act] = [
    StartClusterAct(),
    DeployAct(),
    LoadAct(),
    VerifyAct(),
    FailoverAct(),
    SummaryAct(),
]
"""The acts of ``foundation demo``, in order. Insert new acts (e.g. failover) where they fit."""


def insert_act(act: Act, *, after: str) -> None:
    """Insert ``act`` into :data:`DEMO_ACTS` right after the act named ``after``."""
    names = [a.name for a in DEMO_ACTS]
    DEMO_ACTS.insert(names.index(after) + 1, act)


def _sig(type_: str, data: dict[str, Any]) -> Signal:
    return Signal(type=type_, source="/foundation/demo", data=data)


def _placement_table(ctx: DemoContext) -> Table:
    node = ctx.node
    table = Table(title="agents per node")
    table.add_column("node")
    table.add_column("order desks", justify="right")
    table.add_column("inventory", justify="right")
    table.add_column("notifiers", justify="right")
    counts: dict[str, list[int]] = {
        n: [0, 0, 0] for n in (ctx.cluster.names if ctx.cluster else [])
    }
    for record in node.registry.records():
        row = counts.setdefault(record.node, [0, 0, 0])
        if record.agent_id.startswith("desk-"):
            row[0] += 1
        elif record.agent_id == ctx.inventory:
            row[1] += 1
        else:
            row[2] += 1
    for name, (d, i, n) in sorted(counts.items()):
        table.add_row(name, str(d), str(i), str(n))
    return table


async def run_demo(
    options: DemoOptions | None = None,
    *,
    console: Console | None = None,
    acts: Sequence[Act] | None = None,
) -> int:
    """Run the demo's acts in order; always stop every process. Returns an exit code."""
    ctx = DemoContext(options=options or DemoOptions(), console=console or Console())
    out = ctx.console
    out.rule("[bold]foundation demo[/bold]")
    code = 0
    try:
        for i, act in enumerate(acts if acts is not None else DEMO_ACTS, 1):
            out.print(f"[bold cyan]{i}. {act.title}[/bold cyan]")
            await act.run(ctx)
        if ctx.results.get("mismatched"):
            code = 1
    finally:
        with out.status("stopping nodes and NATS..."):
            if ctx.dashboard is not None:
                await ctx.dashboard.stop()
            if ctx.node is not None:
                with contextlib.suppress(Exception):
                    await ctx.node.stop()
            if ctx.cluster is not None:
                await ctx.cluster.stop()
    out.print("[green]demo finished; every process stopped[/green]")
    return code


__all__ = [
    "DEMO_ACTS",
    "Act",
    "DemoContext",
    "DemoOptions",
    "insert_act",
    "run_demo",
]
