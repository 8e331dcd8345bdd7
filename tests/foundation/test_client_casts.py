"""A ``Client``'s casts are acknowledged by the node that takes them: to an at-least-once agent
a cast returns only once JetStream stored it, a refusal is a typed error, and a ref into another
tenant casts into that tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from foundation import Client, Node
from foundation import _wire as wire
from foundation.testing import NatsServer
from jido import AgentNotFoundError, Signal
from tests.foundation.apps import AGENTS, ClusteredCounter, DurableCounter
from tests.foundation.conftest import eventually

pytestmark = pytest.mark.nats


def add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/client", data={"n": n})


@pytest.fixture
async def cluster(nats_server: NatsServer) -> AsyncIterator[tuple[Node, Node, Node]]:
    """Two nodes of the default tenant, one of ``globex`` (soft tenants, one account)."""
    agents = [*AGENTS, DurableCounter]
    a = Node(nats=nats_server.url, name="cc-a", agents=agents, failover=False)
    b = Node(nats=nats_server.url, name="cc-b", agents=agents, failover=False)
    g = Node(nats=nats_server.url, name="cc-g", agents=agents, failover=False, tenant="globex")
    async with a, b, g:
        await a.membership.wait_members(["cc-a", "cc-b"])
        yield a, b, g


async def inbox_last_seq(node: Node) -> int:
    info = await node.nc.jetstream().stream_info(wire.INBOX_STREAM)
    return int(info.state.last_seq)


async def test_a_cast_to_an_at_least_once_agent_returns_once_jetstream_has_it(
    nats_server: NatsServer, cluster: tuple[Node, Node, Node]
) -> None:
    a, _, _ = cluster
    await a.spawn(DurableCounter, id="dur-c", node="cc-b")
    async with Client(nats=nats_server.url) as client:
        before = await inbox_last_seq(a)
        for i in range(1, 6):
            await client.ref("dur-c").cast(add())
            # stored when the cast returned: nothing to wait for
            assert await inbox_last_seq(a) == before + i

    async def applied() -> bool:
        return bool((await a.ref("dur-c").state()).count == 5)  # type: ignore[attr-defined]

    await eventually(applied)


async def test_a_refused_cast_is_a_typed_error(
    nats_server: NatsServer, cluster: tuple[Node, Node, Node]
) -> None:
    async with Client(nats=nats_server.url) as client:
        with pytest.raises(AgentNotFoundError):
            await client.ref("nobody-here").cast(add())


async def test_a_ref_into_another_tenant_casts_into_that_tenant(
    nats_server: NatsServer, cluster: tuple[Node, Node, Node]
) -> None:
    a, _, g = cluster
    await g.spawn(ClusteredCounter, id="shared-c")
    await a.spawn(ClusteredCounter, id="shared-c")
    async with Client(nats=nats_server.url) as client:  # default tenant
        await client.ref("shared-c", tenant="globex").cast(add(7))
        await client.ref("shared-c").cast(add(1))
        out = await client.ref("shared-c", tenant="globex").call(add(0))
        assert out["count"] == 7
    assert (await a.ref("shared-c").state()).count == 1  # type: ignore[attr-defined]
    assert (await g.ref("shared-c").state()).count == 7  # type: ignore[attr-defined]
