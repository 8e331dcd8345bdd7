"""Guarantees against every sender: gray-failure failover and head-of-line isolation.

Figures, each with its same-run baseline:

* **gray failure**: three node processes connect through a :class:`foundation.testing.NatsProxy`;
  each round spawns critical agents on one node, cuts only that node's *data* connection (its
  lease and control links keep working) and measures — from an in-process driver that hosts
  nothing — the time until every agent answers again from another node with its committed
  state. Baseline: the same round with the node SIGKILLed instead (the dead-node failover the
  gray failure must match; target p50 ≤ 2 s).
* **head-of-line**: ``ping`` round trips to a node (its private subject, the same subscription
  as every cast it receives) while one of its agents, slow and with a full 64-signal mailbox, is
  flooded with casts from another node. Baseline: the same pings to the idle node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench._harness import Row, Stats
from bench.bench_failover import Procs, _spawn
from foundation._node import Node
from foundation.hosting.clustered import Clustered
from foundation.messaging.policies import AwaitFailover
from foundation.testing import NatsProxy, NatsServer
from jido import Action, ActionContext, Agent, JidoError, Signal

GROUP = "guarantees"
log = logging.getLogger("bench.guarantees")


class SlowState(BaseModel):
    """A counter."""

    count: int = 0


class SlowBump(Action):
    """Count one after a millisecond of work."""

    name = "slow_bump"

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        await asyncio.sleep(0.001)
        return {"count": ctx.state.count + 1}


class SlowAgent(Clustered, Agent, placement="least_loaded"):
    """A slow agent with a small mailbox (the flooded one)."""

    state_model = SlowState
    mailbox_size = 64
    actions = [SlowBump]
    routes = [("slow.bump", SlowBump)]


async def _gray_vs_kill(tmp: Path, rounds: int, n: int) -> Row:
    srv = NatsServer(store_dir=tmp / "js")
    await srv.astart()
    proxy = await NatsProxy(srv.port).start()
    procs = Procs(proxy.url, tmp)
    driver: Node | None = None
    try:
        await procs.start("n1", "n2", "n3")
        driver = Node(
            nats=srv.url,
            name="driver",
            agents=[],
            failover=False,
            ref_policy=AwaitFailover(),
            call_timeout=30.0,
        )
        await driver.start()
        await driver.membership.wait_members(["n1", "n2", "n3"])
        gray: list[float] = []
        dead: list[float] = []
        names = ["n1", "n2", "n3"]
        for i in range(rounds):
            victim = names[i % 3]
            ids = await _spawn(driver, n, victim)
            t0 = time.monotonic()
            proxy.cut(f"foundation-node-{victim}")
            back = await asyncio.gather(*(_back(driver, procs, a, victim, 60.0) for a in ids))
            gray.append(max(back) - t0)
            log.info("round %d: %s data link cut, all back in %.2f s", i, victim, gray[-1])
            proxy.heal(f"foundation-node-{victim}")
            await _rejoined(driver, victim)
            ids = await _spawn(driver, n, victim)
            t0 = time.monotonic()
            await procs.kill(victim)
            back = await asyncio.gather(*(_back(driver, procs, a, victim, 60.0) for a in ids))
            dead.append(max(back) - t0)
            log.info("round %d: %s killed, all back in %.2f s", i, victim, dead[-1])
            await procs.start(victim)
            await _rejoined(driver, victim)
        return Row.from_stats(
            GROUP,
            f"failover p50, only the data link cut ({n} critical agents, 3 node processes)",
            "s",
            Stats.of(gray),
            "failover p50, the same node SIGKILLed (same cluster, same run)",
            Stats.of(dead),
            target="≤ 2 s p50 (the dead-node budget)",
            note="the node notices its data link is down (probe unanswered 0.75 s), fences, "
            "and deletes its lease record so failover starts at once",
        )
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                await driver.stop()
        await procs.close()
        await proxy.stop()
        await srv.astop()


async def _back(driver: Node, procs: Procs, agent_id: str, victim: str, limit: float) -> float:
    """Monotonic time at which ``agent_id`` answered from a node other than ``victim``.

    Probes are short (0.2 s): a probe sent to a node whose data link is cut gets no answer at
    all, and a long probe would measure its own timeout, not the failover.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    ref = driver.ref(agent_id)
    while loop.time() < deadline:
        try:
            out = await ref.call(Signal(type="fo.where", source="/bench"), timeout=0.2)
        except JidoError:
            await asyncio.sleep(0.02)
            continue
        if procs.pids.get(int(out.get("pid", 0))) != victim:
            if out.get("count") != 1:
                raise RuntimeError(f"{agent_id} came back with count {out.get('count')}, not 1")
            return time.monotonic()
    raise RuntimeError(f"{agent_id} did not come back within {limit}s")


async def _rejoined(driver: Node, name: str) -> None:
    """Wait until ``name`` is a member again and answers a ping (it serves requests)."""
    await driver.membership.wait_members([name])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        try:
            await driver.nc.request(driver.subjects.node(name, "ping"), b"{}", timeout=1.0)
            return
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _head_of_line(pings: int, flood: int) -> Row:
    async with NatsServer() as srv:
        host = Node(nats=srv.url, name="host", agents=[SlowAgent], failover=False)
        sender = Node(nats=srv.url, name="sender", agents=[], failover=False)
        await host.start()
        await sender.start()
        try:
            await sender.membership.wait_members(["host", "sender"])
            await sender.spawn(SlowAgent, id="slow", node="host")
            subject = sender.subjects.node("host", "ping")

            async def ping_times() -> list[float]:
                out = []
                for _ in range(pings):
                    t0 = time.perf_counter()
                    await sender.nc.request(subject, b"{}", timeout=30)
                    out.append(time.perf_counter() - t0)
                return out

            idle = await ping_times()
            ref = sender.ref("slow")
            bump = Signal(type="slow.bump", source="/bench")
            for _ in range(flood):
                await ref.cast(bump)
            await sender.nc.flush()
            busy = await ping_times()
            backlogged = host.statistics().casts_backlogged
            await ref.call(bump, timeout=120)  # behind the flood: every cast applied
            return Row.from_stats(
                GROUP,
                f"node ping p50 while one agent is flooded ({flood} casts, mailbox 64, "
                f"{backlogged} waiting in its backlog)",
                "s",
                Stats.of(busy),
                "node ping p50, the same node idle (same run)",
                Stats.of(idle),
                target="about the idle latency (back-pressure stays with the agent)",
            )
        finally:
            await sender.stop()
            await host.stop()


async def run(quick: bool) -> list[Row]:
    """Run the figures (``quick``: fewer rounds, for the smoke run)."""
    rows = [await _head_of_line(pings=50 if quick else 500, flood=500 if quick else 5000)]
    with tempfile.TemporaryDirectory(prefix="bench-guarantees-") as tmp:
        rows.append(await _gray_vs_kill(Path(tmp), rounds=1 if quick else 6, n=4 if quick else 20))
    return rows
