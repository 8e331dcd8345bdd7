"""A tenant is a NATS account: two tenants with their own creds on one secure nats-server.

Globex reaches nothing of acme (calls, registry, state, listings, inbox), the same agent id in
both is two agents (also through a failover in each), each account's JetStream limits are
enforced by the server, and the operator's admin reads every tenant's status through the
tenants' read-only exports but calls none of their agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError

from foundation import (
    Client,
    ClusterError,
    Node,
    NodeUnavailableError,
    PermissionDeniedError,
    WrongTenantError,
)
from foundation import _wire as wire
from foundation.messaging.policies import AwaitFailover
from foundation.nats.kv import KV, BucketSpec
from foundation.observability.status import collect_status
from foundation.observability.tenant_status import (
    TenantStatus,
    collect_tenant_status,
    creds_tenant,
)
from foundation.security import (
    NatsAuth,
    SecureNatsServer,
    SecureSetup,
    TenantLimits,
    checked_publish,
    checked_request,
    records_of,
    secure_connect,
    tenant_view,
    write_secure_setup,
)
from foundation.security._roles import INBOX_STREAM
from jido import AgentNotFoundError, Signal
from tests.foundation.apps import AGENTS, ClusteredCounter, DurableCounter
from tests.foundation.conftest import eventually

pytestmark = pytest.mark.nats

TENANTS = ("acme", "globex")
#: What reaching for another tenant's agent gets: not found in one's own account (or refused
#: outright for naming another tenant)
# A node refuses a ref into another tenant (WrongTenantError); through the server, another
# account's agents are simply not there (not found), not reachable (permission denied), or no
# node of this account serves that tenant's subjects at all (node unavailable).
REFUSED = (AgentNotFoundError, PermissionDeniedError, WrongTenantError, NodeUnavailableError)


def add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


def auth(setup: SecureSetup, role: str, tenant: str | None = None) -> NatsAuth:
    return NatsAuth.of(creds=setup.creds_for(role, tenant), tls_ca=setup.ca)  # type: ignore[arg-type]


@dataclass
class Tenants:
    setup: SecureSetup
    server: SecureNatsServer
    nodes: dict[str, list[Node]]

    def node(self, tenant: str, name: str, **options: object) -> Node:
        return Node(
            nats=self.server.url,
            name=name,
            agents=AGENTS,
            tenant=tenant,
            auth=auth(self.setup, "node", tenant),
            **options,  # type: ignore[arg-type]
        )

    def client(self, tenant: str | None, role: str = "client") -> Client:
        return Client(
            nats=self.server.url,
            tenant=tenant or "default",
            creds=self.setup.creds_for(role, tenant),  # type: ignore[arg-type]
            tls_ca=self.setup.ca,
        )


@pytest.fixture
async def tenants(tmp_path: Path) -> AsyncIterator[Tenants]:
    """One secure nats-server; tenants acme and globex, two nodes each (in their accounts)."""
    setup = write_secure_setup(tmp_path / "secure", TENANTS)
    server = SecureNatsServer(setup, store_dir=tmp_path / "js")
    await server.astart()
    env = Tenants(setup, server, {})
    try:
        env.nodes = {t: [env.node(t, f"{t[0]}{i}") for i in (1, 2)] for t in TENANTS}
        everyone = [n for group in env.nodes.values() for n in group]
        await asyncio.gather(*(n.start() for n in everyone))
        for group in env.nodes.values():
            for n in group:
                await n.membership.wait_members([m.id for m in group])
        yield env
    finally:
        await asyncio.gather(
            *(n.stop() for g in env.nodes.values() for n in g), return_exceptions=True
        )
        await server.astop()


async def test_globex_reaches_nothing_of_acme(tenants: Tenants) -> None:
    a1, _ = tenants.nodes["acme"]
    g1, _ = tenants.nodes["globex"]
    await a1.spawn(ClusteredCounter, id="secret", node=a1.id)
    await a1.spawn(DurableCounter, id="ledger", node=a1.id)
    assert (await a1.ref("secret").call(add(5)))["count"] == 5

    # calls and state reads, from a globex node and a globex client: not found in globex
    with pytest.raises(REFUSED):
        await g1.ref("secret", tenant="acme").call(add(1), timeout=2)
    with pytest.raises(AgentNotFoundError):
        await g1.ref("secret").call(add(1), timeout=2)
    with pytest.raises(REFUSED):
        await g1.ref("secret", tenant="acme").state()
    async with tenants.client("globex") as client:
        for target in (client.ref("secret", tenant="acme"), client.ref("secret")):
            with pytest.raises(REFUSED):
                await target.call(add(1), timeout=2)

    # the registry and the listings hold only globex's agents
    assert await g1.registry.lookup("secret", tenant="acme", consistent=True) is None
    assert await g1.registry.lookup("secret", consistent=True) is None
    assert g1.registry.records() == [] and g1.registry.records(tenant="acme") == []
    report = await collect_status(tenants.server.url, auth=auth(tenants.setup, "admin", "globex"))
    assert not report.errors
    assert {n.id for n in report.nodes} == {"g1", "g2"}
    assert report.agents == {}

    # the state bucket globex can open is its own: no key of acme's in it
    state = await KV.open(g1.nc, BucketSpec(wire.STATE_BUCKET))
    assert await state.get(wire.agent_key("acme", "secret")) is None
    assert [k for k in await state.keys() if "secret" in k or "ledger" in k] == []

    # an inbox message put by globex lands in globex's own stream, never in acme's
    acme_js = a1.nc.jetstream()
    before = (await acme_js.stream_info(INBOX_STREAM)).state.last_seq
    inject = orjson.dumps({"type": "counter.add", "source": "/evil", "data": {"n": 1000}})
    with contextlib.suppress(APIError, NoStreamResponseError):  # globex may have no inbox
        await g1.nc.jetstream().publish(f"{wire.SUBJECT_ROOT}.inbox.acme.ledger", inject)
    await a1.ref("ledger").cast(add(1))
    await eventually(lambda: _count_is(a1, "ledger", 1), timeout=10)
    assert (await acme_js.stream_info(INBOX_STREAM)).state.last_seq == before + 1
    assert await count_of(a1, "secret") == 5


async def count_of(node: Node, agent_id: str) -> int:
    state: Any = await node.ref(agent_id).state()
    return int(state.count)


async def _count_is(node: Node, agent_id: str, count: int) -> bool:
    return await count_of(node, agent_id) == count


async def test_the_same_id_in_both_tenants_is_two_agents_also_through_failover(
    tenants: Tenants,
) -> None:
    a1, a2 = tenants.nodes["acme"]
    g1, g2 = tenants.nodes["globex"]
    await a1.spawn(ClusteredCounter, id="shared", node=a1.id)
    await g1.spawn(ClusteredCounter, id="shared", node=g1.id)
    for i in range(10):  # alternating: each call reaches its own tenant's agent
        node, n = (a2, 1) if i % 2 == 0 else (g2, 100)
        await node.ref("shared").call(add(n))
    assert await count_of(a2, "shared") == 5
    assert await count_of(g2, "shared") == 500

    # the owners stop; each tenant's own leader re-places its agent with its state
    for survivor in (a2, g2):
        survivor.ref_policy = AwaitFailover()
    await asyncio.gather(a1.stop(), g1.stop())
    assert (await a2.ref("shared").call(add(1), timeout=20))["count"] == 6
    assert (await g2.ref("shared").call(add(1), timeout=20))["count"] == 501
    for node in (a2, g2):
        record = await node.registry.lookup("shared", consistent=True)
        assert record is not None and record.node == node.id


async def test_the_operator_reads_tenant_status_but_calls_no_agent(tenants: Tenants) -> None:
    a1, _ = tenants.nodes["acme"]
    await a1.spawn(ClusteredCounter, id="c1", node=a1.id)
    url, setup = tenants.server.url, tenants.setup
    assert creds_tenant(auth(setup, "admin")) is None
    assert creds_tenant(auth(setup, "admin", "acme")) == "acme"

    async def seen(tenant: str, role: str, names: set[str]) -> TenantStatus | None:
        # a window that missed a heartbeat (a busy machine) is read again
        report = await collect_tenant_status(url, tenant, auth=auth(setup, role))
        assert not report.errors
        return report if {n.id for n in report.nodes} == names and report.healthy else None

    for tenant, names in (("acme", {"a1", "a2"}), ("globex", {"g1", "g2"})):
        await eventually(functools.partial(seen, tenant, "admin", names), timeout=20)
    report = await eventually(lambda: seen("acme", "observer", {"a1", "a2"}), timeout=20)
    assert {n.id: n.agents for n in report.nodes} == {"a1": 1, "a2": 0}

    admin = await secure_connect(url, auth(setup, "admin"))
    try:
        # the audit trail of a tenant, live, through its export
        audit: asyncio.Queue[Msg] = asyncio.Queue()
        view = tenant_view("acme")
        await admin.subscribe(view.audit, cb=audit.put)
        await admin.flush()
        await a1.spawn(ClusteredCounter, id="c2", node=a1.id)
        # a message holds one record or a batch of them (one per line)
        record = orjson.loads(records_of((await asyncio.wait_for(audit.get(), 10)).data)[0])
        assert record["tenant"] == "acme"

        # nothing but ping and stats crosses: no call, no other node op, no agent subject
        for subject in (
            view.node_op("a1", "call"),
            view.node_op("a1", "state"),
            view.node_op("a1", "drain"),
            f"{wire.SUBJECT_ROOT}.agent.acme.c1",
        ):
            with pytest.raises(PermissionDeniedError):
                await checked_request(admin, subject, b"{}", timeout=2)
        with pytest.raises(PermissionDeniedError):
            await checked_publish(admin, f"{view.root}.nodes.a1", b"{}")
    finally:
        await admin.close()
    async with tenants.client(None, role="admin") as client:
        # no node serves agents in APP, and no agent subject is imported from acme
        with pytest.raises(NodeUnavailableError, match="no responders"):
            await client.ref("c1", tenant="acme").call(add(1), timeout=2)
    assert await count_of(a1, "c1") == 0


async def test_the_server_enforces_each_tenant_accounts_jetstream_limits(tmp_path: Path) -> None:
    small = TenantLimits(disk_storage=256 * 1024, mem_storage=256 * 1024, streams=2, consumers=2)
    setup = write_secure_setup(tmp_path / "secure", TENANTS, tenant_limits={"acme": small})
    assert setup.limits["acme"] == small and setup.limits["globex"] == TenantLimits()
    server = SecureNatsServer(setup, store_dir=tmp_path / "js")
    await server.astart()
    try:
        nc = await secure_connect(server.url, auth(setup, "node", "acme"))
        js = nc.jetstream()
        try:
            info = await js.account_info()
            assert info.limits.max_streams == 2 and info.limits.max_consumers == 2
            assert info.limits.max_storage == 256 * 1024
            await js.add_stream(name=wire.SIGNALS_STREAM, subjects=["foundation.signal.>"])
            await js.add_stream(name=INBOX_STREAM, subjects=["foundation.inbox.>"])
            with pytest.raises(APIError, match="maximum number of streams"):
                await js.add_stream(name=wire.DEAD_LETTER_STREAM, subjects=["foundation.dead.>"])
            for durable in ("one", "two"):
                await js.add_consumer(wire.SIGNALS_STREAM, durable_name=durable)
            with pytest.raises(APIError, match="maximum consumers"):
                await js.add_consumer(wire.SIGNALS_STREAM, durable_name="three")
            blob = b"x" * 32 * 1024
            with pytest.raises(APIError, match="resource limits exceeded"):
                for _ in range(16):  # 512 KiB into a 256 KiB account
                    await js.publish("foundation.inbox.acme.a", blob)
        finally:
            await nc.close()
        # globex's default limits are its own: the same streams are created there
        other = await secure_connect(server.url, auth(setup, "node", "globex"))
        try:
            gjs = other.jetstream()
            for name, subject in (
                (wire.SIGNALS_STREAM, "foundation.signal.>"),
                (INBOX_STREAM, "foundation.inbox.>"),
                (wire.DEAD_LETTER_STREAM, "foundation.dead.>"),
            ):
                await gjs.add_stream(name=name, subjects=[subject])
        finally:
            await other.close()
    finally:
        await server.astop()


async def test_every_tenant_gets_jetstream_whatever_the_machines_disk(tmp_path: Path) -> None:
    # a lone server reserves each account's limits; 64 TiB each is more than any test machine
    # has, so this passes only because the secure server is sized for the tenants it serves
    huge = TenantLimits(disk_storage=64 * 2**40, mem_storage=2**40)
    tenants = ("acme", "globex", "initech")
    setup = write_secure_setup(tmp_path / "secure", tenants, tenant_limits=huge)
    memory, disk = setup.jetstream_reserved() or (0, 0)
    assert disk >= 3 * huge.disk_storage and memory >= 3 * huge.mem_storage
    server = SecureNatsServer(setup, store_dir=tmp_path / "js")
    await server.astart()
    try:
        for tenant in tenants:
            nc = await secure_connect(server.url, auth(setup, "node", tenant))
            try:
                kv = await KV.open(nc, BucketSpec("foundation_state"), placement_wait=5)
                await kv.put("k", b"v")
                info = await nc.jetstream().account_info()
                assert info.limits.max_storage == huge.disk_storage
            finally:
                await nc.close()
    finally:
        await server.astop()


async def test_a_tenant_the_server_has_no_room_for_gets_a_clear_error(tmp_path: Path) -> None:
    limits = TenantLimits(disk_storage=2**30, mem_storage=2**20)
    setup = write_secure_setup(tmp_path / "secure", TENANTS, tenant_limits=limits)
    # room for one tenant's reservation only: the second account's JetStream stays off
    server = SecureNatsServer(
        setup, store_dir=tmp_path / "js", max_file_store=2**30 + 2**29, max_memory_store=2**21
    )
    await server.astart()
    try:
        first = await secure_connect(server.url, auth(setup, "node", "acme"))
        second = await secure_connect(server.url, auth(setup, "node", "globex"))
        try:
            await KV.open(first, BucketSpec("foundation_state"), placement_wait=5)
            with pytest.raises(ClusterError, match="insufficient storage resources") as err:
                await KV.open(second, BucketSpec("foundation_state"), placement_wait=0.5)
            assert "max_file_store" in str(err.value)
        finally:
            await first.close()
            await second.close()
        log = server.log_path.read_text()
        assert "insufficient storage resources available" in log
    finally:
        await server.astop()


def test_tenant_limits_are_checked_and_kept_in_the_setup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="streams"):
        TenantLimits(streams=0)
    with pytest.raises(ValueError, match="not written"):
        write_secure_setup(tmp_path / "a", ["acme"], tenant_limits={"initech": TenantLimits()})
    from foundation.security import load_secure_setup

    limits = TenantLimits(streams=20)
    setup = write_secure_setup(tmp_path / "b", ["acme"], tenant_limits=limits)
    assert load_secure_setup(setup.dir).limits == {"acme": limits}
