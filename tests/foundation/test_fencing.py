"""Fencing: a node frozen (SIGSTOP) for longer than its lease must not apply a single state
change as the owner it was after it wakes up, even with requests queued for it while it was
frozen. (Once it has rejoined, the leader may hand agents back to it by rebalancing: those are
new ownerships, with newer epochs, and it serves them like any node.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from jido import Signal
from tests.foundation.chaos.app import CallCounter, DurableCounter
from tests.foundation.chaos.cluster import ChaosCluster

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def test_a_paused_node_applies_nothing_after_it_wakes(tmp_path: Path) -> None:
    async with ChaosCluster(tmp_path, nodes=3) as cc:
        victim = "n2"
        calls = await cc.spawn(CallCounter, 3, on=victim)
        durable = await cc.spawn(DurableCounter, 2, on=victim)
        for agent_id in calls:
            assert await cc.call(agent_id)
        for agent_id in durable:
            assert await cc.publish(agent_id)
        await cc.wait_applied(calls + durable)
        victim_pid = cc.procs.node(victim).pid  # type: ignore[union-attr]

        at_pause = await cc.state_revision()
        registry = cc._node().registry
        held: dict[str, int] = {}  # the epochs the victim owns its agents at now
        for agent_id in calls + durable:
            record = await registry.lookup(agent_id, consistent=True)
            assert record is not None and record.node == victim
            held[agent_id] = record.epoch
        kill = cc.pause_node(victim)
        assert set(kill.critical) == set(calls + durable)
        # Requests queued at the frozen node: the public subject is served by a queue group
        # the frozen node still belongs to, so some of these land in its socket buffer.
        nc = cc.driver.nc  # type: ignore[union-attr]
        queued = []
        for agent_id in calls:
            for _ in range(3):
                sig = Signal(type="chaos.apply", source="/raw", data={})
                cc.history.send(agent_id, sig.id)
                cc.history.unsure_of(agent_id, sig.id)
                queued.append(
                    asyncio.ensure_future(
                        nc.request(
                            f"foundation.agent.default.{agent_id}",
                            json.dumps(sig.to_dict()).encode(),
                            timeout=20,
                        )
                    )
                )
        await cc.wait_recovered(kill)  # every agent answers from another node: lease long gone
        cc.resume_node(victim)
        # Wait until the woken node has noticed (fenced, rejoined as a fresh member).
        procs = cc.procs
        assert procs is not None
        await procs.wait_joined(victim)
        await asyncio.gather(*queued, return_exceptions=True)
        for agent_id in calls:
            assert await cc.call(agent_id)  # still served, by the new owner
        await cc.wait_applied(calls + durable)
        history = await cc.collect(calls + durable)
        before = [w for w in history.writes if w.revision <= at_pause and w.writer == victim]
        woken = [
            w
            for w in history.writes
            if w.revision > at_pause
            and int(w.state.get("pid", 0)) == victim_pid
            and not w.activation
        ]
        late = [w for w in woken if w.epoch <= held[w.agent]]
        assert before  # the victim did commit before it was frozen
        assert late == [], f"the frozen node committed as the old owner after waking: {late}"
        # Anything else it committed after waking is under an epoch that a leader assigned to
        # it later (a rebalancing hand-over once it had rejoined), never one it held before.
        handed_back = {
            (a.agent, a.epoch)
            for a in history.assignments
            if a.node == victim and a.term is not None and a.epoch > held.get(a.agent, 0)
        }
        regained = [w for w in woken if (w.agent, w.epoch) not in handed_back]
        assert regained == [], f"the woken node wrote under an epoch not assigned to it: {regained}"
        # And nothing it did after waking shows in the agents' states or breaks an invariant.
        history.assert_ok(budget=cc.budget)
