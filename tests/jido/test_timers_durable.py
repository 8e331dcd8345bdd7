"""Durable schedules: committed with the state, re-armed from the store, fired exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from jido import (
    Action,
    ActionContext,
    Agent,
    Cancel,
    MemoryStore,
    Runtime,
    Schedule,
    Signal,
    SQLiteStore,
)

GATE: dict[str, asyncio.Event] = {}


class Arm(Action):
    """Schedule ``ring`` after ``delay`` seconds (or on ``cron``), or cancel it."""

    class Params(BaseModel):
        delay: float = 0.2
        cron: str | None = None
        cancel: bool = False

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        if params.cancel:
            return {"armed": False}, Cancel("ring")
        ring = Signal(type="t.ring", source="/timer")
        if params.cron:
            return {"armed": True}, Schedule(ring, cron=params.cron, key="ring")
        return {"armed": True}, Schedule(ring, delay=params.delay, key="ring")


class Ring(Action):
    """Count a firing (waits on the gate first when a test holds it closed)."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        entered = GATE.get("entered")
        if entered is not None:
            entered.set()
        gate = GATE.get("ring")
        if gate is not None:
            await gate.wait()
        return {"fired": ctx.state.fired + 1, "ids": [*ctx.state.ids, ctx.signal.id]}


class AlarmState(BaseModel):
    armed: bool = False
    fired: int = 0
    ids: list[str] = Field(default_factory=list)


class Alarm(Agent):
    """Arms a schedule and counts its firings."""

    state_model = AlarmState
    actions = [Arm, Ring]
    routes = [("t.arm", Arm), ("t.ring", Ring)]


def arm(**data: Any) -> Signal:
    return Signal(type="t.arm", source="/t", data=data)


@pytest.fixture(autouse=True)
def _reset() -> None:
    GATE.clear()


async def _fired(rt: Runtime, id: str, n: int) -> AlarmState:
    while True:
        await rt.wait_idle()
        state = await rt.ref(id).state()
        assert isinstance(state, AlarmState)
        if state.fired >= n:
            return state
        await asyncio.sleep(0.02)


async def test_schedule_committed_with_the_state(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.db") as store, Runtime(store) as rt:
        await rt.start(Alarm, id="a")
        await rt.call("a", arm(delay=3600))
        cp = await store.load("a")
        assert cp is not None and cp.state["armed"] is True
        assert set(cp.timers) == {"ring"} and cp.timers["ring"]["signal"]["type"] == "t.ring"
        await rt.call("a", arm(cancel=True))
        cp = await store.load("a")
        assert cp is not None and cp.timers == {}


async def test_restart_before_due_fires_once_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        await rt.start(Alarm, id="a")
        await rt.call("a", arm(delay=0.3))
    # the process is gone before the schedule is due: nothing fired
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        cp = await store.load("a")
        assert cp is not None and cp.state["fired"] == 0 and "ring" in cp.timers
        await rt.start(Alarm, id="a")
        assert set(rt.schedules("a")) == {"ring"}
        state = await _fired(rt, "a", 1)
        assert state.fired == 1
        cp = await store.load("a")
        assert cp is not None and cp.state["fired"] == 1 and cp.timers == {}
    # committed firing: a further restart does not fire it again
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        await rt.start(Alarm, id="a")
        assert rt.schedules("a") == {}
        await rt.wait_idle()
        state = await rt.ref("a").state()
        assert isinstance(state, AlarmState) and state.fired == 1


async def test_due_while_down_fires_once_on_start(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        await rt.start(Alarm, id="a")
        await rt.call("a", arm(delay=0.0))
        await rt.stop("a")  # stopped before the loop ran the timer
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        await rt.start(Alarm, id="a")
        state = await _fired(rt, "a", 1)
        assert state.fired == 1


async def test_stop_between_fire_and_commit_fires_again_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    GATE["ring"] = asyncio.Event()  # the firing's command never finishes in the first run
    GATE["entered"] = asyncio.Event()
    async with SQLiteStore(path) as store, Runtime(store, stop_timeout=0.05) as rt:
        await rt.start(Alarm, id="a")
        await rt.call("a", arm(delay=0.0))
        await GATE["entered"].wait()
    # the firing was not committed: the store still holds the schedule
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        cp = await store.load("a")
        assert cp is not None and cp.state["fired"] == 0 and "ring" in cp.timers
        GATE["ring"].set()
        await rt.start(Alarm, id="a")
        state = await _fired(rt, "a", 1)
        assert state.fired == 1
        cp = await store.load("a")
        assert cp is not None and cp.timers == {}
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        await rt.start(Alarm, id="a")
        await rt.wait_idle()
        state = await rt.ref("a").state()
        assert isinstance(state, AlarmState) and state.fired == 1


async def test_cron_survives_restart_and_moves_on_when_fired(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        await rt.start(Alarm, id="a")
        await rt.call("a", arm(cron="0 0 1 1 *"))
        cp = await store.load("a")
        assert cp is not None
        first_due = cp.timers["ring"]["due"]
        assert cp.timers["ring"]["cron"] == "0 0 1 1 *"
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        await rt.start(Alarm, id="a")
        assert rt.schedules("a")["ring"].cron == "0 0 1 1 *"
        assert rt.fire("a", "ring")
        state = await _fired(rt, "a", 1)
        assert state.fired == 1
        cp = await store.load("a")
        assert cp is not None and cp.timers["ring"]["due"] >= first_due
        assert set(rt.schedules("a")) == {"ring"}


async def test_checkpoint_every_n_commits_schedules_with_the_next_save() -> None:
    class Every2(Alarm):
        checkpoint = 2

    store = MemoryStore()
    async with Runtime(store) as rt:
        await rt.start(Every2, id="a")
        await rt.call("a", arm(delay=3600))
        cp = await store.load("a")
        assert cp is None or "ring" not in cp.timers
        await rt.call("a", arm(delay=3600))
        cp = await store.load("a")
        assert cp is not None and set(cp.timers) == {"ring"}


async def test_schedules_without_store_still_fire() -> None:
    async with Runtime() as rt:
        await rt.start(Alarm, id="a")
        await rt.call("a", arm(delay=0.0))
        state = await _fired(rt, "a", 1)
        assert state.fired == 1 and rt.schedules("a") == {}
