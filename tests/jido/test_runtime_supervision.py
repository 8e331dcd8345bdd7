"""Supervision: crashes, restarts from the last checkpoint, restart intensity, parent/child."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, Field

from jido import (
    Action,
    ActionContext,
    Agent,
    AgentEvent,
    AgentExistsError,
    AgentNotFoundError,
    ExecutionError,
    Instruction,
    MemoryStore,
    Runtime,
    Signal,
    Spawn,
    Stop,
    StopChild,
)


class Inc(Action):
    """Increment."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"n": ctx.state.n + 1}


class Crash(Action):
    """Ask for a crash (the after_run hook raises)."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"crash": True}


class CounterState(BaseModel):
    n: int = 0


MOUNTS: list[str] = []


class Fragile(Agent):
    """Crashes when its hook sees a crash result."""

    state_model = CounterState
    actions = [Inc, Crash]
    routes = [("f.inc", Inc), ("f.crash", Crash)]
    max_restarts = 2
    restart_window = 60.0

    def mount(self) -> None:
        MOUNTS.append(self.id)

    def after_run(self, instruction: Instruction, result: dict[str, Any]) -> None:
        if result.get("crash"):
            raise RuntimeError("hook bug")


def sig(type: str, data: Any = None) -> Signal:
    return Signal(type=type, source="/t", data=data)


@pytest.fixture(autouse=True)
def _reset() -> None:
    MOUNTS.clear()


async def test_crash_restarts_from_last_checkpoint_and_keeps_mailbox() -> None:
    store = MemoryStore()
    events: list[AgentEvent] = []
    async with Runtime(store=store, checkpoint=2) as rt:
        rt.add_listener(events.append)
        ref = await rt.start(Fragile, id="f")
        for _ in range(3):
            await ref.call(sig("f.inc"))  # checkpoint at n=2, n=3 only in memory
        crash = asyncio.ensure_future(ref.call(sig("f.crash")))
        queued = asyncio.ensure_future(ref.call(sig("f.inc")))  # waits behind the crash
        results = await asyncio.gather(crash, queued, return_exceptions=True)
        err = results[0]
        assert isinstance(err, ExecutionError) and "crashed" in err.message
        assert err.details["exception"] == "RuntimeError"
        # restarted from the checkpoint (n=2, not the in-memory 3), then the queued one ran
        assert results[1] == {"n": 3}
        assert (await ref.state()).n == 3
        assert MOUNTS == ["f", "f"]
    kinds = [e.kind for e in events]
    assert kinds[:3] == ["started", "crashed", "restarted"]
    assert events[1].error is not None and events[1].error.type == "execution_error"


async def test_crash_without_store_keeps_committed_state() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Fragile, id="f")
        await ref.call(sig("f.inc"))
        with pytest.raises(ExecutionError):
            await ref.call(sig("f.crash"))
        assert (await ref.state()).n == 1
        assert await ref.call(sig("f.inc")) == {"n": 2}


async def test_restart_intensity_then_stays_stopped_and_signals_failure() -> None:
    events: list[AgentEvent] = []
    async with Runtime() as rt:
        failed: asyncio.Queue[Signal] = asyncio.Queue()
        rt.bus.subscribe("jido.agent.failed", failed)
        rt.add_listener(events.append)
        ref = await rt.start(Fragile, id="f")
        for _ in range(2):
            with pytest.raises(ExecutionError):
                await ref.call(sig("f.crash"))
        assert rt.ids() == ["f"]
        with pytest.raises(ExecutionError):
            await ref.call(sig("f.crash"))
        assert rt.ids() == []
        note = await asyncio.wait_for(failed.get(), 10)
        assert note.data["agent_id"] == "f"
        assert note.data["error"]["type"] == "execution_error"
        with pytest.raises(AgentNotFoundError):
            await ref.call(sig("f.inc"))
    kinds = [e.kind for e in events]
    assert kinds == [
        "started",
        "crashed",
        "restarted",
        "crashed",
        "restarted",
        "crashed",
        "stopped",
    ]
    assert events[-1].reason == "failed"


async def test_restarts_outside_the_window_do_not_count() -> None:
    class Forgiving(Fragile):
        max_restarts = 1
        restart_window = 0.0

    async with Runtime() as rt:
        ref = await rt.start(Forgiving, id="f")
        for _ in range(4):
            with pytest.raises(ExecutionError):
                await ref.call(sig("f.crash"))
        assert rt.ids() == ["f"]


class ChildState(BaseModel):
    n: int = 0


class Child(Agent):
    """A child that can stop itself."""

    state_model = ChildState
    actions = [Inc]
    routes = [("child.inc", Inc)]

    def shutdown(self, reason: str) -> None:
        MOUNTS.append(f"child-down:{self.id}:{reason}")


class SpawnChild(Action):
    """Spawn a child."""

    class Params(BaseModel):
        id: str | None = None

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {}, Spawn(Child, id=params.id)


class KillChild(Action):
    """Stop a child."""

    class Params(BaseModel):
        id: str

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {}, StopChild(params.id, reason="fired")


class ChildExited(Action):
    """Record a child's exit."""

    class Params(BaseModel):
        id: str
        reason: str
        agent_type: str

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"exits": [*ctx.state.exits, f"{params.id}:{params.reason}"]}


