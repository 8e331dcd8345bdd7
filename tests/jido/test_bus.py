"""Bus: publish/subscribe, isolation, overflow policies, all-or-nothing, log/replay, middleware."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jido import (
    Bus,
    BusClosedError,
    BusError,
    Decision,
    Journal,
    LoggingMiddleware,
    Middleware,
    PayloadTooLargeError,
    PublishHaltedError,
    Signal,
    SignalError,
    SubscriberOverflowError,
    Subscription,
)
from jido._router import pattern_matches


def sig(t: str = "a.b", **data: Any) -> Signal:
    return Signal(type=t, source="/test", data=data or None)


class Gate:
    """A handler that blocks until released, recording what it got."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.got: list[Signal] = []

    async def __call__(self, s: Signal) -> None:
        self.entered.set()
        await self.release.wait()
        self.got.append(s)


async def test_handler_kinds_and_patterns() -> None:
    async with Bus() as bus:
        sync_got: list[str] = []
        async_got: list[str] = []
        queue: asyncio.Queue[Signal] = asyncio.Queue()

        async def handler(s: Signal) -> None:
            async_got.append(s.type)

        bus.subscribe("order.*", lambda s: sync_got.append(s.type))
        bus.subscribe("order.**", handler)
        bus.subscribe("**", queue)
        await bus.publish(sig("order.created"), sig("order.item.added"), sig("user.x"))
        await bus.drain()
        assert sync_got == ["order.created"]
        assert async_got == ["order.created", "order.item.added"]
        assert [queue.get_nowait().type for _ in range(3)] == [
            "order.created",
            "order.item.added",
            "user.x",
        ]


async def test_callable_object_with_async_call() -> None:
    gate = Gate()
    gate.release.set()
    async with Bus() as bus:
        bus.subscribe("a.b", gate)
        await bus.publish(sig())
        await bus.drain()
    assert len(gate.got) == 1


async def test_order_is_preserved_per_subscriber() -> None:
    async with Bus() as bus:
        got: list[int] = []
        bus.subscribe("n", lambda s: got.append(s.data["i"]))
        for i in range(100):
            await bus.publish(sig("n", i=i))
        await bus.publish(*[sig("n", i=i) for i in range(100, 200)])
        await bus.drain()
        assert got == list(range(200))


async def test_failing_handler_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    async with Bus() as bus:
        good: list[Signal] = []

        def bad(s: Signal) -> None:
            raise ValueError("boom")

        bad_sub = bus.subscribe("**", bad)
        bus.subscribe("**", good.append)
        with caplog.at_level(logging.WARNING, logger="jido.bus"):
            await bus.publish(sig(), sig())
            await bus.drain()
        assert len(good) == 2
        stats = bad_sub.statistics()
        assert stats.failed == 2 and stats.delivered == 0
        assert isinstance(bad_sub.last_error, ValueError)
        assert "boom" in caplog.text
        assert bad_sub.active  # still subscribed


async def test_slow_handler_does_not_block_others_drop_oldest() -> None:
    gate = Gate()
    async with Bus() as bus:
        slow = bus.subscribe("**", gate, queue_size=2)  # default drop_oldest
        fast: list[int] = []
        all_fast = asyncio.Event()

        def quick(s: Signal) -> None:
            fast.append(s.data["i"])
            if len(fast) == 6:
                all_fast.set()

        bus.subscribe("**", quick)
        await bus.publish(sig(i=0))
        await gate.entered.wait()  # the slow handler holds signal 0
        for i in range(1, 6):
            await bus.publish(sig(i=i))
        await all_fast.wait()  # the fast subscriber got everything while the slow one is stuck
        assert gate.got == []
        gate.release.set()
        await bus.drain()
        assert fast == [0, 1, 2, 3, 4, 5]
        assert [s.data["i"] for s in gate.got] == [0, 4, 5]
        assert slow.statistics().dropped == 3


async def test_drop_newest() -> None:
    gate = Gate()
    async with Bus() as bus:
        slow = bus.subscribe("**", gate, queue_size=2, overflow="drop_newest")
        await bus.publish(sig(i=0))
        await gate.entered.wait()
        await bus.publish(*[sig(i=i) for i in range(1, 6)])
        gate.release.set()
        await bus.drain()
        assert [s.data["i"] for s in gate.got] == [0, 1, 2]
        assert slow.statistics().dropped == 3


async def test_error_policy_rejects_whole_publish() -> None:
    gate = Gate()
    async with Bus() as bus:
        others: list[Signal] = []
        strict = bus.subscribe("**", gate, queue_size=1, overflow="error")
        bus.subscribe("**", others.append)
        await bus.publish(sig(i=0))
        await gate.entered.wait()
        await bus.publish(sig(i=1))  # fills the queue
        with pytest.raises(SubscriberOverflowError) as exc:
            await bus.publish(sig(i=2), sig("other.thing"))
        assert exc.value.retryable
        assert exc.value.details["subscription"] == strict.name
        gate.release.set()
        await bus.drain()
        assert [s.data["i"] for s in others if s.data] == [0, 1]  # nothing of the failed batch
        assert all(s.type == "a.b" for s in others)
        assert strict.statistics().rejected == 1
        assert bus.statistics().published == 2


