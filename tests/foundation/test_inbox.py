"""AgentInbox against a real nats-server: ordered at-least-once delivery to one agent, and the
"resume after committed sequence N" rule that makes it effectively-once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from foundation.messaging.cluster_bus import ClusterBus, ClusterBusError
from foundation.messaging.inbox import (
    INBOX_STREAM,
    AgentInbox,
    ensure_inbox_stream,
    inbox_consumer_name,
    inbox_subject,
    send_to_inbox,
)
from foundation.testing import NatsServer
from jido import FencedError, Signal

pytestmark = pytest.mark.nats

Connect = Callable[..., Awaitable[NatsClient]]


async def wait_until(pred: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``pred`` until it holds (counters inside the inbox offer no event to await)."""
    async with asyncio.timeout(within):
        while not pred():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@dataclass
class Store:
    """Stands for the agent's state record: state and last applied seq in one atomic write."""

    applied: list[str] = field(default_factory=list)
    seq: int = 0
    writes: int = 0

    def commit(self, sig: Signal, seq: int) -> None:
        self.applied = [*self.applied, sig.id]
        self.seq = seq
        self.writes += 1


@pytest.fixture
async def js(nats_server: NatsServer, nats_connect: Connect) -> AsyncIterator[JetStreamContext]:
    nc = await nats_connect(nats_server)
    ctx = nc.jetstream()
    await ensure_inbox_stream(ctx)
    yield ctx


def sigs(n: int, prefix: str = "acct.deposit") -> list[Signal]:
    return [Signal(type=prefix, source="/test", data={"n": i}) for i in range(n)]


async def test_subject_and_consumer_names() -> None:
    assert inbox_subject("acc-1") == "foundation.inbox.default.acc-1"
    assert inbox_subject("a.b", tenant="t1") == "foundation.inbox.t1.a.b"
    name = inbox_consumer_name("a.b", "t1")
    assert "." not in name and name.startswith("inbox_t1_a_b_")
    assert inbox_consumer_name("a.b", "t1") != inbox_consumer_name("a_b", "t1")
    for bad_id, bad_tenant in (("a b", "t"), ("a.*", "t"), ("a", "t.x"), ("", "t")):
        with pytest.raises(ClusterBusError):
            inbox_subject(bad_id, bad_tenant)


