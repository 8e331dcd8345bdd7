"""Effectively-once with batched commits: a node process dies in the middle of a batch.

Signals are stored in an agent's inbox before it starts, so its owner takes them in full batches
(up to the inbox's cap). One signal makes the owning process SIGKILL itself while it is being
applied: the commands before it in that batch have run in memory, nothing of the batch is
committed or acked. The new owner must apply the whole batch again from the committed position,
so every acknowledged signal ends up applied exactly once, in the order it was sent, and the
dead owner never committed anything of the batch it died in.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from foundation.messaging.inbox import ensure_inbox_stream
from tests.foundation.chaos.app import DurableCounter
from tests.foundation.chaos.cluster import ChaosCluster, applied_digest
from tests.foundation.chaos.history import Kill

pytestmark = [pytest.mark.nats, pytest.mark.slow]

SIGNALS = 300
DIE_AT = 150  # inside the second batch (the inbox takes at most 128 per batch)


async def test_process_killed_mid_batch_reapplies_it_exactly_once(tmp_path: Path) -> None:
    async with ChaosCluster(tmp_path, nodes=3) as cc:
        agent = "batchy"
        assert cc.procs is not None and cc.driver is not None
        victim = "n1"
        victim_pid = cc.procs.node(victim).pid
        await ensure_inbox_stream(cc.driver.nc.jetstream())
        for i in range(SIGNALS):
            data = {"die_pid": victim_pid} if i == DIE_AT else {}
            assert await cc.publish(agent, **data)
        sent = [a.signal_id for a in cc.history.acks if a.agent == agent]
        assert len(sent) == SIGNALS

        kill = Kill(victim, time.monotonic(), (agent,))
        cc.history.kills.append(kill)
        cc.killed.add(victim)
        await cc.driver.spawn(DurableCounter, id=agent, node=victim)
        await cc.wait_recovered(kill)  # the victim died mid-batch; another node serves it
        await asyncio.wait_for(cc.procs.wait_exit(victim), 10)  # it is dead, not hung
        await cc.wait_applied([agent])

        history = await cc.collect([agent])
        [final] = [f for f in history.finals if f.agent == agent]
        assert list(final.applied) == sent  # each exactly once, in send order
        assert final.count == SIGNALS

        by_victim = [
            w
            for w in history.writes
            if w.agent == agent and w.writer == victim and not w.activation
        ]
        # The victim committed whole batches before the one it died in, and nothing of that one.
        assert by_victim, "the victim should have committed its first batch"
        # (A write's state is a digest: how many ids were applied and a hash of them.)
        for w in by_victim:
            n = int(w.state["applied"])
            assert w.state["applied_sha256"] == applied_digest(sent[:n]) and n < DIE_AT
        # One commit per batch, not per signal.
        assert len(by_victim) < int(by_victim[-1].state["applied"])
        history.assert_ok(budget=cc.budget)
        await cc.restart_node(victim)
