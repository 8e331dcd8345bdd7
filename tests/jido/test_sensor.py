"""Sensors: lifecycle of the base class, heartbeat and cron (driven by a manual clock)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from jido import (
    AgentNotFoundError,
    CronSensor,
    DefinitionError,
    HeartbeatSensor,
    MailboxFullError,
    Sensor,
    SensorClock,
    SensorError,
    Signal,
    ValidationError,
)

# --- helpers ---------------------------------------------------------------------------------


class ManualClock(SensorClock):
    """Virtual time: ``sleep`` records the delay, advances time by it and yields once."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.t = 0.0
        self.start = start
        self.sleeps: list[float] = []
        self.advance_ratio = 1.0  # < 1 makes sleeps wake early

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds * self.advance_ratio
        await asyncio.sleep(0)


class Collector:
    """An ``emit`` target that keeps signals and parks the sensor once it has ``limit``."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self.signals: list[Signal] = []
        self.limit = limit
        self._enough = asyncio.Event()

    async def __call__(self, signal: Signal) -> None:
        self.signals.append(signal)
        if len(self.signals) >= self.limit:
            self._enough.set()
            await asyncio.Event().wait()  # park until the sensor is stopped

    async def wait(self) -> list[Signal]:
        await asyncio.wait_for(self._enough.wait(), timeout=10)
        return self.signals

    def of_type(self, type: str) -> list[Signal]:
        return [s for s in self.signals if s.type == type]


def _other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


# --- the base class --------------------------------------------------------------------------


class Countdown(Sensor):
    """Emits ``count`` signals, then finishes."""

    class Config(BaseModel):
        count: int = 3

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.teardowns = 0

    async def run(self) -> None:
        for i in range(self.config.count):
            await self.emit(self.signal("test.countdown", {"left": self.config.count - i - 1}))

    async def teardown(self) -> None:
        self.teardowns += 1


async def test_custom_sensor_in_a_few_lines_runs_to_completion() -> None:
    before = _other_tasks()
    out = Collector()
    sensor = Countdown(count=3, id="cd")
    await sensor.start(out)
    assert sensor._task is not None
    await asyncio.wait([sensor._task])
    assert [s.data for s in out.signals] == [{"left": 2}, {"left": 1}, {"left": 0}]
    assert all(s.source == "/jido/sensors/cd" and s.subject == "cd" for s in out.signals)
    assert not sensor.running
    assert sensor.emitted == 3
    assert sensor.teardowns == 1
    await sensor.stop()  # after it finished: nothing left to do
    assert sensor.teardowns == 1
    assert _other_tasks() == before


async def test_sensor_can_restart_and_refuses_a_double_start() -> None:
    sensor = HeartbeatSensor(interval=1.0, clock=ManualClock())
    first = Collector(limit=2)
    await sensor.start(first)
    with pytest.raises(SensorError, match="already running"):
        await sensor.start(Collector())
    await first.wait()
    await sensor.stop()
    second = Collector(limit=1)
    await sensor.start(second)
    assert [s.data["count"] for s in await second.wait()] == [1]
    await sensor.stop()
    assert not sensor.running


async def test_stop_is_idempotent_and_leaves_no_task() -> None:
    before = _other_tasks()
    sensor = HeartbeatSensor(interval=1.0, clock=ManualClock())
    await sensor.stop()  # never started
    out = Collector(limit=3)
    await sensor.start(out)
    await out.wait()
    await sensor.stop()
    await sensor.stop()
    assert _other_tasks() == before
    assert sensor.error is None


async def test_stop_right_after_start_still_tears_down() -> None:
    calls: list[str] = []

    class Attached(Sensor):
        async def setup(self) -> None:
            calls.append("setup")

        async def teardown(self) -> None:
            calls.append("teardown")

    sensor = Attached()
    await sensor.start(Collector())
    await sensor.stop()  # the task has not taken a single step yet
    assert calls == ["setup", "teardown"]
    await sensor.start(Collector())
    await asyncio.sleep(0)  # let the task start waiting
    await sensor.stop()
    assert calls == ["setup", "teardown", "setup", "teardown"]


async def test_failing_run_reports_an_error_signal_and_tears_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Sensor):
        torn = False

        async def run(self) -> None:
            await self.emit(self.signal("test.before"))
            raise RuntimeError("sensor hardware on fire")

        async def teardown(self) -> None:
            self.torn = True

    out = Collector()
    sensor = Broken(id="b1")
    with caplog.at_level(logging.ERROR, logger="jido.sensor"):
        await sensor.start(out)
        assert sensor._task is not None
        await asyncio.wait([sensor._task])
    assert [s.type for s in out.signals] == ["test.before", "jido.sensor.error"]
    err = out.signals[1]
    assert err.data["sensor"] == "b1"
    assert err.data["error"]["message"] == "RuntimeError: sensor hardware on fire"
    assert isinstance(sensor.error, RuntimeError)
    assert sensor.torn and not sensor.running
    assert "sensor b1 failed" in caplog.text


async def test_failing_setup_fails_start() -> None:
    class NoSource(Sensor):
        async def setup(self) -> None:
            raise ConnectionError("no device")

    sensor = NoSource()
    with pytest.raises(ConnectionError):
        await sensor.start(Collector())
    assert not sensor.running
    with pytest.raises(SensorError, match="not running"):
        await sensor.emit(sensor.signal("test.x"))


async def test_failing_teardown_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class BadTeardown(Sensor):
        async def setup(self) -> None:
            pass

        async def teardown(self) -> None:
            raise OSError("already detached")

    sensor = BadTeardown(id="bt")
    await sensor.start(Collector())
    with caplog.at_level(logging.ERROR, logger="jido.sensor"):
        await sensor.stop()
    assert "sensor bt teardown failed" in caplog.text


async def test_a_sensor_can_stop_itself() -> None:
    class OneShot(Sensor):
        async def run(self) -> None:
            await self.emit(self.signal("test.once"))
            await self.stop()
            await asyncio.Event().wait()  # cancelled by the stop above

    out = Collector()
    sensor = OneShot()
    await sensor.start(out)
    assert sensor._task is not None
    await asyncio.wait([sensor._task])
    assert [s.type for s in out.signals] == ["test.once"]
    assert sensor.error is None


async def test_retryable_target_errors_drop_one_signal_others_end_the_sensor() -> None:
    seen: list[Signal] = []
    done = asyncio.Event()

    async def flaky(signal: Signal) -> None:
        seen.append(signal)
        count = signal.data.get("count") if isinstance(signal.data, dict) else None
        if count == 2:
            raise MailboxFullError("mailbox full")
        if count == 4:
            raise AgentNotFoundError("agent gone")
        if signal.type == "jido.sensor.error":
            done.set()

    sensor = HeartbeatSensor(interval=1.0, clock=ManualClock())
    await sensor.start(flaky)
    await asyncio.wait_for(done.wait(), 10)
    assert sensor._task is not None
    await asyncio.wait([sensor._task])
    assert [s.data.get("count") for s in seen[:4]] == [1, 2, 3, 4]
    assert (sensor.emitted, sensor.dropped) == (2, 1)
    assert isinstance(sensor.error, AgentNotFoundError)
    assert seen[-1].data["error"]["type"] == "agent_not_found"
    assert not sensor.running


def test_a_sensor_that_does_nothing_is_a_definition_error() -> None:
    class Empty(Sensor):
        pass

    with pytest.raises(DefinitionError, match="override run"):
        Empty()


def test_ids_sources_and_config_validation() -> None:
    a, b = Countdown(), Countdown()
    assert a.id != b.id and a.id.startswith("countdown-")
    c = Countdown(id="mine", source="/plant/7", count=5)
    assert (c.id, c.source, c.config.count) == ("mine", "/plant/7", 5)
    with pytest.raises(ValidationError, match="count"):
        Countdown(count="many")
    with pytest.raises(ValidationError, match="Countdown"):
        Countdown(colour="red")
    with pytest.raises(ValidationError):
        Countdown(id="")
    assert "stopped" in repr(c)


async def test_start_needs_a_callable_target() -> None:
    sensor = Countdown()
    with pytest.raises(ValidationError, match="emit"):
        await sensor.start("not callable")  # type: ignore[arg-type]
    assert not sensor.running


# --- heartbeat -------------------------------------------------------------------------------


async def test_heartbeat_beats_every_interval() -> None:
    clock = ManualClock()
    out = Collector(limit=4)
    sensor = HeartbeatSensor(
        interval=2.5, type="app.tick", data={"zone": "a"}, id="hb", clock=clock
    )
    await sensor.start(out)
    signals = await out.wait()
    await sensor.stop()
    assert [s.data for s in signals] == [{"zone": "a", "count": n} for n in range(1, 5)]
    assert {s.type for s in signals} == {"app.tick"}
    assert {s.source for s in signals} == {"/jido/sensors/hb"}
    assert clock.sleeps == [2.5] * 4
    assert len({s.id for s in signals}) == 4


async def test_heartbeat_immediate_first_beat() -> None:
    clock = ManualClock()
    out = Collector(limit=3)
    sensor = HeartbeatSensor(interval=1.0, immediate=True, clock=clock)
    await sensor.start(out)
    await out.wait()
    await sensor.stop()
    assert clock.sleeps == [1.0, 1.0]  # no wait before the first beat
    assert out.signals[0].type == "jido.sensor.heartbeat"


async def test_heartbeat_keeps_a_fixed_rate_and_skips_missed_beats() -> None:
    clock = ManualClock()
    costs = {1: 0.3, 2: 2.5}  # seconds "spent" by the target on beats 1 and 2

    out = Collector(limit=4)

    async def slow_target(signal: Signal) -> None:
        clock.t += costs.get(signal.data["count"], 0.0)
        await out(signal)

    sensor = HeartbeatSensor(interval=1.0, clock=clock)
    await sensor.start(slow_target)
    await out.wait()
    await sensor.stop()
    # beat 1 at t=1 (+0.3) -> sleep 0.7 to t=2; beat 2 at t=2 (+2.5 -> 4.5): the slots at
    # t=3 and t=4 are missed and skipped, next beat at t=5 -> sleep 0.5
    assert clock.sleeps == pytest.approx([1.0, 0.7, 0.5, 1.0])
    assert [s.data["count"] for s in out.signals] == [1, 2, 3, 4]


async def test_heartbeat_with_real_time_and_a_short_interval() -> None:
    out = Collector(limit=3)
    sensor = HeartbeatSensor(interval=0.001)
    await sensor.start(out)
    await out.wait()
    await sensor.stop()
    assert [s.data["count"] for s in out.signals] == [1, 2, 3]


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": -1}, "interval"),
        ({}, "interval"),
        ({"interval": 1, "type": "Not A Type!"}, "type"),
        ({"interval": 1, "every": 2}, "every"),
    ],
)
def test_heartbeat_config_errors(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match) as info:
        HeartbeatSensor(**config)
    assert info.value.details["sensor"] == "HeartbeatSensor"


# --- cron ------------------------------------------------------------------------------------


async def test_cron_fires_at_each_matching_minute() -> None:
    clock = ManualClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    out = Collector(limit=3)
    sensor = CronSensor(expression="* * * * *", data={"job": "sweep"}, clock=clock)
    await sensor.start(out)
    await out.wait()
    await sensor.stop()
    assert [s.data["scheduled"] for s in out.signals] == [
        "2026-01-01T00:01:00+00:00",
        "2026-01-01T00:02:00+00:00",
        "2026-01-01T00:03:00+00:00",
    ]
    assert out.signals[0].data["job"] == "sweep"
    assert out.signals[0].data["expression"] == "* * * * *"
    assert out.signals[0].type == "jido.sensor.cron"
    assert clock.sleeps == [30.0, 60.0, 60.0]


async def test_cron_reads_the_expression_in_its_time_zone() -> None:
    clock = ManualClock(datetime(2026, 1, 1, 7, 0, tzinfo=UTC))  # 08:00 in Paris
    out = Collector(limit=2)
    sensor = CronSensor(expression="0 9 * * *", timezone="Europe/Paris", clock=clock)
    await sensor.start(out)
    await out.wait()
    await sensor.stop()
    assert [s.data["scheduled"] for s in out.signals] == [
        "2026-01-01T09:00:00+01:00",
        "2026-01-02T09:00:00+01:00",
    ]
    assert clock.sleeps == [3600.0, 86400.0]


async def test_cron_with_seconds_and_an_early_waking_clock() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock.advance_ratio = 0.5  # every sleep ends halfway: the sensor must sleep again
    out = Collector(limit=2)
    sensor = CronSensor(expression="* * * * * */10", clock=clock)
    await sensor.start(out)
    await out.wait()
    await sensor.stop()
    assert [s.data["scheduled"] for s in out.signals] == [
        "2026-01-01T00:00:10+00:00",
        "2026-01-01T00:00:20+00:00",
    ]
    assert all(s.timestamp is not None for s in out.signals)
    assert clock.sleeps[:3] == [10.0, 5.0, 2.5]


async def test_cron_skips_slots_missed_while_late() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    out = Collector(limit=3)

    async def slow_target(signal: Signal) -> None:
        if not out.signals:
            clock.t += 150  # the first delivery takes 2.5 minutes
        await out(signal)

    sensor = CronSensor(expression="* * * * *", clock=clock)
    await sensor.start(slow_target)
    await out.wait()
    await sensor.stop()
    assert [s.data["scheduled"] for s in out.signals] == [
        "2026-01-01T00:01:00+00:00",
        "2026-01-01T00:04:00+00:00",  # 00:02 and 00:03 passed during the slow delivery
        "2026-01-01T00:05:00+00:00",
    ]


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"expression": "every day"}, "cron expression"),
        ({"expression": "61 * * * *"}, "cron expression"),
        ({"expression": "* * * * *", "timezone": "Mars/Olympus"}, "time zone"),
        ({}, "expression"),
    ],
)
def test_cron_config_errors(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        CronSensor(**config)


def test_name_is_the_id() -> None:
    assert Countdown(id="temp-1").name == "temp-1"


def test_config_errors_are_json_safe() -> None:
    with pytest.raises(ValidationError) as info:
        HeartbeatSensor(interval=float("nan"), type=object())
    text = json.dumps(info.value.to_dict())
    assert "interval" in text and "type" in text
