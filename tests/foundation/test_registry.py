"""The distributed registry: create-claims, CAS moves, the watched cache (real NATS)."""

from __future__ import annotations

import asyncio

import pytest

from foundation._errors import (
    AlreadyRegisteredError,
    CASConflictError,
    InvalidKeyError,
    NatsUnavailableError,
)
from foundation.registry.registry import ClusterRegistry, RegistryChange, RegistryRecord
from foundation.testing import NatsCluster, NatsServer
from jido import JidoError
from tests.foundation.conftest import Connect, eventually


async def _registries(server: NatsServer, connect: Connect, n: int) -> list[ClusterRegistry]:
    regs = [ClusterRegistry(await connect(server)) for _ in range(n)]
    for reg in regs:
        await reg.start()
    return regs


async def test_claim_lookup_and_already_registered(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    (reg,) = await _registries(nats_server, nats_connect, 1)
    try:
        rec = await reg.claim(
            "acc-1", node="n1", type="Account", critical=True, capabilities=["billing"]
        )
        assert rec.node == "n1" and rec.epoch == rec.revision > 0 and rec.key == "default.acc-1"
        # Read-your-writes from the cache, and the same from the server.
        assert await reg.lookup("acc-1") == rec
        assert await reg.lookup("acc-1", consistent=True) == rec
        with pytest.raises(AlreadyRegisteredError) as info:
            await reg.claim("acc-1", node="n2")
        assert info.value.owner == "n1"
        assert info.value.details["epoch"] == rec.epoch
        # The error crosses the wire typed and keeps the owner.
        again = JidoError.from_dict(info.value.to_dict())
        assert isinstance(again, AlreadyRegisteredError) and again.owner == "n1"
        assert await reg.lookup("nobody") is None
        assert await reg.lookup("nobody", consistent=True) is None
        # Tenants are separate namespaces.
        other = await reg.claim("acc-1", node="n2", tenant="t2")
        assert other.key == "t2.acc-1" and other.node == "n2"
    finally:
        await reg.stop()


async def test_concurrent_claims_have_exactly_one_winner_over_100_trials(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    regs = await _registries(nats_server, nats_connect, 5)
    try:
        for trial in range(100):
            agent_id = f"race-{trial}"
            results = await asyncio.gather(
                *(reg.claim(agent_id, node=f"n{i}") for i, reg in enumerate(regs)),
                return_exceptions=True,
            )
            winners = [r for r in results if isinstance(r, RegistryRecord)]
            losers = [r for r in results if isinstance(r, AlreadyRegisteredError)]
            assert len(winners) == 1, results
            assert len(losers) == len(regs) - 1, results
            assert {e.owner for e in losers} == {winners[0].node}
            stored = await regs[0].lookup(agent_id, consistent=True)
            assert stored is not None and stored.node == winners[0].node
    finally:
        for reg in regs:
            await reg.stop()


async def test_moves_and_updates_are_cas_with_growing_epochs(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    a, b = await _registries(nats_server, nats_connect, 2)
    try:
        rec = await a.claim("mover", node="n1", metadata={"k": 1})
        moved = await a.move("mover", to="n2", expected=rec)
        assert moved.node == "n2" and moved.epoch > rec.epoch
        with pytest.raises(CASConflictError):
            await b.move("mover", to="n3", expected=rec)  # stale read loses
        updated = await a.update("mover", expected=moved, status="busy", metadata={"k": 2})
        assert updated.epoch == moved.epoch and updated.revision > moved.revision
        assert updated.node == "n2" and updated.metadata == {"k": 2}
        with pytest.raises(CASConflictError):
            await a.remove("mover", expected=moved)
        await a.remove("mover", expected=updated)
        assert await a.lookup("mover") is None
        assert await a.lookup("mover", consistent=True) is None
        # A re-claim after removal carries a larger epoch than any before it.
        again = await b.claim("mover", node="n1")
        assert again.epoch > updated.epoch
    finally:
        await a.stop()
        await b.stop()


async def test_cache_lookups_follow_other_nodes_writes(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    writer, reader = await _registries(nats_server, nats_connect, 2)
    changes: list[RegistryChange] = []
    reader.add_listener(changes.append)
    try:
        recs = [
            await writer.claim("a1", node="n1", type="Order", capabilities=["pay"]),
            await writer.claim("a2", node="n2", type="Order", metadata={"region": "eu"}),
            await writer.claim("a3", node="n1", type="Audit", capabilities=["pay", "log"]),
        ]
        await reader.wait_version(recs[-1].revision)
        assert reader.version >= recs[-1].revision
        assert [r.agent_id for r in reader.by_type("Order")] == ["a1", "a2"]
        assert [r.agent_id for r in reader.by_capability("pay")] == ["a1", "a3"]
        assert [r.agent_id for r in reader.by_metadata(region="eu")] == ["a2"]
        assert [r.agent_id for r in reader.assigned_to("n1")] == ["a1", "a3"]
        assert reader.counts_by_node() == {"n1": 2, "n2": 1}
        assert [r.agent_id for r in reader.find(lambda r: r.node == "n2")] == ["a2"]
        moved = await writer.move("a1", to="n2", expected=recs[0])
        await reader.wait_version(moved.revision)
        assert [r.agent_id for r in reader.assigned_to("n2")] == ["a1", "a2"]
        cached = reader.cached("a1")
        assert cached is not None and cached.epoch == moved.epoch
        await writer.remove("a3")
        before = reader.version
        await reader.wait_change(after=before - 1)
        await reader.wait_version(writer.version)
        assert reader.cached("a3") is None
        assert [r.agent_id for r in await reader.scan()] == ["a1", "a2"]
        versions = [c.version for c in changes]
        assert versions == sorted(versions)
        assert [c.kind for c in changes][-1] == "delete"
    finally:
        await writer.stop()
        await reader.stop()


async def test_cache_is_filled_at_start(nats_server: NatsServer, nats_connect: Connect) -> None:
    (writer,) = await _registries(nats_server, nats_connect, 1)
    await writer.claim("pre", node="n9", critical=True, placement={"strategy": "spread"})
    late = ClusterRegistry(await nats_connect(nats_server))
    await late.start()
    try:
        rec = late.cached("pre")
        assert rec is not None and rec.critical and rec.placement == {"strategy": "spread"}
    finally:
        await late.stop()
        await writer.stop()


async def test_bad_ids_are_rejected(nats_server: NatsServer, nats_connect: Connect) -> None:
    (reg,) = await _registries(nats_server, nats_connect, 1)
    try:
        for bad in ["a.b", "", "a b", "x*"]:
            with pytest.raises(InvalidKeyError):
                await reg.claim(bad, node="n1")
        with pytest.raises(InvalidKeyError):
            await reg.claim("ok", node="bad node")
    finally:
        await reg.stop()


async def test_cache_catches_up_after_a_server_restart(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    writer, reader = await _registries(nats_server, nats_connect, 2)
    try:
        before = await writer.claim("before", node="n1")
        await reader.wait_version(before.revision)
        nats_server.restart()  # same port and data; the clients reconnect
        after = await eventually(
            lambda: writer.claim("after", node="n2"), retry_on=(NatsUnavailableError,)
        )
        # The reader's watch is an ordered consumer: it is recreated after the restart and
        # resumes after the last revision it delivered, so the new write reaches the cache.
        await asyncio.wait_for(reader.wait_version(after.revision), 20)
        cached = reader.cached("after")
        assert cached is not None and cached.node == "n2"
        assert reader.cached("before") == before
    finally:
        await writer.stop()
        await reader.stop()


@pytest.mark.nats
async def test_claims_on_a_three_server_cluster_survive_losing_the_stream_leader(
    nats_cluster: NatsCluster, nats_connect: Connect
) -> None:
    regs = [ClusterRegistry(await nats_connect(url)) for url in nats_cluster.urls]
    for reg in regs:
        await reg.start()
    try:
        assert regs[0].kv is not None and regs[0].kv.replicas == 3
        first = await regs[0].claim("r3-a", node="n0")
        leader = nats_cluster.stream_leader("KV_foundation_registry")
        nats_cluster.kill_server(leader)
        survivors = [r for i, r in enumerate(regs) if i != leader]

        async def claim_until_decided(
            reg: ClusterRegistry, node: str
        ) -> RegistryRecord | AlreadyRegisteredError:
            while True:  # retry while the stream elects a new leader
                try:
                    return await reg.claim("r3-b", node=node)
                except NatsUnavailableError:
                    await asyncio.sleep(0.05)
                except AlreadyRegisteredError as exc:
                    return exc

        results = await asyncio.wait_for(
            asyncio.gather(*(claim_until_decided(r, f"n{i}") for i, r in enumerate(survivors))),
            30,
        )
        # A claim whose reply was lost may find its own write on retry; either way every
        # contender agrees on one owner, and that is what the server holds.
        owners = {r.node if isinstance(r, RegistryRecord) else r.owner for r in results}
        assert len(owners) == 1
        assert sum(isinstance(r, RegistryRecord) for r in results) <= 1
        stored = await eventually(lambda: survivors[0].lookup("r3-b", consistent=True), timeout=30)
        assert {stored.node} == owners
        again = await survivors[1].lookup("r3-a", consistent=True)
        assert again == first  # acknowledged before the kill, still there
    finally:
        for reg in regs:
            await reg.stop()
