"""BusSensor against a real jido Bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jido import Bus, BusClosedError, BusSensor, Signal, ValidationError


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    async with Bus() as b:
        yield b


def _sig(type: str, n: int = 0) -> Signal:
    return Signal(type=type, source="/test", data={"n": n})


class Inbox:
    """``emit`` target collecting signals; ``wait(k)`` returns once ``k`` have arrived."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self._changed = asyncio.Condition()

    async def __call__(self, signal: Signal) -> None:
        async with self._changed:
            self.signals.append(signal)
            self._changed.notify_all()

    async def wait(self, k: int) -> list[Signal]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.signals) >= k), 10)
        return self.signals


async def test_forwards_matching_signals_in_order(bus: Bus) -> None:
    inbox = Inbox()
    sensor = BusSensor(bus, pattern="order.**")
    await sensor.start(inbox)
    await bus.publish(
        _sig("order.created", 1),
        _sig("user.created", 2),
        _sig("order.item.added", 3),
        _sig("order", 4),
    )
    await bus.publish(_sig("order.paid", 5))
    got = await inbox.wait(4)
    await bus.drain()
    await sensor.stop()
    assert [s.data["n"] for s in got] == [1, 3, 4, 5]
    assert got[0].type == "order.created"  # forwarded unchanged
    assert sensor.emitted == 4


async def test_stop_unsubscribes(bus: Bus) -> None:
    inbox = Inbox()
    sensor = BusSensor(bus, pattern="a.*")
    before = len(bus.subscriptions())
    await sensor.start(inbox)
    assert len(bus.subscriptions()) == before + 1
    await bus.publish(_sig("a.one", 1))
    await inbox.wait(1)
    await sensor.stop()
    assert len(bus.subscriptions()) == before
    await bus.publish(_sig("a.two", 2))
    await bus.drain()
    assert [s.data["n"] for s in inbox.signals] == [1]
    # and it can be started again
    await sensor.start(inbox)
    await bus.publish(_sig("a.three", 3))
    await inbox.wait(2)
    await sensor.stop()
    assert [s.data["n"] for s in inbox.signals] == [1, 3]


async def test_transform_maps_and_filters(bus: Bus) -> None:
    inbox = Inbox()

    def only_big(signal: Signal) -> Signal | None:
        if signal.data["n"] < 10:
            return None
        return signal.caused(type="alert.big", source="/watcher", data={"n": signal.data["n"]})

    sensor = BusSensor(bus, pattern="metric.*", transform=only_big)
    await sensor.start(inbox)
    first = _sig("metric.cpu", 50)
    await bus.publish(_sig("metric.cpu", 3), first, _sig("metric.mem", 7), _sig("metric.mem", 11))
    got = await inbox.wait(2)
    await sensor.stop()
    assert [(s.type, s.data["n"]) for s in got] == [("alert.big", 50), ("alert.big", 11)]
    assert got[0].causation_id == first.id


async def test_failing_transform_ends_the_sensor_with_an_error_signal(bus: Bus) -> None:
    inbox = Inbox()

    def broken(signal: Signal) -> Signal | None:
        raise KeyError("missing field")

    sensor = BusSensor(bus, pattern="x.*", transform=broken, id="bs")
    before = len(bus.subscriptions())
    await sensor.start(inbox)
    await bus.publish(_sig("x.y"))
    got = await inbox.wait(1)
    assert sensor._task is not None
    await asyncio.wait([sensor._task])
    assert got[0].type == "jido.sensor.error"
    assert got[0].data["sensor"] == "bs"
    assert isinstance(sensor.error, KeyError)
    assert len(bus.subscriptions()) == before  # torn down: unsubscribed
    await sensor.stop()


async def test_a_slow_target_with_a_small_buffer_loses_nothing(bus: Bus) -> None:
    release = asyncio.Event()
    inbox = Inbox()

    async def slow(signal: Signal) -> None:
        await release.wait()
        await inbox(signal)

    sensor = BusSensor(bus, pattern="q.*", buffer=2)
    await sensor.start(slow)
    for n in range(10):  # more than the buffer: the rest waits in the bus subscription
        await bus.publish(_sig("q.item", n))
    release.set()
    got = await inbox.wait(10)
    await sensor.stop()
    assert [s.data["n"] for s in got] == list(range(10))


async def test_subscribing_to_a_closed_bus_fails_start() -> None:
    closed = Bus()
    await closed.close()
    sensor = BusSensor(closed, pattern="a.*")
    with pytest.raises(BusClosedError):
        await sensor.start(Inbox())
    assert not sensor.running


def test_bus_sensor_config_errors() -> None:
    with pytest.raises(ValidationError, match="pattern"):
        BusSensor(Bus(), pattern="")
    with pytest.raises(ValidationError, match="buffer"):
        BusSensor(Bus(), pattern="a.*", buffer=0)
