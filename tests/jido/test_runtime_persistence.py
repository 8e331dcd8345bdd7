"""Runtime persistence: checkpoint policies, restore, meta, fencing, hibernation and thaw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from jido import (
    Action,
    ActionContext,
    Agent,
    AgentEvent,
    AgentNotFoundError,
    Checkpoint,
    FencedError,
    MemoryStore,
    Runtime,
    Signal,
    SQLiteStore,
    StoreError,
    ValidationError,
)


class Inc(Action):
    """Increment."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"n": ctx.state.n + 1}


class CounterState(BaseModel):
    n: int = 0


class Counter(Agent):
    """Counts."""

    state_model = CounterState
    actions = [Inc]
    routes = [("c.inc", Inc)]


class EveryTwo(Counter):
    checkpoint = 2


class OnStop(Counter):
    checkpoint = "on_stop"


class Never(Counter):
    checkpoint = "never"


INC = Signal(type="c.inc", source="/t")


class SpyStore(MemoryStore):
    """A memory store that records saves and can fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[Checkpoint] = []
        self.fail_with: BaseException | None = None

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.saves.append(checkpoint)
        await super().save(key, checkpoint)


async def test_checkpoint_every_command_before_reply() -> None:
    store = SpyStore()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Counter, id="c")
        await ref.call(INC)
        # answered only after the save: the checkpoint is already there
        cp = await store.load("c")
        assert cp is not None and cp.state == {"n": 1} and cp.seq == 1
        assert cp.agent_type.endswith(":Counter")
        await ref.call(INC)
        assert [c.seq for c in store.saves] == [1, 2]


async def test_meta_is_merged_into_the_same_checkpoint_write() -> None:
    store = SpyStore()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Counter, id="c")
        await ref.call(INC, meta={"stream_seq": 10})
        await ref.cast(INC, meta={"stream_seq": 11, "node": "n1"})
        await rt.wait_idle()
        assert [c.meta for c in store.saves] == [
            {"stream_seq": 10},
            {"stream_seq": 11, "node": "n1"},
        ]
        assert [c.state["n"] for c in store.saves] == [1, 2]


async def test_restore_on_start_wins_over_given_state() -> None:
    store = MemoryStore()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Counter, id="c")
        await ref.call(INC)
        await ref.call(INC)
    async with Runtime(store=store) as rt:
        ref = await rt.start(Counter, id="c", state={"n": 100})
        assert (await ref.state()).n == 2
        await ref.call(INC)
        cp = await store.load("c")
        assert cp is not None and cp.seq == 3


async def test_restore_with_sqlite(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.db") as store, Runtime(store=store) as rt:
        ref = await rt.start(Counter, id="c")
        for _ in range(3):
            await ref.call(INC)
    async with SQLiteStore(tmp_path / "s.db") as store, Runtime(store=store) as rt:
        ref = await rt.start(Counter, id="c")
        assert (await ref.state()).n == 3


async def test_every_n_and_on_stop_and_never_policies() -> None:
    store = SpyStore()
    async with Runtime(store=store) as rt:
        two = await rt.start(EveryTwo, id="two")
        on_stop = await rt.start(OnStop, id="stop")
        never = await rt.start(Never, id="never")
        for _ in range(3):
            await two.call(INC)
            await on_stop.call(INC)
            await never.call(INC)
        assert [(c.state["n"], c.seq) for c in store.saves] == [(2, 2)]
        await rt.stop("two")
        await rt.stop("stop")
        await rt.stop("never")
    assert (await store.load("two")).state == {"n": 3}  # type: ignore[union-attr]
    assert (await store.load("stop")).state == {"n": 3}  # type: ignore[union-attr]
    assert await store.load("never") is None


async def test_runtime_default_policy() -> None:
    store = SpyStore()
    async with Runtime(store=store, checkpoint="on_stop") as rt:
        ref = await rt.start(Counter, id="c")
        await ref.call(INC)
        assert store.saves == []
    assert len(store.saves) == 1


async def test_failed_save_rolls_back_and_agent_keeps_running() -> None:
    store = SpyStore()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Counter, id="c")
        await ref.call(INC)
        store.fail_with = StoreError("disk full")
        with pytest.raises(StoreError, match="disk full"):
            await ref.call(INC)
        assert (await ref.state()).n == 1
        store.fail_with = OSError("io")
        with pytest.raises(StoreError, match="rolled back"):
            await ref.call(INC)
        store.fail_with = None
        assert await ref.call(INC) == {"n": 2}


async def test_fenced_save_rolls_back_fails_caller_and_stops_at_once() -> None:
    store = MemoryStore()
    events: list[AgentEvent] = []
    async with Runtime(store=store) as rt:
        rt.add_listener(events.append)
        ref = await rt.start(Counter, id="c")
        await ref.call(INC)
        # another owner takes over with a newer epoch
        await store.save("c", Checkpoint(state={"n": 50}, agent_type="x", seq=9, epoch=3))
        with pytest.raises(FencedError):
            await ref.call(INC)
        assert "c" not in rt.ids()
        with pytest.raises(AgentNotFoundError):
            await ref.call(INC)
    cp = await store.load("c")
    assert cp is not None and cp.state == {"n": 50} and cp.epoch == 3
    stopped = [e for e in events if e.kind == "stopped"]
    assert stopped and stopped[0].reason == "fenced"


async def test_fenced_stop_fails_queued_work() -> None:
    store = MemoryStore()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Counter, id="c")
        await store.save("c", Checkpoint(state={"n": 50}, agent_type="x", seq=9, epoch=3))
        import asyncio

        first = asyncio.ensure_future(ref.call(INC))
        second = asyncio.ensure_future(ref.call(INC))
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert isinstance(results[0], FencedError)
        assert results[1].__class__.__name__ == "AgentStoppedError"
    cp = await store.load("c")
    assert cp is not None and cp.state == {"n": 50}


async def test_hibernate_and_thaw_transparently() -> None:
    store = SpyStore()
    events: list[str] = []
    async with Runtime(store=store) as rt:
        rt.add_listener(lambda e: events.append(e.kind))
        ref = await rt.start(Counter, id="c")
        await ref.call(INC)
        assert await rt.hibernate("c")
        assert rt.hibernated("c")
        assert rt.statistics()["hibernated"] == 1
        assert (await ref.state()).n == 1  # read from the store, stays hibernated
        assert rt.hibernated("c")
        assert await ref.call(INC) == {"n": 2}
        assert not rt.hibernated("c")
        with pytest.raises(AgentNotFoundError):
            await rt.hibernate("missing")
    assert events == ["started", "hibernated", "thawed", "stopped"]


async def test_hibernate_needs_a_store() -> None:
    async with Runtime() as rt:
        await rt.start(Counter, id="c")
        with pytest.raises(ValidationError, match="store"):
            await rt.hibernate("c")


async def test_idle_agents_hibernate_automatically() -> None:
    store = MemoryStore()
    events: list[AgentEvent] = []
    async with Runtime(store=store, hibernate_after=0.02) as rt:
        import asyncio

        hibernated = asyncio.Event()

        def on_event(ev: AgentEvent) -> None:
            events.append(ev)
            if ev.kind == "hibernated":
                hibernated.set()

        rt.add_listener(on_event)
        ref = await rt.start(Counter, id="c")
        await ref.call(INC)
        await asyncio.wait_for(hibernated.wait(), 10)
        assert rt.hibernated("c")
        assert await ref.call(INC) == {"n": 2}
    assert [e.kind for e in events][:3] == ["started", "hibernated", "thawed"]
