"""Durable sensors: committed in the agent's checkpoint, started again from the store."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from pydantic import BaseModel

from jido import (
    Action,
    ActionContext,
    Agent,
    AgentRef,
    Bus,
    BusSensor,
    Checkpoint,
    ExecutionError,
    HeartbeatSensor,
    Instruction,
    MemoryStore,
    Runtime,
    Sensor,
    SensorError,
    Signal,
    SQLiteStore,
    StartSensor,
    StopSensor,
    ValidationError,
)

HB = "jido._sensor:HeartbeatSensor"
#: Ticks at which ``Tick`` sets ``REACHED`` (set by each test before it waits).
TARGET: dict[str, Any] = {"n": 10**9, "event": None}
MADE: dict[str, Any] = {}


class WatchState(BaseModel):
    ticks: int = 0
    watching: bool = False
    crash: bool = False
    errors: list[str] = []


class Watch(Action):
    """Start a heartbeat sensor ``hb`` feeding this agent (``durable`` as asked)."""

    name = "watch"

    class Params(BaseModel):
        interval: float = 0.02
        durable: bool = True
        local: bool = False
        bus: bool = False
        to_bus: bool = False

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        sensor: Sensor
        if params.local:
            sensor = _local_sensor(params.interval)
        elif params.bus:
            sensor = BusSensor(MADE["bus"], pattern="x.*", id="hb")
        else:
            sensor = HeartbeatSensor(interval=params.interval, type="w.tick", id="hb")
        MADE["sensor"] = sensor
        return {"watching": True}, StartSensor(sensor, durable=params.durable, to_bus=params.to_bus)


class Unwatch(Action):
    """Stop the sensor under ``key`` (default: the heartbeat)."""

    name = "unwatch"

    class Params(BaseModel):
        key: str = "hb"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"watching": False}, StopSensor(params.key)


class Tick(Action):
    """Count one beat."""

    name = "tick"

    class Params(BaseModel):
        count: int = 0

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        ticks = ctx.state.ticks + 1
        event = TARGET["event"]
        if event is not None and ticks >= TARGET["n"]:
            event.set()
        return {"ticks": ticks}


class Sync(Action):
    """Change nothing (a round trip through the mailbox: what was before it has committed)."""

    name = "sync"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {}


class Crash(Action):
    """Ask for a crash (the after_run hook raises)."""

    name = "crash"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"crash": True}


class Watcher(Agent):
    """Counts the beats of its own heartbeat sensor."""

    state_model = WatchState
    actions = [Watch, Unwatch, Tick, Sync, Crash]
    routes = [
        ("w.watch", Watch),
        ("w.unwatch", Unwatch),
        ("w.tick", Tick),
        ("w.sync", Sync),
        ("w.crash", Crash),
    ]

    def after_run(self, instruction: Instruction, result: dict[str, Any]) -> None:
        if result.get("crash"):
            raise RuntimeError("hook bug")


class Failed(Action):
    """Record the key of a sensor reported as failed."""

    name = "failed"

    class Params(BaseModel):
        sensor: str
        key: str
        error: dict[str, Any]

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        assert params.error["type"] == "sensor_error"
        return {"errors": [*ctx.state.errors, params.key]}


class Minder(Watcher):
    """A watcher that handles the reports of its failed sensors itself."""

    actions = [*Watcher.actions, Failed]
    routes = [*Watcher.routes, ("jido.sensor.error", Failed)]


class Passive(Watcher):
    """A virtual watcher (passivated on demand in the test)."""

    idle_timeout = 3600.0


def _local_sensor(interval: float) -> Sensor:
    class Local(HeartbeatSensor):
        pass

    return Local(interval=interval, type="w.tick", id="hb")


def sig(type: str, data: Any = None) -> Signal:
    return Signal(type=type, source="/t", data=data)


async def _ticks_reach(ref: AgentRef, n: int) -> None:
    """Wait until the watcher has counted ``n`` beats and committed them."""
    event = asyncio.Event()
    TARGET.update(n=n, event=event)
    await asyncio.wait_for(event.wait(), 20)
    await ref.call(sig("w.sync"))


def _sensor_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "jido-sensor-hb" and not t.done()]


@pytest.fixture(autouse=True)
def _reset() -> None:
    TARGET.update(n=10**9, event=None)
    MADE.clear()


async def test_record_is_committed_in_the_write_of_the_command(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "a.db") as store, Runtime(store=store) as rt:
        await rt.start(Watcher, id="w")
        await rt.call("w", sig("w.watch", {"interval": 3600.0}))
        cp = await store.load("w")
        # the only write: the state change of the command and its sensor together
        assert cp is not None and cp.seq == 1 and cp.state["watching"] is True
        assert cp.sensors == {
            "hb": {
                "class": HB,
                "id": "hb",
                "source": "/jido/sensors/hb",
                "config": {"interval": 3600.0, "type": "w.tick", "data": {}, "immediate": False},
                "to_bus": False,
            }
        }


async def test_sensor_runs_again_after_a_restart_on_the_same_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    async with SQLiteStore(db) as store, Runtime(store=store) as rt:
        ref = await rt.start(Watcher, id="w")
        await ref.call(sig("w.watch"))
        await _ticks_reach(ref, 3)
        first = MADE["sensor"]
    assert not first.running
    async with SQLiteStore(db) as store:
        cp = await store.load("w")
        assert cp is not None and set(cp.sensors) == {"hb"} and cp.state["ticks"] >= 3
        before = cp.state["ticks"]
        async with Runtime(store=store) as rt:
            ref = await rt.start(Watcher, id="w")
            again = rt.sensors("w")["hb"]
            assert isinstance(again, HeartbeatSensor) and again is not first and again.running
            assert again.config.interval == 0.02 and again.source == "/jido/sensors/hb"
            await _ticks_reach(ref, before + 3)  # beats of the new sensor, counted by the agent
            state = await ref.state()
            assert isinstance(state, WatchState) and state.watching and state.ticks >= before + 3
        assert not again.running
    assert _sensor_tasks() == []


async def test_a_bus_sensor_is_restarted_onto_the_bus(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    async with SQLiteStore(db) as store, Runtime(store=store) as rt:
        ref = await rt.start(Watcher, id="w")
        await ref.call(sig("w.watch", {"to_bus": True}))
    async with SQLiteStore(db) as store, Runtime(store=store) as rt:
        beats: asyncio.Queue[Signal] = asyncio.Queue()
        rt.bus.subscribe("w.tick", beats)
        ref = await rt.start(Watcher, id="w")
        beat = await asyncio.wait_for(beats.get(), 20)
        assert beat.source == "/jido/sensors/hb" and beat.data["count"] == 1
        await ref.call(sig("w.sync"))
        assert (await ref.state()).ticks == 0  # onto the bus, not into the agent


async def test_stop_sensor_removes_the_record(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    async with SQLiteStore(db) as store, Runtime(store=store) as rt:
        ref = await rt.start(Watcher, id="w")
        await ref.call(sig("w.watch"))
        await _ticks_reach(ref, 1)
        await ref.call(sig("w.unwatch"))
        assert rt.sensors("w") == {}
        cp = await store.load("w")
        assert cp is not None and cp.sensors == {} and cp.state["watching"] is False
    async with SQLiteStore(db) as store, Runtime(store=store) as rt:
        await rt.start(Watcher, id="w")
        assert rt.sensors("w") == {}
        assert _sensor_tasks() == []


async def test_crash_and_restart_within_one_runtime_does_not_start_it_twice(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "w.db") as store, Runtime(store=store) as rt:
        ref = await rt.start(Watcher, id="w")
        await ref.call(sig("w.watch"))
        sensor = MADE["sensor"]
        await _ticks_reach(ref, 2)
        with pytest.raises(ExecutionError, match="crashed"):
            await ref.call(sig("w.crash"))
        # restarted from its checkpoint; the one sensor kept running, none was added
        assert rt.sensors("w") == {"hb": sensor} and sensor.running
        assert _sensor_tasks() == [sensor._task]
        ticks = (await ref.state()).ticks
        await _ticks_reach(ref, ticks + 2)
        assert _sensor_tasks() == [sensor._task]
        cp = await store.load("w")
        assert cp is not None and set(cp.sensors) == {"hb"}


async def test_a_passivated_virtual_agent_gets_its_sensor_back() -> None:
    async with Runtime(store=MemoryStore()) as rt:
        ref = await rt.activate(Passive, "p")
        await ref.call(sig("w.watch", {"interval": 3600.0}))
        first = MADE["sensor"]
        assert await rt.passivate("p")
        assert not first.running and "p" not in rt
        await rt.activate(Passive, "p")
        again = rt.sensors("p")["hb"]
        assert again is not first and again.running and again.config.interval == 3600.0


async def test_a_sensor_that_cannot_be_rebuilt_fails_the_directive(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "w.db") as store, Runtime(store=store) as rt:
        ref = await rt.start(Watcher, id="w")
        with pytest.raises(ValidationError) as info:
            await ref.call(sig("w.watch", {"local": True}))
        msg = info.value.message
        assert "defined inside a function" in msg
        assert "module level" in msg and "durable=False" in msg
        # rolled back: no state change, no record, nothing running
        assert (await ref.state()).watching is False
        assert rt.sensors("w") == {} and not MADE["sensor"].running
        cp = await store.load("w")
        assert cp is None or cp.sensors == {}
        # a sensor that needs more than its config (a bus) cannot be rebuilt either
        async with Bus() as bus:
            MADE["bus"] = bus
            with pytest.raises(ValidationError, match="cannot be built again"):
                await ref.call(sig("w.watch", {"bus": True}))
        # durable=False runs it, unrecorded
        await ref.call(sig("w.watch", {"local": True, "durable": False}))
        await _ticks_reach(ref, 1)
        assert rt.sensors("w") == {"hb": MADE["sensor"]}
        cp = await store.load("w")
        assert cp is not None and cp.sensors == {} and cp.state["watching"] is True


async def test_without_a_store_any_sensor_runs() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Watcher, id="w")
        await ref.call(sig("w.watch", {"local": True}))
        await _ticks_reach(ref, 1)
        assert rt.sensors("w") == {"hb": MADE["sensor"]}


async def test_a_record_that_cannot_be_rebuilt_is_reported_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = {
        "class": "tests.jido.test_sensor_durable:Gone",
        "id": "old",
        "source": "/old",
        "config": {},
        "to_bus": False,
    }
    bad = {**gone, "class": HB, "config": {"interval": -1}}
    async with SQLiteStore(tmp_path / "w.db") as store:
        await store.save(
            "w",
            Checkpoint(
                state={"ticks": 5}, agent_type=Watcher._type_name, seq=5, sensors={"gone": gone}
            ),
        )
        await store.save(
            "v",
            Checkpoint(state={}, agent_type=Watcher._type_name, seq=1, sensors={"bad": bad}),
        )
        async with Runtime(store=store) as rt:
            with caplog.at_level(logging.WARNING, logger="jido.runtime"):
                ref = await rt.start(Watcher, id="w")
                await rt.start(Watcher, id="v")
            assert (await ref.state()).ticks == 5 and rt.sensors("w") == {}
            assert "'w'" in caplog.text and "'gone'" in caplog.text
            assert "'v'" in caplog.text and "'bad'" in caplog.text
            letters = {d.agent_id: d for d in rt.dead_letters}
            assert set(letters) == {"w", "v"}
            letter = letters["w"]
            assert letter.signal.type == "jido.sensor.error"
            assert letter.signal.data["key"] == "gone"
            assert isinstance(letter.error, SensorError) and "StopSensor('gone')" in str(
                letter.error
            )
            # kept until a StopSensor drops it
            await ref.call(sig("w.tick"))
            cp = await store.load("w")
            assert cp is not None and cp.sensors == {"gone": gone} and cp.seq == 6
            await rt.call("w", sig("w.unwatch", {"key": "gone"}))
            await rt.stop("w")
            cp = await store.load("w")
            assert cp is not None and cp.sensors == {}


async def test_an_agent_routing_sensor_errors_gets_the_report() -> None:
    gone = {"class": "no.such.module:Gone", "id": "old", "source": "/old", "config": {}}
    store = MemoryStore()
    await store.save("m", Checkpoint(state={}, agent_type=Minder._type_name, sensors={"g": gone}))
    async with Runtime(store=store) as rt:
        ref = await rt.start(Minder, id="m")
        await ref.call(sig("w.sync"))  # behind the report in the mailbox
        assert (await ref.state()).errors == ["g"]
        assert list(rt.dead_letters) == []


async def test_a_checkpoint_written_before_sensors_were_recorded_loads(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    async with SQLiteStore(db) as store:
        await store.save("w", Checkpoint(state={}, agent_type=Watcher._type_name))
    # the bytes an older version wrote: a map with no "sensors" entry at all
    old = msgspec.msgpack.encode(
        {
            "state": {"ticks": 7, "watching": True},
            "agent_type": Watcher._type_name,
            "seq": 7,
            "saved_at": 1.0,
            "timers": {},
        }
    )
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE checkpoints SET data = ?, seq = 7 WHERE key = 'w'", (old,))
    conn.close()
    assert Checkpoint.from_bytes(old).sensors == {}
    async with SQLiteStore(db) as store, Runtime(store=store) as rt:
        ref = await rt.start(Watcher, id="w")
        assert (await ref.state()).ticks == 7 and rt.sensors("w") == {}
        await ref.call(sig("w.watch", {"interval": 3600.0}))
        cp = await store.load("w")
        assert cp is not None and cp.seq == 8 and set(cp.sensors) == {"hb"}