async def test_block_policy_waits_for_room() -> None:
    gate = Gate()
    async with Bus() as bus:
        bus.subscribe("**", gate, queue_size=1, overflow="block")
        await bus.publish(sig(i=0))
        await gate.entered.wait()
        await bus.publish(sig(i=1))
        blocked = asyncio.create_task(bus.publish(sig(i=2)))
        await asyncio.sleep(0)
        assert not blocked.done()
        gate.release.set()
        await blocked
        await bus.drain()
        assert [s.data["i"] for s in gate.got] == [0, 1, 2]


async def test_batch_larger_than_queue_is_rejected_for_block() -> None:
    async with Bus() as bus:
        bus.subscribe("**", lambda s: None, queue_size=2, overflow="block")
        with pytest.raises(SubscriberOverflowError):
            await bus.publish(sig(), sig(), sig())
        assert bus.position == 0


async def test_bad_input_publishes_nothing() -> None:
    async with Bus(max_payload_size=100) as bus:
        got: list[Signal] = []
        bus.subscribe("**", got.append)
        with pytest.raises(PayloadTooLargeError) as exc:
            await bus.publish(sig(x="ok"), sig(x="y" * 200))
        assert exc.value.details["attribute"] == "data"
        with pytest.raises(SignalError):
            await bus.publish(sig(), {"type": "a"})  # type: ignore[arg-type]
        with pytest.raises(SignalError):
            await bus.publish(sig(), Signal(type="a", source="/s", data={"x": object()}))
        await bus.drain()
        assert got == [] and bus.position == 0
        assert bus.statistics().published == 0
        await bus.publish(Signal(type="a", source="/s", data=b"x" * 100))  # at the limit


async def test_subscribe_validation_and_closed_bus() -> None:
    bus = Bus()
    async with bus:
        with pytest.raises(Exception) as exc:
            bus.subscribe("a..b", print)
        assert "empty segment" in str(exc.value)
        with pytest.raises(BusError):
            bus.subscribe("a", "not callable")  # type: ignore[arg-type]
        with pytest.raises(BusError):
            bus.subscribe("a", print, queue_size=0)
        with pytest.raises(BusError):
            bus.subscribe("a", print, overflow="explode")
        sub = bus.subscribe("a", print)
    assert bus.closed and not sub.active
    with pytest.raises(BusClosedError):
        await bus.publish(sig())
    with pytest.raises(BusClosedError):
        bus.subscribe("a", print)
    with pytest.raises(BusError):
        Bus(log_size=-1)


async def test_unsubscribe_stops_delivery() -> None:
    async with Bus() as bus:
        got: list[Signal] = []
        sub = bus.subscribe("**", got.append)
        await bus.publish(sig())
        await bus.drain()
        await sub.unsubscribe()
        await sub.unsubscribe()  # idempotent
        await bus.publish(sig())
        await bus.drain()
        assert len(got) == 1
        assert bus.subscriptions() == []


async def test_unsubscribe_from_inside_handler() -> None:
    async with Bus() as bus:
        got: list[Signal] = []
        holder: list[Subscription] = []

        async def once(s: Signal) -> None:
            got.append(s)
            await holder[0].unsubscribe()

        holder.append(bus.subscribe("**", once))
        await bus.publish(sig(), sig())
        await bus.drain()
        assert len(got) == 1


async def test_match_predicate() -> None:
    async with Bus() as bus:
        got: list[int] = []
        bus.subscribe("n", lambda s: got.append(s.data["i"]), match=lambda s: s.data["i"] % 2 == 0)
        await bus.publish(*[sig("n", i=i) for i in range(6)])
        await bus.drain()
        assert got == [0, 2, 4]


# -- log and replay ---------------------------------------------------------------------------


async def test_replay_by_position_time_pattern_and_bounded_log() -> None:
    async with Bus(log_size=5) as bus:
        positions = await bus.publish(*[sig("a.x", i=i) for i in range(3)])
        assert positions == [1, 2, 3]
        mark = datetime.now(UTC)
        await bus.publish(sig("b.y", i=3), sig("a.z", i=4), sig("a.x", i=5), sig("a.x", i=6))
        st = bus.statistics()
        assert (st.log_first, st.log_last) == (3, 7)
        assert [e.position for e in bus.replay()] == [3, 4, 5, 6, 7]
        assert [e.signal.data["i"] for e in bus.replay("a.*", since=5)] == [4, 5, 6]
        assert [e.signal.data["i"] for e in bus.replay("a.x", since=mark)] == [5, 6]
        assert [e.position for e in bus.replay(since=4, until=6, limit=2)] == [4, 5]
        assert [e.position for e in bus.replay(until=mark)] == [3]
        entry = bus.replay()[0]
        assert entry.time <= datetime.now(UTC)
    async with Bus(log_size=0) as nolog:
        assert await nolog.publish(sig()) == [0]
        with pytest.raises(BusError):
            nolog.replay()


