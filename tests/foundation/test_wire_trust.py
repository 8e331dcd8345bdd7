"""Nothing from another process is trusted: senders, wire fields, sizes, back-pressure.

Each test is one way a careless or hostile client broke a guarantee before: a client-only node
downgrading ``at_least_once`` casts, an ``fdn-meta`` header moving an inbox agent's committed
position, a forged ``handoff`` stamp poisoning the leader term, garbage on the node op subjects
and in the registry, oversize calls, casts, replies and states, and one slow agent blocking
its node's dispatcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import orjson
import pytest
from nats.aio.client import Client as NatsClient

from foundation import _wire as wire
from foundation._errors import CorruptRecordError, InvalidRequestError
from foundation._node import Node
from foundation.failover.failover import LEADER_KEY, TERM_KEY
from foundation.messaging.envelope import META_HEADER, decode_reply, encode_request
from foundation.messaging.inbox import INBOX_STREAM
from foundation.testing import NatsServer
from jido import AgentNotFoundError, JidoError, PayloadTooLargeError, Signal, StoreError
from tests.foundation.apps import (
    AGENTS,
    BigCounter,
    ClusteredCounter,
    DurableCounter,
    SlowCounter,
)
from tests.foundation.conftest import Connect, eventually

pytestmark = pytest.mark.nats

#: Error types a node may answer to a malformed request (never an untyped execution error).
TYPED = {"invalid_request", "signal_error", "invalid_key", "validation_error", "not_owner"}


def sig(kind: str = "counter.add", **data: object) -> Signal:
    return Signal(type=kind, source="/test", data=data)


@pytest.fixture
async def nodes(nats_server: NatsServer) -> AsyncIterator[list[Node]]:
    """Two hosting nodes (failover off) and a client-only node that hosts no agent type."""
    group = [
        Node(nats=nats_server.url, name="n0", agents=AGENTS, failover=False, call_timeout=30.0),
        Node(nats=nats_server.url, name="n1", agents=AGENTS, failover=False),
        Node(nats=nats_server.url, name="client", agents=[], failover=False),
    ]
    try:
        await asyncio.gather(*(n.start() for n in group))
        for n in group:
            await n.membership.wait_members([m.id for m in group])
        yield group
    finally:
        await asyncio.gather(*(n.stop() for n in group), return_exceptions=True)


async def _raw(nats_connect: Connect, nats_server: NatsServer) -> NatsClient:
    return await nats_connect(nats_server)


# -- 1. the delivery mode is the agent's, whoever sends ------------------------------------------


async def test_cast_from_a_client_only_node_goes_through_the_inbox(
    nodes: list[Node], nats_connect: Connect, nats_server: NatsServer
) -> None:
    n0, _, client = nodes
    await n0.spawn(DurableCounter, id="dur-1", node="n0")
    record = await client.registry.lookup("dur-1", consistent=True)
    assert record is not None and record.delivery == "at_least_once"
    js = (await _raw(nats_connect, nats_server)).jetstream()
    before = (await js.stream_info(INBOX_STREAM)).state.last_seq
    for _ in range(5):
        await client.ref("dur-1").cast(sig())  # returns once JetStream holds it
    after = (await js.stream_info(INBOX_STREAM)).state.last_seq
    assert after == before + 5

    async def applied() -> bool:
        assert (await client.ref("dur-1").state()).count == 5
        return True

    await eventually(applied)


# -- 4. wire fields --------------------------------------------------------------------------------


async def test_reserved_meta_is_refused_and_moves_nothing(
    nodes: list[Node], nats_connect: Connect, nats_server: NatsServer
) -> None:
    n0, n1, client = nodes
    await n0.spawn(DurableCounter, id="dur-meta", node="n0")
    nc = await _raw(nats_connect, nats_server)
    subject = n0.subjects.agent("dur-meta")
    msg = await nc.request(
        subject,
        orjson.dumps(sig().to_dict()),
        headers={META_HEADER: orjson.dumps({"stream_seq": 1e9}).decode()},
        timeout=10,
    )
    with pytest.raises(InvalidRequestError) as info:
        decode_reply(msg.data)
    assert info.value.details["key"] == "stream_seq"
    for node in (n0, n1, client):  # local and remote refs refuse it before sending
        with pytest.raises(InvalidRequestError):
            await node.ref("dur-meta").call(sig(), meta={"stream_seq": 10**9})
        with pytest.raises(InvalidRequestError):
            await node.ref("dur-meta").cast(sig(), meta={"fdn.term": 5})
    for _ in range(5):
        await client.ref("dur-meta").cast(sig())

    async def all_applied() -> bool:
        assert (await client.ref("dur-meta").state()).count == 5
        return True

    await eventually(all_applied)


@pytest.mark.parametrize(
    "op", ["call", "cast", "casts", "state", "start", "stop", "handoff", "nope"]
)
async def test_garbage_on_node_ops_gets_typed_errors(
    nodes: list[Node], nats_connect: Connect, nats_server: NatsServer, op: str
) -> None:
    n0 = nodes[0]
    await n0.spawn(ClusteredCounter, id="target", node="n0")
    nc = await _raw(nats_connect, nats_server)
    deep = b'{"a":"target","s":{"specversion":"1.0","data":' + b"[" * 50_000 + b"]" * 50_000
    bodies = [
        b"not json",
        b"[1, 2]",
        b'{"a": 5}',
        b'{"a": "bad id!"}',
        b'{"a": "target", "t": "abc"}',
        b'{"a": "target", "t": 1e308}',
        b'{"a": "target", "t": -1}',
        b'{"a": "target", "s": 7}',
        b'{"a": "target", "s": {"type": 5}}',
        b'{"a": "target", "m": [1]}',
        b'{"a": "target", "m": {"stream_seq": 1}}',
        deep + b"}}",
        b"[" * 100_000,
    ]
    subject = n0.subjects.node("n0", op)
    for body in bodies:
        if op in ("cast", "casts"):
            await nc.publish(subject, body)  # no reply: it must not break the node
            continue
        msg = await nc.request(subject, body, timeout=10)
        with pytest.raises(JidoError) as info:
            decode_reply(msg.data)
        err = info.value
        assert err.type in TYPED | {"cluster_error"}, (body[:60], err.type, err.message)
        for untyped in ("TypeError", "ValueError", "RecursionError", "KeyError"):
            assert untyped not in err.message, (body[:60], err.message)
    if op in ("start", "handoff"):
        bad = b'{"a": "target", "epoch": "zz", "state": 3, "fresh": 1, "to": 9, "stamp": "x"}'
        msg = await nc.request(subject, bad, timeout=10)
        with pytest.raises(InvalidRequestError):
            decode_reply(msg.data)
    # the node still serves
    pong = await nc.request(n0.subjects.node("n0", "ping"), b"{}", timeout=10)
    assert decode_reply(pong.data)["node"] == "n0"
    assert (await nodes[1].ref("target").call(sig()))["count"] == 1


async def test_a_forged_handoff_is_refused(
    nodes: list[Node], nats_connect: Connect, nats_server: NatsServer
) -> None:
    n0 = nodes[0]
    await n0.spawn(ClusteredCounter, id="held", node="n0")
    before = await n0.registry.lookup("held", consistent=True)
    nc = await _raw(nats_connect, nats_server)
    for extra in (
        {"to": "ghost", "stamp": {TERM_KEY: 10**12, LEADER_KEY: "x"}},
        {"to": "n1", "stamp": {TERM_KEY: 10**12, LEADER_KEY: "x"}},
        {"to": "n1"},
        {"to": "n0", "stamp": {TERM_KEY: 1, LEADER_KEY: "n0"}},
    ):
        msg = await nc.request(
            n0.subjects.node("n0", "handoff"), encode_request("held", None, **extra), timeout=10
        )
        with pytest.raises(InvalidRequestError):
            decode_reply(msg.data)
    after = await n0.registry.lookup("held", consistent=True)
    assert after == before
    assert (await nodes[2].ref("held").call(sig()))["count"] == 1


async def test_corrupt_registry_records_are_typed_and_keep_the_last_good_one(
    nodes: list[Node], nats_connect: Connect, nats_server: NatsServer
) -> None:
    n0, n1, client = nodes
    await n0.spawn(ClusteredCounter, id="good", node="n0")
    nc = await _raw(nats_connect, nats_server)
    js = nc.jetstream()
    kv = await js.key_value(wire.REGISTRY_BUCKET)
    await kv.put("default.junk", b"\x00garbage")
    await kv.put("default.shape", orjson.dumps({"agent_id": 5, "node": ["x"]}))
    await kv.put("default.elsewhere", orjson.dumps({"agent_id": "other", "node": "n0"}))
    await kv.put("default.deep", b"[" * 100_000)
    for bad in ("junk", "shape", "elsewhere", "deep"):
        with pytest.raises(CorruptRecordError):
            await client.registry.lookup(bad, consistent=True)
        with pytest.raises((CorruptRecordError, AgentNotFoundError)):
            await client.ref(bad).call(sig())
    # garbage over a live agent's key: nodes keep the last valid record, the agent keeps serving
    await kv.put("default.good", b"{not a record")
    await eventually(lambda: _seen_revision(client, "default.good"))
    assert (await client.ref("good").call(sig()))["count"] == 1
    assert await client.registry.scan() == []  # every stored value is garbage now
    with pytest.raises(CorruptRecordError):
        await n1.registry.lookup("good", consistent=True)


async def _seen_revision(node: Node, key: str) -> bool:
    # the watch has delivered every write so far (the garbage among them)
    kv = await node.nc.jetstream().key_value(wire.REGISTRY_BUCKET)
    entry = await kv.get(key)
    assert node.registry.synced_revision >= entry.revision
    return True


# -- 5. sizes --------------------------------------------------------------------------------------


async def test_oversize_calls_casts_replies_and_states_fail_typed(
    nodes: list[Node], nats_connect: Connect, nats_server: NatsServer
) -> None:
    n0, n1, client = nodes
    await n0.spawn(BigCounter, id="big", node="n0")
    await n0.spawn(DurableCounter, id="dur-big", node="n0")
    limit = client.nc.max_payload
    for size in (limit, 10 * limit):
        with pytest.raises(PayloadTooLargeError) as info:
            await client.ref("big").call(sig("counter.echo", blob="x" * size))
        assert info.value.details["limit"] == limit and info.value.details["size"] > limit
        with pytest.raises(PayloadTooLargeError):
            await client.ref("big").cast(sig("counter.echo", blob="x" * size))
    with pytest.raises(PayloadTooLargeError):
        await client.ref("dur-big").cast(sig(blob="x" * 2 * limit))
    # a reply too large for the wire: a typed error that says the command was applied
    with pytest.raises(PayloadTooLargeError) as reply_info:
        await client.ref("big").call(sig("counter.blob", size=limit + 10))
    assert reply_info.value.details["applied"] is True
    assert (await client.ref("big").state()).count == 1
    nc = await _raw(nats_connect, nats_server)
    msg = await nc.request(
        n0.subjects.agent("big"),
        orjson.dumps(sig("counter.blob", size=limit + 10).to_dict()),
        timeout=10,
    )
    with pytest.raises(PayloadTooLargeError):
        decode_reply(msg.data)
    # a state too large for the state bucket: the error names the limit
    with pytest.raises(StoreError) as state_info:
        await n1.ref("big").call(sig("counter.grow", size=limit + 10))
    assert "max_payload" in state_info.value.message
    assert "unreachable" not in state_info.value.message
    assert (await client.ref("big").state()).count == 2


# -- 3. head-of-line blocking ----------------------------------------------------------------


async def test_a_slow_agent_never_blocks_its_node(
    nodes: list[Node], nats_connect: Connect, nats_server: NatsServer
) -> None:
    n0, _, client = nodes  # n0's call timeout is 30 s: the old code waited that long
    await n0.spawn(SlowCounter, id="slow", node="n0")
    await n0.spawn(ClusteredCounter, id="fast", node="n0")
    flood = 200
    for _ in range(flood):
        await client.ref("slow").cast(sig("counter.slow", seconds=0.01))
    nc = await _raw(nats_connect, nats_server)
    # the same subscription as the flood: answered at once, not after the slow agent
    pong = await nc.request(n0.subjects.node("n0", "ping"), b"{}", timeout=5)
    assert decode_reply(pong.data)["node"] == "n0"
    assert (await client.ref("fast").call(sig(), timeout=5))["count"] == 1

    # a call sent after the casts is applied after them (it waits behind the backlog)
    out = await client.ref("slow").call(sig("counter.slow", seconds=0), timeout=60)
    assert out["count"] == flood + 1
    stats = n0.statistics()
    assert stats.casts_refused == 0 and stats.casts_backlogged == 0


async def test_a_full_backlog_refuses_casts_and_counts_them(nodes: list[Node]) -> None:
    n0, _, client = nodes
    await n0.spawn(SlowCounter, id="slow-2", node="n0")
    assert n0.agent_ops is not None
    n0.agent_ops.backlog.limit = 10  # a small backlog, so the refusal path runs
    for _ in range(120):
        await client.ref("slow-2").cast(sig("counter.slow", seconds=0.02))

    async def refused() -> bool:
        assert n0.statistics().casts_refused > 0
        return True

    await eventually(refused)

    async def settled() -> bool:
        stats = n0.statistics()
        assert stats.casts_backlogged == 0
        count = (await client.ref("slow-2").state(timeout=5)).count
        assert count + stats.casts_refused == 120
        return True

    await eventually(settled, timeout=60)


def test_registry_record_decode_is_typed() -> None:
    from foundation.registry.registry import RegistryRecord

    with pytest.raises(CorruptRecordError):
        RegistryRecord.decode(b"[" * 100_000, 1, "default.x")
    with pytest.raises(CorruptRecordError):
        RegistryRecord.decode(msgspec.json.encode({"agent_id": "x", "node": "a b"}), 1)
    good = RegistryRecord.decode(msgspec.json.encode({"agent_id": "x", "node": "n"}), 3)
    assert good.epoch == 3 and good.delivery == ""
    with pytest.raises(CorruptRecordError):  # a record filed under another key
        RegistryRecord.decode(msgspec.json.encode({"agent_id": "x", "node": "n"}), 1, "t.y")
