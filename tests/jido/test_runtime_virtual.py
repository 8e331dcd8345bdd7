"""Keyed agents on one runtime: get-or-start, passivation to the store, wake-up when due."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from jido import (
    Action,
    ActionContext,
    Agent,
    AgentEvent,
    MemoryStore,
    Runtime,
    Schedule,
    Signal,
    SQLiteStore,
    ValidationError,
    VirtualRef,
)


class Add(Action):
    """Add ``n``; with ``remind`` schedule a ``s.add`` of 1 after that many seconds."""

    class Params(BaseModel):
        n: int = 1
        remind: float | None = None

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        out = {"total": ctx.state.total + params.n}
        if params.remind is not None:
            later = Signal(type="s.add", source="/timer", data={"n": 100})
            return out, Schedule(later, delay=params.remind, key="remind")
        return out


class SessionState(BaseModel):
    total: int = 0


class Session(Agent):
    """A keyed session."""

    state_model = SessionState
    actions = [Add]
    routes = [("s.add", Add)]


class Idle(Session):
    """Passivated after a short idle time."""

    idle_timeout = 0.05


def add(n: int = 1, remind: float | None = None) -> Signal:
    return Signal(type="s.add", source="/t", data={"n": n, "remind": remind})


class Events:
    """Collects lifecycle events and wakes waiters on each."""

    def __init__(self) -> None:
        self.seen: list[AgentEvent] = []
        self.changed = asyncio.Event()

    def __call__(self, ev: AgentEvent) -> None:
        self.seen.append(ev)
        self.changed.set()

    def count(self, kind: str, reason: str | None = None) -> int:
        return sum(
            1 for e in self.seen if e.kind == kind and (reason is None or e.reason == reason)
        )

    async def wait(self, kind: str, n: int, reason: str | None = None) -> None:
        while self.count(kind, reason) < n:
            self.changed.clear()
            await self.changed.wait()


async def test_ref_with_class_activates_on_first_call() -> None:
    async with Runtime(MemoryStore()) as rt:
        ref = rt.ref("s-1", cls=Session)
        assert isinstance(ref, VirtualRef) and not ref.running()
        assert (await ref.call(add(2)))["total"] == 2
        assert ref.running() and rt.get("s-1") is not None
        assert (await ref.call(add(3)))["total"] == 5


async def test_concurrent_first_calls_start_it_once() -> None:
    events = Events()
    async with Runtime(MemoryStore()) as rt:
        rt.add_listener(events)
        ref = rt.ref("s-1", cls=Session)
        outs = await asyncio.gather(*(ref.call(add()) for _ in range(20)))
        assert sorted(o["total"] for o in outs) == list(range(1, 21))
        assert events.count("started") == 1


async def test_idle_agent_passivates_and_reactivates_with_its_state(tmp_path: Path) -> None:
    events = Events()
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        rt.add_listener(events)
        ref = rt.ref("s-1", cls=Idle)
        await ref.call(add(7))
        await events.wait("stopped", 1, "passivated")
        assert rt.get("s-1") is None
        cp = await store.load("s-1")
        assert cp is not None and cp.state["total"] == 7
        assert (await ref.call(add(1)))["total"] == 8
        assert events.count("started") == 2
    # and after a restart of the process, from the same file
    async with SQLiteStore(path) as store, Runtime(store) as rt:
        assert (await rt.ref("s-1", cls=Idle).call(add(1)))["total"] == 9


async def test_passivated_agent_with_a_schedule_wakes_when_due() -> None:
    events = Events()
    store = MemoryStore()
    async with Runtime(store) as rt:
        rt.add_listener(events)
        await rt.ref("s-1", cls=Idle).call(add(1, remind=0.3))
        await events.wait("stopped", 1, "passivated")
        assert rt.get("s-1") is None
        await events.wait("started", 2)  # the due index started it again
        while True:
            cp = await store.load("s-1")
            assert cp is not None
            if cp.state["total"] == 101:
                break
            await events.wait("stopped", events.count("stopped") + 1)
        assert cp.timers == {}


async def test_explicit_passivate_and_activate() -> None:
    async with Runtime(MemoryStore()) as rt:
        ref = await rt.activate(Session, "s-1")
        await ref.call(add(4))
        assert await rt.passivate("s-1")
        assert rt.get("s-1") is None
        again = await rt.activate(Session, "s-1")
        assert (await again.call(add(1)))["total"] == 5
        assert (await ref.call(add(1)))["total"] == 6  # an old ref reaches the new activation


async def test_idle_timeout_needs_a_store() -> None:
    async with Runtime() as rt:
        with pytest.raises(ValidationError):
            await rt.ref("s-1", cls=Idle).call(add())