# -- middleware -------------------------------------------------------------------------------


class Recorder(Middleware):
    """Skips 'skip.*', halts 'halt.*' on publish; skips dispatch of 'quiet' to 'picky'."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def before_publish(self, signal: Signal, bus: Bus) -> Decision:
        self.events.append(("publish", signal.type))
        if signal.type.startswith("skip"):
            return Decision.SKIP
        if signal.type.startswith("halt"):
            return Decision.HALT
        return Decision.CONTINUE

    async def before_dispatch(self, signal: Signal, subscription: Subscription) -> Decision:
        self.events.append(("dispatch", subscription.name))
        if signal.type == "quiet" and subscription.name == "picky":
            return Decision.SKIP
        if signal.type == "stop" and subscription.name == "picky":
            return Decision.HALT
        return Decision.CONTINUE

    async def after_dispatch(
        self, signal: Signal, subscription: Subscription, error: BaseException | None
    ) -> None:
        self.events.append(("after", f"{subscription.name}:{type(error).__name__}"))


async def test_middleware_continue_skip_halt() -> None:
    rec = Recorder()
    async with Bus(middleware=[rec]) as bus:
        got: list[str] = []
        picky = bus.subscribe("**", lambda s: got.append(s.type), name="picky")
        await bus.publish(sig("ok"), sig("skip.me"))
        with pytest.raises(PublishHaltedError):
            await bus.publish(sig("fine"), sig("halt.now"))
        await bus.publish(sig("quiet"), sig("stop"))
        await bus.drain()
        assert got == ["ok"]
        assert bus.statistics().skipped == 1
        assert bus.position == 3  # ok, quiet, stop
        stats = picky.statistics()
        assert stats.skipped == 1 and stats.failed == 1 and stats.delivered == 1
        assert ("after", "picky:NoneType") in rec.events
        assert ("after", "picky:PublishHaltedError") in rec.events
    with pytest.raises(BusError):
        Bus(middleware=[object()])  # type: ignore[list-item]


async def test_logging_middleware(caplog: pytest.LogCaptureFixture) -> None:
    async with Bus(middleware=[LoggingMiddleware(level=logging.INFO)]) as bus:

        def bad(s: Signal) -> None:
            raise RuntimeError("nope")

        bus.subscribe("**", bad, name="bad-one")
        with caplog.at_level(logging.INFO, logger="jido.bus"):
            s = sig("log.me")
            await bus.publish(s)
            await bus.drain()
    assert f"publish log.me id={s.id}" in caplog.text
    assert "dispatch log.me" in caplog.text and "bad-one" in caplog.text
    assert "nope" in caplog.text


async def test_journal_records_published_signals() -> None:
    journal = Journal()
    async with Bus(journal=journal) as bus:
        root = sig("order.placed")
        child = root.caused(type="payment.requested")
        await bus.publish(root, child)
    assert journal.cause(child.id) == root
    assert journal.effects(root.id) == [child]


# -- property: every subscriber gets exactly the matching signals, in publish order ----------

_SEGS = ["a", "b", "c"]
_pattern_seg = st.sampled_from([*_SEGS, "*", "**"])
_patterns = (
    st.lists(_pattern_seg, min_size=1, max_size=3)
    .filter(lambda p: all(not (x == y == "**") for x, y in itertools.pairwise(p)))
    .map(".".join)
)
_types = st.lists(st.sampled_from(_SEGS), min_size=1, max_size=4).map(".".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patterns=st.lists(_patterns, min_size=1, max_size=5),
    batches=st.lists(st.lists(_types, min_size=1, max_size=4), min_size=1, max_size=8),
)
def test_delivery_matches_reference_property(patterns: list[str], batches: list[list[str]]) -> None:
    async def scenario() -> None:
        async with Bus() as bus:
            got: list[list[int]] = [[] for _ in patterns]
            for i, p in enumerate(patterns):
                bus.subscribe(p, lambda s, i=i: got[i].append(s.data["n"]))
            n = 0
            sent: list[tuple[int, str]] = []
            for batch in batches:
                sigs = []
                for t in batch:
                    sigs.append(Signal(type=t, source="/p", data={"n": n}))
                    sent.append((n, t))
                    n += 1
                await bus.publish(*sigs)
            await bus.drain()
            for i, p in enumerate(patterns):
                assert got[i] == [k for k, t in sent if pattern_matches(p, t)]
            assert [e.signal.data["n"] for e in bus.replay()] == list(range(n))

    asyncio.run(scenario())


async def test_bus_carries_a_decoded_big_integer() -> None:
    big = 123456789012345678901234567890
    raw = (
        b'{"specversion":"1.0","id":"1","source":"/s","type":"a.b","data":{"n":'
        + str(big).encode()
        + b"}}"
    )
    got: list[Signal] = []
    async with Bus() as bus:
        bus.subscribe("a.b", got.append)
        await bus.publish(Signal.from_json(raw))
        await bus.drain()
    assert [s.data for s in got] == [{"n": big}]
