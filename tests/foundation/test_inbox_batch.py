"""AgentInbox batch delivery against a real nats-server: consecutive messages in stream order,
one commit per batch, acks only for the committed prefix, and the skip rule across owners."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from foundation.messaging.cluster_bus import ClusterBusError
from foundation.messaging.inbox import (
    INBOX_STREAM,
    AgentInbox,
    Delivered,
    ensure_inbox_stream,
    send_to_inbox,
)
from foundation.testing import NatsServer
from jido import FencedError, Signal

pytestmark = pytest.mark.nats

Connect = Callable[..., Awaitable[NatsClient]]
Items = Sequence[tuple[Signal, int]]


@dataclass
class Store:
    """The agent's state record: applied ids and the last applied seq, written together."""

    applied: list[str] = field(default_factory=list)
    seq: int = 0
    commits: int = 0

    def commit(self, items: Items) -> None:
        self.applied = [*self.applied, *(sig.id for sig, _ in items)]
        self.seq = items[-1][1]
        self.commits += 1


@pytest.fixture
async def js(nats_server: NatsServer, nats_connect: Connect) -> AsyncIterator[JetStreamContext]:
    nc = await nats_connect(nats_server)
    ctx = nc.jetstream()
    await ensure_inbox_stream(ctx)
    yield ctx


def sigs(n: int, prefix: str = "acct.deposit") -> list[Signal]:
    return [Signal(type=prefix, source="/test", data={"n": i}) for i in range(n)]


