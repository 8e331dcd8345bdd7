"""``AgentRef.call_batch``: several signals in one mailbox turn, one checkpoint for all of them.

What the cluster layer relies on: the signals run in order, each as its own command; their state
and the merged ``meta`` are committed in ONE store write; nothing of the batch (state, directives,
reply) is visible before that write; a command error ends the batch at that signal with the
prefix committed; a failed write rolls the whole batch back, and a fenced one stops the agent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from jido import (
    Action,
    ActionContext,
    Agent,
    AgentNotFoundError,
    AgentStoppedError,
    Checkpoint,
    Dispatch,
    Emit,
    ExecutionError,
    FencedError,
    Instruction,
    MemoryStore,
    Runtime,
    Signal,
    Stop,
    StoreError,
    ValidationError,
)
from jido._runtime import BatchOutcome


class AddState(BaseModel):
    total: int = 0
    seen: list[int] = Field(default_factory=list)


class Add(Action):
    """Add ``n`` (must be positive) and remember it."""

    class Params(BaseModel):
        n: int = Field(gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"total": ctx.state.total + params.n, "seen": [*ctx.state.seen, params.n]}


class Boom(Action):
    """Does nothing itself: ``Adder``'s ``before_run`` hook crashes on it."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {}


class Recorder(Dispatch):
    """Records what was emitted to it, at the moment the directive runs."""

    def __init__(self) -> None:
        self.got: list[Signal] = []

    async def dispatch(self, signal: Signal) -> None:
        self.got.append(signal)


SHOUTED = Recorder()


class Shout(Action):
    """Add one and emit a signal saying so."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        out = Signal(type="adder.shouted", source="/t", data={"at": ctx.state.total + 1})
        return {"total": ctx.state.total + 1}, Emit(out, dispatch=SHOUTED)


class Quit(Action):
    """Stop the agent."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {}, Stop("done")


class Adder(Agent):
    """Adds numbers."""

    state_model = AddState
    actions = [Add, Boom, Shout, Quit]
    routes = [
        ("adder.add", Add),
        ("adder.boom", Boom),
        ("adder.shout", Shout),
        ("adder.quit", Quit),
    ]

    def before_run(self, instruction: Instruction) -> Any:
        """A bug in a hook (not a typed command error): the agent crashes."""
        if instruction.action is Boom:
            raise RuntimeError("bug in a hook")
        return None


def add(n: int) -> Signal:
    return Signal(type="adder.add", source="/t", data={"n": n})


