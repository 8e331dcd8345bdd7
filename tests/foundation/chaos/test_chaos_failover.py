"""Chaos: node processes killed (SIGKILL) or frozen (SIGSTOP) under load, NATS servers killed;
the history checker verifies the four invariants over every round.

Each round spawns fresh agents (critical counters fed through their JetStream inbox, critical
counters fed by calls, non-critical scratch agents), drives load, injects one fault at a random
moment, waits for every critical agent of the faulted node to answer from another node, stops
the load, waits for every acknowledged signal to be applied, and heals the fault. At the end the
whole history (acks, every committed state write, every registry revision, leader terms, final
states) is checked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.foundation.chaos.app import CallCounter, DurableCounter, Scratch
from tests.foundation.chaos.cluster import ChaosCluster
from tests.foundation.chaos.conftest import ChaosPlan

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def one_round(cc: ChaosCluster, plan: ChaosPlan, agents: list[str], *, fault: str) -> None:
    durable = await cc.spawn(DurableCounter, 3)
    calls = await cc.spawn(CallCounter, 3)
    await cc.spawn(Scratch, 2)
    agents += durable + calls
    stop = asyncio.Event()
    load = asyncio.create_task(cc.load(calls, durable=durable, until=stop))
    try:
        # Randomized fault timing (not synchronisation): let some load through first.
        await asyncio.sleep(plan.rng.uniform(0.05, 0.5))
        victim = plan.rng.choice(sorted(set(cc.node_names) - cc.killed))
        if fault == "kill":
            kill = cc.kill_node(victim)
            await cc.wait_recovered(kill)
        else:
            kill = cc.pause_node(victim)
            await cc.wait_recovered(kill)
            cc.resume_node(victim)
        await asyncio.sleep(plan.rng.uniform(0.0, 0.3))
    finally:
        stop.set()
        await load
    await cc.wait_applied(durable + calls)
    if fault == "kill":
        await cc.restart_node(victim)


@pytest.mark.parametrize("fault", ["kill", "pause"])
async def test_node_faults_under_load(tmp_path: Path, chaos: ChaosPlan, fault: str) -> None:
    rounds = chaos.rounds(10 if fault == "kill" else 5)
    agents: list[str] = []
    async with ChaosCluster(tmp_path, nodes=3) as cc:
        for _ in range(rounds):
            await one_round(cc, chaos, agents, fault=fault)
        history = await cc.collect(agents)
        summary = cc.summary()
        print(f"chaos {fault} x{rounds}: {summary}")
        # The run exercised what it claims to: load was acked, writes and terms were recorded,
        # and every critical agent of every faulted node was seen serving again.
        assert summary["acks"] > 0 and summary["writes"] > summary["acks"] // 2
        assert summary["terms"] >= 1 and summary["kills"] == rounds
        assert summary["recovered"] == sum(len(k.critical) for k in history.kills)
        history.assert_ok(budget=cc.budget)