class StopSelf(Action):
    """Stop this agent."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"stopped": True}, Stop("self")


class ParentState(BaseModel):
    exits: list[str] = Field(default_factory=list)


class Parent(Agent):
    """Supervises children."""

    state_model = ParentState
    actions = [SpawnChild, KillChild, ChildExited]
    routes = [
        ("p.spawn", SpawnChild),
        ("p.kill", KillChild),
        ("jido.agent.child.exited", ChildExited),
    ]


class SelfStopping(Child):
    actions = [Inc, StopSelf]
    routes = [("child.inc", Inc), ("child.stop", StopSelf)]


async def test_spawn_child_stop_child_and_exit_signal() -> None:
    async with Runtime() as rt:
        parent = await rt.start(Parent, id="p")
        await parent.call(sig("p.spawn", {"id": "kid"}))
        await parent.call(sig("p.spawn"))
        assert rt.children("p") == ["kid", "p/2"]
        assert rt.parent("kid") == "p"
        kid = rt.ref("kid")
        assert await kid.call(sig("child.inc")) == {"n": 1}
        await parent.call(sig("p.kill", {"id": "kid"}))
        assert "kid" not in rt.ids()
        await rt.wait_idle()
        assert (await parent.state()).exits == ["kid:fired"]
        assert rt.children("p") == ["p/2"]
        with pytest.raises(AgentExistsError):
            await rt.start(Child, id="p/2")
        with pytest.raises(AgentNotFoundError):
            await parent.call(sig("p.kill", {"id": "nobody"}))


async def test_default_child_ids_are_never_reused() -> None:
    # a child that exited leaves the parent's list; numbering by list length handed its
    # successor the id of a child still running (AgentExistsError)
    async with Runtime() as rt:
        parent = await rt.start(Parent, id="p")
        await parent.call(sig("p.spawn"))
        await parent.call(sig("p.spawn"))
        assert rt.children("p") == ["p/1", "p/2"]
        await parent.call(sig("p.kill", {"id": "p/1"}))
        await parent.call(sig("p.spawn"))
        assert rt.children("p") == ["p/2", "p/3"]
        await rt.wait_idle()
        assert (await parent.state()).exits == ["p/1:fired"]


async def test_children_stop_with_their_parent() -> None:
    async with Runtime() as rt:
        parent = await rt.start(Parent, id="p")
        await parent.call(sig("p.spawn", {"id": "a"}))
        await parent.call(sig("p.spawn", {"id": "b"}))
        await rt.stop("p")
        assert rt.ids() == []
        assert sorted(MOUNTS) == ["child-down:a:parent", "child-down:b:parent"]


async def test_stop_directive_stops_after_the_command() -> None:
    events: list[AgentEvent] = []
    async with Runtime() as rt:
        rt.add_listener(events.append)
        parent = await rt.start(Parent, id="p")
        await rt.start(SelfStopping, id="s", parent="p")
        ref = rt.ref("s")
        assert await ref.call(sig("child.stop")) == {"stopped": True}
        await rt.wait_idle()
        assert "s" not in rt.ids()
        assert (await parent.state()).exits == ["s:self"]
    assert ("stopped", "s", "self") in [(e.kind, e.agent_id, e.reason) for e in events]


async def test_start_with_unknown_parent() -> None:
    async with Runtime() as rt:
        with pytest.raises(AgentNotFoundError):
            await rt.start(Child, id="c", parent="ghost")