class SpyStore(MemoryStore):
    """Records saves; can fail them or hold them until released."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[Checkpoint] = []
        self.fail_with: BaseException | None = None
        self.hold: asyncio.Event | None = None
        self.saving = asyncio.Event()

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        self.saving.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.saves.append(checkpoint)
        await super().save(key, checkpoint)


async def test_batch_applies_in_order_and_commits_once_with_merged_meta() -> None:
    store = SpyStore()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Adder, id="a")
        out = await ref.call_batch(
            [add(1), add(2), add(3)],
            metas=[{"stream_seq": 10}, None, {"stream_seq": 12, "x": 1}],
        )
        assert out == BatchOutcome(
            3,
            (
                {"total": 1, "seen": [1]},
                {"total": 3, "seen": [1, 2]},
                {"total": 6, "seen": [1, 2, 3]},
            ),
        )
        assert len(store.saves) == 1
        [cp] = store.saves
        assert cp.state == {"total": 6, "seen": [1, 2, 3]}
        assert cp.seq == 3  # one command per signal
        assert cp.meta == {"stream_seq": 12, "x": 1}
        # The next batch continues from the committed state and keeps the cumulative meta.
        out = await ref.call_batch([add(4)], metas=[{"stream_seq": 13}])
        assert out.applied == 1
        assert store.saves[-1].seq == 4 and store.saves[-1].meta == {"stream_seq": 13, "x": 1}
        assert (await ref.state()).total == 10  # type: ignore[attr-defined]


async def test_command_error_ends_the_batch_with_the_prefix_committed() -> None:
    store = SpyStore()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Adder, id="a")
        out = await ref.call_batch(
            [add(1), add(2), add(-5), add(7)], metas=[{"stream_seq": s} for s in (1, 2, 3, 4)]
        )
        assert out.applied == 2 and len(out.results) == 2
        assert isinstance(out.error, ValidationError)
        [cp] = store.saves
        assert cp.state["seen"] == [1, 2] and cp.meta == {"stream_seq": 2}
        # A batch failing on its first signal writes nothing.
        out = await ref.call_batch([add(-1), add(9)])
        assert out.applied == 0 and out.results == () and isinstance(out.error, ValidationError)
        assert len(store.saves) == 1
        assert (await ref.state()).seen == [1, 2]  # type: ignore[attr-defined]


async def test_directives_run_and_reply_comes_only_after_the_commit() -> None:
    store = SpyStore()
    store.hold = asyncio.Event()
    SHOUTED.got.clear()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Adder, id="a")
        shout = Signal(type="adder.shout", source="/t")
        pending = asyncio.ensure_future(ref.call_batch([shout, add(5), shout]))
        async with asyncio.timeout(5):
            await store.saving.wait()
        # Every command of the batch ran; its commit is in flight: nothing has left the agent.
        assert SHOUTED.got == [] and not pending.done()
        assert (await ref.state()).total == 0  # type: ignore[attr-defined]
        store.hold.set()
        out = await pending
        assert out.applied == 3 and out.error is None
        assert [s.data["at"] for s in SHOUTED.got] == [1, 7]
        assert (await ref.state()).total == 7  # type: ignore[attr-defined]


async def test_fenced_commit_rolls_back_everything_and_stops_the_agent() -> None:
    store = SpyStore()
    store.fail_with = FencedError("a newer owner holds the key")
    SHOUTED.got.clear()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Adder, id="a")
        with pytest.raises(FencedError):
            await ref.call_batch([add(1), Signal(type="adder.shout", source="/t"), add(2)])
        assert not ref.running
        assert store.saves == [] and SHOUTED.got == []
        with pytest.raises(AgentNotFoundError):
            await ref.call_batch([add(3)])


async def test_failed_commit_rolls_back_the_batch_and_the_agent_keeps_running() -> None:
    store = SpyStore()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Adder, id="a")
        await ref.call_batch([add(1)])
        store.fail_with = StoreError("bucket unreachable", retryable=True)
        with pytest.raises(StoreError):
            await ref.call_batch([add(2), add(3)])
        assert (await ref.state()).seen == [1]  # type: ignore[attr-defined]
        store.fail_with = None
        out = await ref.call_batch([add(2), add(3)])  # the retry applies them once
        assert out.applied == 2
        assert (await ref.state()).seen == [1, 2, 3]  # type: ignore[attr-defined]
        assert store.saves[-1].seq == 3


async def test_crash_mid_batch_commits_the_prefix_and_restarts_from_it() -> None:
    store = SpyStore()
    async with Runtime(store=store) as rt:
        events: list[str] = []
        rt.add_listener(lambda ev: events.append(ev.kind))
        ref = await rt.start(Adder, id="a")
        boom = Signal(type="adder.boom", source="/t")
        out = await ref.call_batch([add(1), add(2), boom, add(4)])
        assert out.applied == 2 and isinstance(out.error, ExecutionError)
        assert "crashed" in events and "restarted" in events
        assert store.saves[-1].state["seen"] == [1, 2]
        assert (await ref.state()).seen == [1, 2]  # type: ignore[attr-defined]
        assert (await ref.call_batch([add(4)])).applied == 1
        assert (await ref.state()).seen == [1, 2, 4]  # type: ignore[attr-defined]


async def test_stop_directive_ends_the_batch() -> None:
    store = SpyStore()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Adder, id="a")
        quit_ = Signal(type="adder.quit", source="/t")
        out = await ref.call_batch([add(1), quit_, add(2)])
        assert out.applied == 2 and isinstance(out.error, AgentStoppedError)
        await rt.wait_idle()
        assert not ref.running
        assert store.saves[-1].state["seen"] == [1]


async def test_bad_arguments_are_refused() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Adder, id="a")
        with pytest.raises(ValidationError):
            await ref.call_batch([])
        with pytest.raises(ValidationError):
            await ref.call_batch([add(1)], metas=[None, None])
        with pytest.raises(ValidationError):
            await ref.call_batch(["adder.add"])  # type: ignore[list-item]
        assert (await ref.state()).total == 0  # type: ignore[attr-defined]


async def test_batches_and_single_calls_interleave_in_mailbox_order() -> None:
    async with Runtime(store=SpyStore()) as rt:
        ref = await rt.start(Adder, id="a")
        first = asyncio.ensure_future(ref.call_batch([add(1), add(2)]))
        single = asyncio.ensure_future(ref.call(add(3)))
        second = asyncio.ensure_future(ref.call_batch([add(4), add(5)]))
        await asyncio.gather(first, single, second)
        assert (await ref.state()).seen == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=-2, max_value=9), min_size=1, max_size=30), st.data())
def test_batches_equal_one_call_per_signal(values: list[int], data: st.DataObject) -> None:
    """Split into random batches (retrying after a failed signal, as the inbox does), the
    outcome equals applying each signal alone: same state, same per-signal failures."""
    cuts = data.draw(st.lists(st.integers(min_value=1, max_value=8), min_size=len(values)))

    async def scenario() -> tuple[list[int], list[int], list[int], list[int]]:
        async with Runtime(store=MemoryStore()) as rt:
            one = await rt.start(Adder, id="one")
            failed_one: list[int] = []
            for i, v in enumerate(values):
                try:
                    await one.call(add(v))
                except ValidationError:
                    failed_one.append(i)
            many = await rt.start(Adder, id="many")
            failed_many: list[int] = []
            i = 0
            for cut in cuts:
                if i >= len(values):
                    break
                chunk = values[i : i + cut]
                out = await many.call_batch([add(v) for v in chunk])
                i += out.applied
                if out.error is not None:
                    failed_many.append(i)
                    i += 1  # a permanently failing signal is passed over (dead-lettered)
            while i < len(values):
                out = await many.call_batch([add(v) for v in values[i:]])
                i += out.applied
                if out.error is not None:
                    failed_many.append(i)
                    i += 1
            s1 = await one.state()
            s2 = await many.state()
            return s1.seen, s2.seen, failed_one, failed_many  # type: ignore[attr-defined]

    seen_one, seen_many, failed_one, failed_many = asyncio.run(scenario())
    assert seen_many == seen_one
    assert failed_many == failed_one
