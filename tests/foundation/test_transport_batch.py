"""Batched cross-node casts: the ``casts`` codec, order, back-pressure and flush on stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, Field

from foundation import Clustered
from foundation._node import Node
from foundation.membership.membership import Membership
from foundation.messaging.envelope import (
    CAST_BATCH_BYTES,
    Request,
    decode_cast_batch,
    encode_cast,
    encode_cast_batch,
)
from foundation.testing import NatsServer
from jido import Action, ActionContext, Agent, MailboxFullError, Signal, SignalError
from tests.foundation.conftest import eventually


class SeenState(BaseModel):
    """The numbers an agent received, in the order it applied them."""

    seen: list[int] = Field(default_factory=list)


class Note(Action):
    """Append ``n`` to the list of seen numbers."""

    name = "note"

    class Params(BaseModel):
        n: int
        pad: str = ""

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"seen": [*ctx.state.seen, params.n]}


class Recorder(Clustered, Agent, placement="local"):
    """Records the order in which numbered signals arrive."""

    state_model = SeenState
    actions = [Note]
    routes = [("seq.note", Note)]


class TinyMailbox(Clustered, Agent, placement="local"):
    """A recorder whose mailbox holds two signals (the sender must be slowed, not dropped)."""

    state_model = SeenState
    actions = [Note]
    routes = [("seq.note", Note)]
    mailbox_size = 2


def note(n: int, pad: str = "") -> Signal:
    return Signal(type="seq.note", source="/test", data={"n": n, "pad": pad})


def test_cast_batch_roundtrip_keeps_order_meta_and_trace() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    sigs = [note(i) for i in range(5)]
    sigs[2] = Signal(type="seq.note", source="/t", data={"n": 2}, traceparent=tp)
    items = [encode_cast(f"a{i}", s, {"k": i} if i % 2 else None) for i, s in enumerate(sigs)]
    out = decode_cast_batch(encode_cast_batch(items))
    assert all(isinstance(r, Request) for r in out)
    reqs = [r for r in out if isinstance(r, Request)]
    assert [r.agent_id for r in reqs] == [f"a{i}" for i in range(5)]
    assert [r.signal for r in reqs] == sigs
    assert reqs[2].signal is not None and reqs[2].signal.traceparent == tp
    assert [r.meta for r in reqs] == [None, {"k": 1}, None, {"k": 3}, None]
    assert orjson.loads(encode_cast_batch([])) == []


def test_bad_item_is_an_error_in_place_and_others_are_kept() -> None:
    good = encode_cast("a", note(1))
    out = decode_cast_batch(encode_cast_batch([good, b'{"s": {}}', b'{"a": "b", "s": 7}', good]))
    assert isinstance(out[0], Request) and isinstance(out[3], Request)
    assert isinstance(out[1], SignalError) and isinstance(out[2], SignalError)
    with pytest.raises(SignalError):
        decode_cast_batch(b"not json")
    with pytest.raises(SignalError):
        decode_cast_batch(b'{"a": "x"}')


@pytest.fixture
async def pair(nats_server: NatsServer) -> AsyncIterator[tuple[Node, Node]]:
    agents: list[type[Agent]] = [Recorder, TinyMailbox]
    a = Node(nats=nats_server.url, name="ba", agents=agents, failover=False)
    b = Node(nats=nats_server.url, name="bb", agents=agents, failover=False)
    try:
        await asyncio.gather(a.start(), b.start())
        for n in (a, b):
            await n.membership.wait_members(["ba", "bb"])
        yield a, b
    finally:
        await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)


@pytest.mark.nats
async def test_casts_are_batched_and_applied_in_order(
    pair: tuple[Node, Node], nats_server: NatsServer, nats_connect: Any
) -> None:
    a, b = pair
    await b.spawn(Recorder, id="rec-1")
    spy = await nats_connect(nats_server)
    sizes: list[int] = []

    async def count(msg: Any) -> None:
        sizes.append(len(orjson.loads(msg.data)))

    sub = await spy.subscribe("foundation.node.bb.casts", cb=count)
    await spy.flush()
    ref = a.ref("rec-1")
    big = "x" * (CAST_BATCH_BYTES + 10)  # travels alone, between two batches
    n = 1000  # below the default mailbox size: the call then never finds the mailbox full
    for i in range(n):
        await ref.cast(note(i, big if i == 700 else ""))
    # the call is sent after the pending casts, so it is applied after all of them
    out = await ref.call(note(n), timeout=30)
    assert out["seen"] == list(range(n + 1))
    await spy.flush()
    await sub.unsubscribe()
    # batched: far fewer messages than casts, and every cast but the big one inside a batch
    assert len(sizes) < n // 10
    assert sum(sizes) == n - 1


@pytest.mark.nats
async def test_full_mailbox_slows_the_batch_instead_of_dropping(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await b.spawn(TinyMailbox, id="tiny-1")
    ref = a.ref("tiny-1")
    for i in range(300):
        await ref.cast(note(i))
    for _ in range(3000):  # a call finding the two-slot mailbox full is refused: back off
        try:
            out = await ref.call(note(300), timeout=30)
            break
        except MailboxFullError:
            await asyncio.sleep(0.01)
    assert out["seen"] == list(range(301))


@pytest.mark.nats
async def test_pending_casts_go_out_when_the_sender_stops(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    await b.spawn(Recorder, id="rec-2")
    ref = a.ref("rec-2")
    for i in range(50):
        await ref.cast(note(i))
    assert a.client._cast_out  # still queued: nothing has let the flush run yet
    await a.stop()  # flushes the casts, then drains the connection (the server has them)
    probe = b.ref("rec-2")
    for _ in range(3000):  # wait for the condition: all 50 applied (bounded: 30 s)
        state = await probe.state()
        if len(state.seen) >= 50:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    assert state.seen == list(range(50))  # type: ignore[attr-defined]


@pytest.mark.nats
async def test_a_node_without_the_casts_feature_gets_single_casts(
    pair: tuple[Node, Node], nats_server: NatsServer, nats_connect: Any
) -> None:
    # A node of an older version publishes a record without ``wire_features``: it only serves
    # ``cast``, so a newer sender must not batch towards it (mixed-version clusters).
    a, _ = pair
    assert "casts" in a.membership.record.wire_features
    old_nc = await nats_connect(nats_server)
    ops: list[str] = []
    bodies: list[Request | SignalError] = []

    async def serve(msg: Any) -> None:
        ops.append(msg.subject.rsplit(".", 1)[-1])
        if ops[-1] == "cast":
            bodies.extend(decode_cast_batch(b"[" + msg.data + b"]"))

    await old_nc.subscribe("foundation.node.old.>", cb=serve)
    async with Membership(old_nc, "old") as old:
        assert old.record.wire_features == ()
        await a.membership.wait_members(["ba", "bb", "old"])
        await a.registry.claim("legacy-1", node="old", type="Recorder")
        ref = a.ref("legacy-1")
        for i in range(50):
            await ref.cast(note(i))
        await a.nc.flush()
        await old_nc.flush()

        async def all_arrived() -> bool:
            return len(ops) >= 50

        await eventually(all_arrived)
    assert set(ops) == {"cast"}
    assert [r.signal.data["n"] for r in bodies if isinstance(r, Request) and r.signal] == list(
        range(50)
    )