async def test_delivers_in_order_and_acks(js: JetStreamContext) -> None:
    store = Store()

    async def deliver(sig: Signal, seq: int) -> None:
        store.commit(sig, seq)

    sent = sigs(200)
    seqs = await send_to_inbox(js, "acc-1", *sent)
    assert seqs == sorted(seqs) and len(set(seqs)) == 200
    inbox = AgentInbox(js, "acc-1", deliver, batch=32)
    await inbox.start()
    async with asyncio.timeout(10):
        await inbox.wait_applied(seqs[-1])
    assert store.applied == [s.id for s in sent]
    assert inbox.statistics().delivered == 200
    await inbox.stop()
    # All acked: the work queue removes them (acks are applied asynchronously by the server).
    async with asyncio.timeout(10):
        while await _stored(js, inbox.subject):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def _stored(js: JetStreamContext, subject: str) -> int:
    info = await js.stream_info(INBOX_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_resend_of_a_signal_id_is_applied_once(js: JetStreamContext) -> None:
    store = Store()

    async def deliver(sig: Signal, seq: int) -> None:
        store.commit(sig, seq)

    one, two = sigs(2)
    first = await send_to_inbox(js, "acc-2", one)
    again = await send_to_inbox(js, "acc-2", one)  # sender retry after a lost ack
    last = await send_to_inbox(js, "acc-2", two)
    assert first == again
    inbox = AgentInbox(js, "acc-2", deliver)
    await inbox.start()
    async with asyncio.timeout(10):
        await inbox.wait_applied(last[0])
    assert store.applied == [one.id, two.id]
    await inbox.stop()


class Crash(Exception):
    """Stands for the process dying right after its commit, before the ack."""


async def test_resume_after_committed_seq_applies_nothing_twice(
    nats_server: NatsServer, nats_connect: Connect, js: JetStreamContext
) -> None:
    store = Store()
    crash_at = 37

    async def deliver_then_die(sig: Signal, seq: int) -> None:
        store.commit(sig, seq)
        if len(store.applied) == crash_at:
            raise Crash  # committed, never acked

    first_batch = sigs(60)
    await send_to_inbox(js, "acc-3", *first_batch)
    stopped: list[BaseException] = []
    owner_a = AgentInbox(
        js, "acc-3", deliver_then_die, batch=16, stop_on=(Crash,), on_stopped=stopped.append
    )
    await owner_a.start()
    await wait_until(lambda: not owner_a.running)
    assert isinstance(owner_a.error, Crash) and len(stopped) == 1
    assert len(store.applied) == crash_at
    await owner_a.stop()

    # More signals arrive while the agent fails over.
    second_batch = sigs(40, "acct.withdraw")
    last = await send_to_inbox(js, "acc-3", *second_batch)

    # The new owner, on another connection, resumes after the committed sequence.
    nc_b = await nats_connect(nats_server)
    js_b = nc_b.jetstream()

    async def deliver(sig: Signal, seq: int) -> None:
        assert seq > store.seq
        store.commit(sig, seq)

    owner_b = AgentInbox(js_b, "acc-3", deliver, after_seq=store.seq, batch=16)
    await owner_b.start()
    async with asyncio.timeout(10):
        await owner_b.wait_applied(last[-1])
    expected = [s.id for s in first_batch + second_batch]
    assert store.applied == expected  # each exactly once, in order
    assert owner_b.statistics().skipped == 1  # the committed-but-unacked one
    await owner_b.stop()


async def test_failed_deliver_is_retried_in_place_keeping_order(js: JetStreamContext) -> None:
    store = Store()
    failures = {"left": 2}

    async def deliver(sig: Signal, seq: int) -> None:
        if sig.data["n"] == 3 and failures["left"]:
            failures["left"] -= 1
            raise OSError("store briefly unavailable")
        store.commit(sig, seq)

    sent = sigs(8)
    seqs = await send_to_inbox(js, "acc-4", *sent)
    inbox = AgentInbox(js, "acc-4", deliver, retry_backoff=(0.01,))
    await inbox.start()
    async with asyncio.timeout(10):
        await inbox.wait_applied(seqs[-1])
    assert store.applied == [s.id for s in sent]
    assert inbox.statistics().retries == 2
    await inbox.stop()


async def test_dead_letter_after_max_attempts_and_redrive(
    js: JetStreamContext, nats_server: NatsServer, nats_connect: Connect
) -> None:
    store = Store()
    broken = {"on": True}

    async def deliver(sig: Signal, seq: int) -> None:
        if broken["on"] and sig.data["n"] == 1:
            raise ValueError("bad amount")
        store.commit(sig, seq)

    sent = sigs(3)
    seqs = await send_to_inbox(js, "acc-5", *sent)
    inbox = AgentInbox(js, "acc-5", deliver, max_attempts=2, retry_backoff=(0.01,))
    await inbox.start()
    async with asyncio.timeout(10):
        await inbox.wait_applied(seqs[-1])
    assert store.applied == [sent[0].id, sent[2].id]
    [letter] = await inbox.dead_letters()
    assert letter.signal == sent[1] and letter.attempts == 2
    assert "ValueError: bad amount" in letter.reason

    broken["on"] = False
    bus = ClusterBus(await nats_connect(nats_server))
    assert [d.seq for d in await bus.dead_letters(kind="inbox")] == [letter.seq]
    assert await bus.redrive([letter]) == 1
    await wait_until(lambda: len(store.applied) == 3)
    assert store.applied == [sent[0].id, sent[2].id, sent[1].id]
    assert await inbox.dead_letters() == []
    await inbox.stop()


async def test_fenced_deliver_stops_the_inbox_without_ack(js: JetStreamContext) -> None:
    async def fenced(sig: Signal, seq: int) -> None:
        raise FencedError("another owner holds a newer epoch")

    await send_to_inbox(js, "acc-6", *sigs(1))
    inbox = AgentInbox(js, "acc-6", fenced)
    await inbox.start()
    await wait_until(lambda: not inbox.running)
    assert isinstance(inbox.error, FencedError)
    await inbox.stop()
    assert await _stored(js, inbox.subject) == 1  # still there for the next owner


async def test_remove_deletes_consumer_and_pending_messages(js: JetStreamContext) -> None:
    started = asyncio.Event()

    async def deliver(sig: Signal, seq: int) -> None:
        started.set()

    inbox = AgentInbox(js, "acc-7", deliver)
    await inbox.start()
    await send_to_inbox(js, "acc-7", *sigs(1))
    async with asyncio.timeout(10):
        await started.wait()
    await inbox.stop()
    await send_to_inbox(js, "acc-7", *sigs(3))
    await inbox.remove()
    names = [c.name for c in await js.consumers_info(INBOX_STREAM)]
    assert inbox.consumer not in names
    assert await _stored(js, inbox.subject) == 0


async def test_idle_inbox_stops_promptly(js: JetStreamContext) -> None:
    async def deliver(sig: Signal, seq: int) -> None:
        raise AssertionError("nothing was sent")

    inbox = AgentInbox(js, "acc-8", deliver, idle_poll=30.0)
    await inbox.start()
    assert inbox.running
    async with asyncio.timeout(5):
        await inbox.stop()
    assert not inbox.running


async def test_transient_failures_are_retried_past_max_attempts_never_dropped(
    js: JetStreamContext,
) -> None:
    store = Store()
    outage = {"left": 6}

    async def deliver(sig: Signal, seq: int) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise TimeoutError("state store briefly unreachable")
        store.commit(sig, seq)

    sent = sigs(3)
    seqs = await send_to_inbox(js, "acc-9", *sent)
    inbox = AgentInbox(js, "acc-9", deliver, max_attempts=2, retry_backoff=(0.01,))
    await inbox.start()
    async with asyncio.timeout(10):
        await inbox.wait_applied(seqs[-1])
    assert store.applied == [s.id for s in sent]
    assert inbox.statistics().dead_lettered == 0 and inbox.statistics().retries == 6
    assert await inbox.dead_letters() == []
    await inbox.stop()
