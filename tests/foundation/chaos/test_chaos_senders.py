"""Chaos: the guarantees hold whoever sends and however a node half-fails.

- A client-only node (it hosts no agent type, like the chaos driver) casts to ``at_least_once``
  agents whose owner is frozen (SIGSTOP): every cast it saw return is applied after failover.
- Gray failure: only a node's data connection is cut (its lease and control links still work);
  the node gives its lease up and its agents fail over within the recovery budget, then it
  rejoins once the link heals.
- A registry record carrying a forged leader term (written by a plain NATS client) does not
  switch failover off: the owner is killed and its agents come back.

Each run ends with the history checker's invariants (nothing acked lost or applied twice, no
interleaved owners, recovery in budget with state).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from foundation import _wire as wire
from foundation.failover.failover import LEADER_KEY, TERM_KEY
from foundation.nats.kv import KV, BucketSpec
from foundation.registry.registry import RegistryRecord
from jido import JidoError, Signal
from tests.foundation.chaos.app import CallCounter, DurableCounter
from tests.foundation.chaos.cluster import ChaosCluster
from tests.foundation.chaos.conftest import ChaosPlan

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def cast(cc: ChaosCluster, agent_id: str) -> bool:
    """One ``apply`` by ``cast`` from the client-only driver; acked when the cast returned."""
    assert cc.driver is not None
    sig = Signal(type="chaos.apply", source="/chaos", subject=agent_id, data={})
    cc.history.send(agent_id, sig.id)
    try:
        await cc.driver.ref(agent_id).cast(sig)
    except JidoError:
        cc.history.unsure_of(agent_id, sig.id)
        return False
    cc.history.ack(agent_id, sig.id, time.monotonic())
    return True


async def test_casts_from_a_client_only_node_survive_a_frozen_owner(
    tmp_path: Path, chaos: ChaosPlan
) -> None:
    agents: list[str] = []
    async with ChaosCluster(tmp_path, nodes=3) as cc:
        assert cc.driver is not None and not cc.driver.capabilities  # hosts nothing
        for _ in range(chaos.rounds(2)):
            durable = await cc.spawn(DurableCounter, 3)
            agents += durable
            victim = chaos.rng.choice(sorted(set(cc.node_names) - cc.killed))
            mine = [a for a in durable if a in cc.owned_by(victim)]
            if not mine:  # make sure the frozen node owns one
                mine = await cc.spawn(DurableCounter, 1, on=victim)
                agents += mine
            kill = cc.pause_node(victim)
            acked = [await cast(cc, a) for a in mine for _ in range(5)]
            assert all(acked), "a cast to an at_least_once agent returns once JetStream has it"
            await cc.wait_recovered(kill)
            cc.resume_node(victim)
            await cc.wait_applied(agents)
            await cc.driver.membership.wait_members([victim])  # it rejoined (a spawn target again)
        history = await cc.collect(agents)
        assert cc.summary()["acks"] >= 5
        history.assert_ok(budget=cc.budget)


async def test_a_node_whose_data_link_is_cut_fails_over(tmp_path: Path, chaos: ChaosPlan) -> None:
    agents: list[str] = []
    async with ChaosCluster(tmp_path, nodes=3, proxy=True) as cc:
        for _ in range(chaos.rounds(2)):
            durable = await cc.spawn(DurableCounter, 3)
            calls = await cc.spawn(CallCounter, 3)
            agents += durable + calls
            victim = chaos.rng.choice(sorted(cc.node_names))
            if not cc.owned_by(victim):
                agents += await cc.spawn(CallCounter, 1, on=victim)
            stop = asyncio.Event()
            load = asyncio.create_task(cc.load(calls, durable=durable, until=stop))
            try:
                await asyncio.sleep(chaos.rng.uniform(0.05, 0.4))  # randomized fault timing
                kill = cc.cut_data_link(victim)
                await cc.wait_recovered(kill)
            finally:
                stop.set()
                await load
            cc.heal_data_link(victim)
            await cc.wait_ready(victim)  # it rejoins once the link answers again
            await cc.wait_applied(durable + calls)
        history = await cc.collect(agents)
        summary = cc.summary()
        print(f"chaos data-link cut: {summary}")
        assert summary["acks"] > 0
        assert summary["recovered"] == sum(len(k.critical) for k in history.kills)
        history.assert_ok(budget=cc.budget)


async def test_a_forged_leader_term_does_not_stop_failover(
    tmp_path: Path, chaos: ChaosPlan
) -> None:
    async with ChaosCluster(tmp_path, nodes=3) as cc:
        assert cc.driver is not None
        agents = await cc.spawn(CallCounter, 6)
        victim = chaos.rng.choice(sorted(n for n in cc.node_names if cc.owned_by(n)))
        # A plain client stamps one of the victim's records with an absurd leader term.
        registry = await KV.open(cc.driver.nc, BucketSpec(wire.REGISTRY_BUCKET))
        target = cc.owned_by(victim)[0]
        entry = await registry.get(f"{wire.DEFAULT_TENANT}.{target}")
        assert entry is not None
        record = RegistryRecord.decode(entry.value, entry.revision)
        forged = msgspec.structs.replace(
            record, metadata={**record.metadata, TERM_KEY: 10**12, LEADER_KEY: "forger"}
        )
        await registry.update(record.key, forged.encode(), last=entry.revision)
        for agent_id in agents:
            assert await cc.call(agent_id)
        kill = cc.kill_node(victim)
        await cc.wait_recovered(kill)
        for agent_id in agents:
            assert await cc.call(agent_id)
        await cc.wait_applied(agents)
        history = await cc.collect(agents)
        history.assert_ok(budget=cc.budget)