async def stored(js: JetStreamContext, subject: str) -> int:
    info = await js.stream_info(INBOX_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def wait_until(pred: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``pred`` (inbox counters offer no event to await)."""
    async with asyncio.timeout(within):
        while not pred():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_batches_are_consecutive_in_order_and_capped(js: JetStreamContext) -> None:
    store = Store()
    calls: list[list[int]] = []

    async def deliver_batch(items: Items) -> Delivered:
        seqs = [seq for _, seq in items]
        assert seqs == sorted(seqs) and seqs[0] > store.seq
        calls.append(seqs)
        store.commit(items)
        return Delivered(len(items))

    sent = sigs(100)
    seqs = await send_to_inbox(js, "b-1", *sent)
    inbox = AgentInbox(js, "b-1", deliver_batch=deliver_batch, batch=16, idle_poll=30)
    await inbox.start()
    async with asyncio.timeout(10):
        await inbox.wait_applied(seqs[-1])
    assert store.applied == [s.id for s in sent]  # order kept across batches
    assert [s for call in calls for s in call] == seqs
    assert all(len(c) <= 16 for c in calls) and len(calls) >= 100 // 16
    stats = inbox.statistics()
    assert stats.delivered == 100 and stats.batches == len(calls) == store.commits
    # A lone signal on an idle inbox is delivered alone, without waiting for a batch to fill
    # (the poll is long: waiting for more would hold it for 30 s).
    one = await send_to_inbox(js, "b-1", *sigs(1))
    async with asyncio.timeout(10):
        await inbox.wait_applied(one[0])
    assert calls[-1] == one
    await inbox.stop()
    await wait_until_empty(js, inbox.subject)


async def wait_until_empty(js: JetStreamContext, subject: str) -> None:
    async with asyncio.timeout(10):
        while await stored(js, subject):  # noqa: ASYNC110 (server-side acks are asynchronous)
            await asyncio.sleep(0.01)


async def test_process_dying_before_the_batch_commit_reapplies_the_whole_batch(
    nats_server: NatsServer, nats_connect: Connect, js: JetStreamContext
) -> None:
    """Owner A applies a batch in memory and dies before committing it: nothing of it was
    committed or acked, so owner B (resuming after the committed seq) applies all of it once."""
    store = Store()
    in_memory: list[str] = []

    class Died(Exception):
        """Stands for the process dying between applying and committing."""

    async def apply_then_die(items: Items) -> Delivered:
        in_memory.extend(sig.id for sig, _ in items)  # applied, not committed
        if store.commits == 2:
            raise Died
        store.commit(items)
        return Delivered(len(items))

    sent = sigs(60)
    seqs = await send_to_inbox(js, "b-2", *sent)
    owner_a = AgentInbox(
        js, "b-2", deliver_batch=apply_then_die, batch=16, idle_poll=30, stop_on=(Died,)
    )
    await owner_a.start()
    await wait_until(lambda: not owner_a.running)
    assert isinstance(owner_a.error, Died)
    assert store.applied == [s.id for s in sent[:32]] and len(in_memory) == 48
    await owner_a.stop()
    async with asyncio.timeout(10):  # acks are applied by the server asynchronously
        while await stored(js, owner_a.subject) > 28:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    nc_b = await nats_connect(nats_server)

    async def deliver(items: Items) -> Delivered:
        assert items[0][1] > store.seq
        store.commit(items)
        return Delivered(len(items))

    owner_b = AgentInbox(nc_b.jetstream(), "b-2", deliver_batch=deliver, after_seq=store.seq)
    await owner_b.start()
    async with asyncio.timeout(10):
        await owner_b.wait_applied(seqs[-1])
    assert store.applied == [s.id for s in sent]  # each exactly once, in order
    assert owner_b.statistics().skipped == 0  # the batch A died in had not been committed
    await owner_b.stop()


async def test_committed_but_unacked_batch_is_skipped_by_the_next_owner(
    nats_server: NatsServer, nats_connect: Connect, js: JetStreamContext
) -> None:
    store = Store()

    class Died(Exception):
        """The process died right after its commit, before acking."""

    async def commit_then_die(items: Items) -> Delivered:
        store.commit(items)
        if store.commits == 2:
            raise Died
        return Delivered(len(items))

    sent = sigs(40)
    seqs = await send_to_inbox(js, "b-3", *sent)
    owner_a = AgentInbox(js, "b-3", deliver_batch=commit_then_die, batch=16, stop_on=(Died,))
    await owner_a.start()
    await wait_until(lambda: not owner_a.running)
    await owner_a.stop()
    assert store.applied == [s.id for s in sent[:32]]

    nc_b = await nats_connect(nats_server)

    async def deliver(items: Items) -> Delivered:
        assert items[0][1] > store.seq
        store.commit(items)
        return Delivered(len(items))

    owner_b = AgentInbox(nc_b.jetstream(), "b-3", deliver_batch=deliver, after_seq=store.seq)
    await owner_b.start()
    async with asyncio.timeout(10):
        await owner_b.wait_applied(seqs[-1])
    assert store.applied == [s.id for s in sent]
    assert owner_b.statistics().skipped == 16  # committed by A, never acked
    await owner_b.stop()


async def test_fenced_commit_acks_nothing_and_stops(js: JetStreamContext) -> None:
    stopped: list[BaseException] = []

    async def fenced(items: Items) -> Delivered:
        raise FencedError("a newer owner holds the state key")

    await send_to_inbox(js, "b-4", *sigs(10))
    inbox = AgentInbox(js, "b-4", deliver_batch=fenced, on_stopped=stopped.append)
    await inbox.start()
    await wait_until(lambda: not inbox.running)
    assert isinstance(inbox.error, FencedError) and len(stopped) == 1
    assert inbox.statistics().delivered == 0 and inbox.applied_seq == 0
    await inbox.stop()
    assert await stored(js, inbox.subject) == 10  # all of them wait for the next owner


async def test_partial_batch_acks_the_prefix_and_dead_letters_the_failing_signal(
    js: JetStreamContext,
) -> None:
    """A command error on one signal is that signal's outcome: the prefix is committed, the
    failing signal is retried in place then dead-lettered, the rest follows in order."""
    store = Store()
    tries: list[int] = []

    async def deliver(items: Items) -> Delivered:
        for i, (sig, _seq) in enumerate(items):
            if sig.data["n"] == 5:
                if i:
                    store.commit(items[:i])
                tries.append(i)
                return Delivered(i, ValueError("bad amount"))
        store.commit(items)
        return Delivered(len(items))

    sent = sigs(12)
    seqs = await send_to_inbox(js, "b-5", *sent)
    inbox = AgentInbox(js, "b-5", deliver_batch=deliver, max_attempts=3, retry_backoff=(0.01,))
    await inbox.start()
    async with asyncio.timeout(10):
        await inbox.wait_applied(seqs[-1])
    assert store.applied == [s.id for s in sent if s.data["n"] != 5]
    assert tries == [5, 0, 0]  # first inside a batch, then retried in place at its head
    [letter] = await inbox.dead_letters()
    assert letter.signal == sent[5] and letter.attempts == 3
    stats = inbox.statistics()
    assert stats.dead_lettered == 1 and stats.retries == 2 and stats.delivered == 11
    await inbox.stop()


async def test_transient_batch_failure_is_retried_until_it_passes(js: JetStreamContext) -> None:
    store = Store()
    outage = {"left": 4}

    async def deliver(items: Items) -> Delivered:
        if outage["left"]:
            outage["left"] -= 1
            raise TimeoutError("state store unreachable")  # nothing committed
        store.commit(items)
        return Delivered(len(items))

    sent = sigs(20)
    seqs = await send_to_inbox(js, "b-6", *sent)
    inbox = AgentInbox(js, "b-6", deliver_batch=deliver, max_attempts=2, retry_backoff=(0.01,))
    await inbox.start()
    async with asyncio.timeout(10):
        await inbox.wait_applied(seqs[-1])
    assert store.applied == [s.id for s in sent]
    assert inbox.statistics().dead_lettered == 0
    await inbox.stop()


async def test_exactly_one_delivery_callable_is_required(js: JetStreamContext) -> None:
    async def one(sig: Signal, seq: int) -> None:
        return None

    async def many(items: Items) -> Delivered:
        return Delivered(len(items))

    with pytest.raises(ClusterBusError):
        AgentInbox(js, "b-7")
    with pytest.raises(ClusterBusError):
        AgentInbox(js, "b-7", one, deliver_batch=many)
    with pytest.raises(ClusterBusError):
        AgentInbox(js, "b-7", deliver_batch=many, batch=0)
