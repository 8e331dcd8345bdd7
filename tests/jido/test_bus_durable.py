"""Persistent subscriptions: ack, redelivery, dead letters, redrive, checkpoint and resume."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import pytest

from jido import Bus, BusError, PersistentSubscription, Signal


def sig(t: str = "job.run", i: int = 0) -> Signal:
    return Signal(type=t, source="/test", data={"i": i})


async def test_auto_ack_delivers_in_order_and_moves_checkpoint() -> None:
    async with Bus() as bus:
        got: list[int] = []
        sub = bus.subscribe("job.*", lambda s: got.append(s.data["i"]), durable="w")
        assert isinstance(sub, PersistentSubscription)
        await bus.publish(sig(i=0), sig("other.x", i=99), sig(i=1))
        await bus.drain()
        assert got == [0, 1]
        assert sub.checkpoint == 3 == bus.checkpoint("w")
        st = sub.statistics()
        assert st.delivered == 2 and st.in_flight == 0 and st.checkpoint == 3
        # nothing in flight: the worker waits with no ack timer armed (it must not spin)
        assert sub._earliest == math.inf


async def test_failure_redelivers_then_dead_letters_then_redrive() -> None:
    async with Bus() as bus:
        attempts: dict[int, int] = {}
        healthy = False

        async def handler(s: Signal) -> None:
            i = s.data["i"]
            attempts[i] = attempts.get(i, 0) + 1
            if i == 1 and not healthy:
                raise RuntimeError("cannot handle 1")

        sub = bus.subscribe("job.*", handler, durable="w", max_attempts=3)
        await bus.publish(sig(i=0), sig(i=1), sig(i=2))
        await bus.drain()
        assert attempts == {0: 1, 1: 3, 2: 1}
        dead = sub.dead_letters()
        assert len(dead) == 1
        assert dead[0].signal.data == {"i": 1} and dead[0].attempts == 3
        assert dead[0].position == 2 and "cannot handle 1" in (dead[0].error or "")
        assert dead[0].to_dict()["signal"]["data"] == {"i": 1}
        assert sub.checkpoint == 3  # dead-lettered counts as settled
        st = sub.statistics()
        assert st.redelivered == 2 and st.dead_lettered == 1 and st.failed == 3
        # redrive after the handler is fixed
        healthy = True
        assert bus.redrive("w") == 1
        await bus.drain()
        assert attempts[1] == 4
        assert bus.dead_letters("w") == []
        assert bus.dead_letters() == []


async def test_clear_and_selective_redrive() -> None:
    async with Bus() as bus:

        def fail(s: Signal) -> None:
            raise ValueError("no")

        bus.subscribe("job.*", fail, durable="w", max_attempts=1)
        a, b = sig(i=1), sig(i=2)
        await bus.publish(a, b)
        await bus.drain()
        assert [d.signal.id for d in bus.dead_letters("w")] == [a.id, b.id]
        assert bus.redrive("w", ids=[b.id]) == 1
        await bus.drain()
        assert [d.signal.id for d in bus.dead_letters("w")] == [a.id, b.id]  # b failed again
        assert bus.clear_dead_letters("w") == 2
        assert bus.dead_letters("w") == []
        with pytest.raises(BusError):
            bus.dead_letters("nope")


async def test_manual_ack_timeout_redelivers() -> None:
    async with Bus() as bus:
        deliveries: list[int] = []
        second = asyncio.Event()

        def handler(s: Signal) -> None:
            deliveries.append(s.data["i"])
            if len(deliveries) == 2:
                second.set()

        sub = bus.subscribe("job.*", handler, durable="w", auto_ack=False, ack_timeout=0.05)
        await bus.publish(sig(i=7))
        await second.wait()  # not acked: delivered again after the timeout
        assert deliveries == [7, 7]
        assert [s.data["i"] for s in sub.in_flight()] == [7]
        assert await sub.ack(sub.in_flight()[0])
        assert not await sub.ack("unknown-id")
        assert sub.checkpoint == 1
        assert sub.statistics().redelivered == 1


async def test_manual_ack_window_and_nack() -> None:
    async with Bus() as bus:
        got: list[Signal] = []
        sub = bus.subscribe(
            "job.*", got.append, durable="w", auto_ack=False, max_in_flight=2, max_attempts=2
        )
        await bus.publish(*[sig(i=i) for i in range(4)])
        await bus.drain()
        assert [s.data["i"] for s in got] == [0, 1]  # window of 2
        assert await sub.ack(got[1])  # out of order: checkpoint stays before 0
        assert sub.checkpoint == 0
        await bus.drain()
        assert [s.data["i"] for s in got] == [0, 1, 2]
        assert await sub.nack(got[0])
        await bus.drain()
        assert [s.data["i"] for s in got] == [0, 1, 2, 0]
        assert await sub.nack(got[0])  # second attempt rejected: dead letter
        await bus.drain()
        assert [d.signal.data["i"] for d in sub.dead_letters()] == [0]
        assert sub.checkpoint == 2
        assert await sub.ack(got[2].id)
        await bus.drain()
        assert await sub.ack(got[-1])
        assert sub.checkpoint == 4


async def test_checkpoint_resume_after_reconnect() -> None:
    async with Bus() as bus:
        got: list[int] = []
        sub = bus.subscribe("job.*", lambda s: got.append(s.data["i"]), durable="w")
        await bus.publish(sig(i=0), sig(i=1))
        await bus.drain()
        await sub.unsubscribe()
        await bus.publish(sig(i=2), sig(i=3))  # published while disconnected
        assert bus.durables() == ["w"]
        sub = bus.subscribe("job.*", lambda s: got.append(s.data["i"]), durable="w")
        await bus.drain()
        assert got == [0, 1, 2, 3]
        with pytest.raises(BusError):
            bus.subscribe("job.*", print, durable="w")  # one active subscriber per name
        with pytest.raises(BusError):
            bus.delete_durable("w")
        await sub.unsubscribe()
        with pytest.raises(BusError):
            bus.subscribe("other.*", print, durable="w")  # pattern fixed per name
        bus.delete_durable("w")
        assert bus.durables() == []


async def test_unacked_are_redelivered_after_reconnect() -> None:
    async with Bus() as bus:
        got: list[int] = []
        sub = bus.subscribe("job.*", lambda s: got.append(s.data["i"]), durable="w", auto_ack=False)
        await bus.publish(sig(i=0), sig(i=1))
        await bus.drain()
        assert await sub.ack(sub.in_flight()[0])
        await sub.unsubscribe()
        sub = bus.subscribe("job.*", lambda s: got.append(s.data["i"]), durable="w")
        await bus.drain()
        assert got == [0, 1, 1]


async def test_start_options_and_lost_signals() -> None:
    async with Bus(log_size=5) as bus:
        await bus.publish(*[sig(i=i) for i in range(3)])
        mark = datetime.now(UTC)
        await bus.publish(sig(i=3))
        seen: dict[str, list[int]] = {"new": [], "first": [], "pos": [], "time": []}
        bus.subscribe("job.*", lambda s: seen["new"].append(s.data["i"]), durable="new")
        bus.subscribe(
            "job.*", lambda s: seen["first"].append(s.data["i"]), durable="first", start="first"
        )
        bus.subscribe("job.*", lambda s: seen["pos"].append(s.data["i"]), durable="pos", start=3)
        bus.subscribe(
            "job.*", lambda s: seen["time"].append(s.data["i"]), durable="time", start=mark
        )
        await bus.publish(sig(i=4))
        await bus.drain()
        assert seen == {"new": [4], "first": [0, 1, 2, 3, 4], "pos": [2, 3, 4], "time": [3, 4]}
        with pytest.raises(BusError):
            bus.subscribe("job.*", print, durable="bad", start="yesterday")  # type: ignore[arg-type]

        # a subscriber that falls behind a bounded log counts what it lost
        gate = asyncio.Event()
        entered = asyncio.Event()
        got: list[int] = []

        async def slow(s: Signal) -> None:
            entered.set()
            await gate.wait()
            got.append(s.data["i"])

        lagging = bus.subscribe("job.*", slow, durable="lag", max_in_flight=1)
        await bus.publish(sig(i=10))  # position 6
        await entered.wait()
        await bus.publish(*[sig(i=i) for i in range(11, 20)])  # positions 7..15; log keeps 5
        gate.set()
        await bus.drain()
        assert got == [10, 15, 16, 17, 18, 19]
        assert lagging.statistics().lost == 4
        assert lagging.checkpoint == 15


async def test_persistent_options_validated() -> None:
    async with Bus() as bus:
        for kwargs in (
            {"max_attempts": 0},
            {"max_in_flight": 0},
            {"ack_timeout": 0},
            {"retry_delay": -1},
        ):
            with pytest.raises(BusError):
                bus.subscribe("a", print, durable="x", **kwargs)  # type: ignore[arg-type]
    async with Bus(log_size=0) as nolog:
        with pytest.raises(BusError):
            nolog.subscribe("a", print, durable="x")


async def test_retry_delay_uses_the_timer() -> None:
    async with Bus() as bus:
        calls: list[int] = []
        done = asyncio.Event()

        def flaky(s: Signal) -> None:
            calls.append(1)
            if len(calls) < 3:
                raise RuntimeError("later")
            done.set()

        sub = bus.subscribe("job.*", flaky, durable="w", retry_delay=0.01, max_attempts=5)
        await bus.publish(sig())
        await done.wait()
        await bus.drain()
        assert len(calls) == 3
        assert sub.checkpoint == 1 and sub.dead_letters() == []
