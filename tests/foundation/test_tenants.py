"""Tenants sharing one NATS: nodes of different tenants never see each other's agents or state."""

from __future__ import annotations

import asyncio

import pytest

from foundation import _wire as wire
from foundation._node import Node
from foundation.nats.kv import KV, BucketSpec, connect
from foundation.testing import NatsServer
from jido import Signal
from tests.foundation.apps import AGENTS, ClusteredCounter

pytestmark = pytest.mark.nats


def add(n: int) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


# Both orders of the node ids: neither tenant's node may be picked for the other because its id
# sorts first.
@pytest.mark.parametrize(("acme_id", "globex_id"), [("acme-1", "globex-1"), ("b-acme", "a-globex")])
async def test_the_same_agent_id_in_two_tenants_is_two_agents_with_two_states(
    nats_server: NatsServer, acme_id: str, globex_id: str
) -> None:
    acme = Node(nats=nats_server.url, name=acme_id, agents=AGENTS, tenant="acme", failover=False)
    globex = Node(
        nats=nats_server.url, name=globex_id, agents=AGENTS, tenant="globex", failover=False
    )
    try:
        await asyncio.gather(acme.start(), globex.start())
        await acme.spawn(ClusteredCounter, id="shared-id")
        await globex.spawn(ClusteredCounter, id="shared-id")
        assert (await acme.ref("shared-id").call(add(5)))["count"] == 5
        assert (await globex.ref("shared-id").call(add(100)))["count"] == 100
        assert (await acme.ref("shared-id").call(add(1)))["count"] == 6
        # Each tenant's agent checkpointed under its own key; neither fenced the other.
        nc = await connect(nats_server.url)
        try:
            kv = await KV.open(nc, BucketSpec(wire.STATE_BUCKET))
            keys = set(await kv.keys())
        finally:
            await nc.close()
        assert {"acme.shared-id", "globex.shared-id"} <= keys
        assert "shared-id" not in keys
        # A restart of the agent restores its own tenant's state.
        await acme.stop()
        acme = Node(
            nats=nats_server.url, name=acme_id, agents=AGENTS, tenant="acme", failover=False
        )
        await acme.start()
        assert (await acme.ref("shared-id").call(add(1)))["count"] == 7
        assert (await globex.ref("shared-id").state()).count == 100
    finally:
        await asyncio.gather(acme.stop(), globex.stop(), return_exceptions=True)
