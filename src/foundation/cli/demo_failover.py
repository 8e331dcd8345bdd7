"""The failover act of ``foundation demo``: kill a node under load, watch its agents come back.

The act keeps orders flowing from concurrent callers, SIGKILLs the node process that owns the
most critical agents, and measures — from the demo's driver — the time until every critical
agent that lived there answers again from another node. It then shows where each one went,
checks that no acknowledged order was lost or applied twice across the failover (for each desk:
``orders before + acked <= orders after <= orders before + acked + unsure``, where *unsure* are
calls that failed, whose outcome the caller cannot know) and prints the measured failover time.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from rich.table import Table

from foundation.cli.cluster import DemoContext
from jido import JidoError, Signal


def _sig(type_: str, data: dict[str, Any]) -> Signal:
    return Signal(type=type_, source="/foundation/demo", data=data)


class FailoverAct:
    """Kill one of the nodes under load and show its agents coming back with their state."""

    name = "failover"
    title = "Failover: kill a node under load"

    def __init__(
        self,
        *,
        warmup: float = 1.0,
        after: float = 1.0,
        budget: float = 30.0,
        call_timeout: float = 5.0,
        probe_timeout: float = 0.5,
    ) -> None:
        self.warmup = warmup
        self.after = after
        self.budget = budget
        self.call_timeout = call_timeout
        self.probe_timeout = probe_timeout

    async def run(self, ctx: DemoContext) -> None:
        """Load, kill, measure, verify; results in ``ctx.results['failover']``."""
        cluster, node = ctx.cluster, ctx.node
        if cluster is None or node is None or len(cluster.names) < 2:
            ctx.console.print("  [yellow]needs at least two nodes; skipped[/yellow]")
            return
        records = [r for r in node.registry.records() if r.critical]
        by_node: dict[str, list[str]] = {}
        for r in records:
            by_node.setdefault(r.node, []).append(r.agent_id)
        victim = max(cluster.names, key=lambda n: (len(by_node.get(n, [])), n))
        doomed = sorted(by_node.get(victim, []))
        before = {d: int((await node.ref(d).state()).orders) for d in ctx.desks}
        acked = dict.fromkeys(ctx.desks, 0)
        unsure = dict.fromkeys(ctx.desks, 0)
        stop = asyncio.Event()
        rng = random.Random(11)

        async def worker(w: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                desk = ctx.desks[rng.randrange(len(ctx.desks))]
                try:
                    await node.ref(desk).call(
                        _sig("order.place", {"order_id": f"f-{w}-{n}", "amount": 100}),
                        timeout=self.call_timeout,
                    )
                except JidoError:
                    unsure[desk] += 1
                    continue
                acked[desk] += 1

        workers = [asyncio.create_task(worker(w)) for w in range(max(1, ctx.options.concurrency))]
        moved: dict[str, tuple[str, float]] = {}
        try:
            with ctx.console.status(f"orders flowing; killing node {victim} shortly..."):
                await asyncio.sleep(self.warmup)  # let load run before the fault (demo pacing)
            t0 = time.monotonic()
            cluster.kill(victim)
            ctx.console.print(
                f"  SIGKILL [bold red]{victim}[/bold red] (owned {len(doomed)} critical agents) "
                "while orders keep coming"
            )

            async def back(agent_id: str) -> None:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.budget
                while loop.time() < deadline:
                    try:
                        # short probes: one sent just as the node died is never answered
                        await node.ref(agent_id).state(
                            timeout=min(self.probe_timeout, deadline - loop.time())
                        )
                    except JidoError:
                        await asyncio.sleep(0.02)
                        continue
                    record = node.registry.cached(agent_id)
                    if record is not None and record.node != victim:
                        moved[agent_id] = (record.node, time.monotonic() - t0)
                        return
                    await asyncio.sleep(0.02)

            with ctx.console.status("waiting for the leader to re-place its agents..."):
                await asyncio.gather(*(back(a) for a in doomed))
                await asyncio.sleep(self.after)  # keep the load on the new owners a moment
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
        failover = max((t for _, t in moved.values()), default=float("nan"))
        after = {d: int((await node.ref(d).state()).orders) for d in ctx.desks}
        wrong = [
            (d, before[d], acked[d], unsure[d], after[d])
            for d in ctx.desks
            if not before[d] + acked[d] <= after[d] <= before[d] + acked[d] + unsure[d]
        ]
        table = Table(title=f"agents of {victim}, after the failover")
        table.add_column("agent")
        table.add_column("now on")
        table.add_column("back after", justify="right")
        table.add_column("orders before the act", justify="right")
        table.add_column("orders now", justify="right")
        for agent_id in doomed:
            where, took = moved.get(agent_id, ("(not back)", float("nan")))
            table.add_row(
                agent_id,
                where,
                f"{took * 1000:.0f} ms",
                str(before.get(agent_id, "—")),
                str(after.get(agent_id, "—")),
            )
        ctx.console.print(table)
        total_acked = sum(acked.values())
        missing = [a for a in doomed if a not in moved]
        ctx.results["failover"] = {
            "victim": victim,
            "agents": len(doomed),
            "back": len(moved),
            "seconds": failover,
            "acked": total_acked,
            "unsure": sum(unsure.values()),
        }
        if missing or wrong:
            ctx.results.setdefault("mismatched", []).extend(wrong)
            ctx.console.print(
                f"  [red]{len(missing)} agents not back, {len(wrong)} desks disagree with "
                "the acks[/red]"
            )
        else:
            ctx.console.print(
                f"  [green]all {len(doomed)} critical agents of {victim} back with their state "
                f"in [bold]{failover:.2f} s[/bold][/green] (lease 1 s); {total_acked} orders "
                f"acknowledged during the act, none lost or applied twice"
            )


__all__ = ["FailoverAct"]
