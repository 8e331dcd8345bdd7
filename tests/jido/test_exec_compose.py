"""Chains and plans: result merging, parallel phases, failures and cycle detection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from jido import (
    Action,
    ActionContext,
    DefinitionError,
    ExecutionError,
    Plan,
    TimeoutError,
    chain,
)


class Double(Action):
    """Double x."""

    class Params(BaseModel):
        x: int

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"x": params.x * 2}, f"doubled:{params.x}"


class Describe(Action):
    """Describe x with a label."""

    class Params(BaseModel):
        x: int
        label: str = "value"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"text": f"{params.label}={params.x}"}


class Fail(Action):
    """Fail."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        raise RuntimeError("broken step")


async def test_chain_merges_results_into_next_params() -> None:
    out = await chain([Double, Double, (Describe, {"label": "n"})], {"x": 3})
    assert out.result == {"x": 12, "text": "n=12"}  # per-step extras are not results
    assert out.directives == ["doubled:3", "doubled:6"]


async def test_chain_passes_only_declared_keys_to_strict_actions() -> None:
    # "text" from Describe would be an unknown key for Double; the chain filters it.
    out = await chain([Describe, Double], {"x": 1})
    assert out.result["x"] == 2
    assert out.result["text"] == "value=1"


async def test_chain_stops_at_first_failure_with_position() -> None:
    ran: list[int] = []

    class Track(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            ran.append(1)
            return {}

    with pytest.raises(ExecutionError) as info:
        await chain([Track, Fail, Track])
    assert ran == [1]
    assert info.value.details["chain_index"] == 1
    assert info.value.details["chain_action"] == "fail"


async def test_chain_timeout_bounds_the_whole_chain() -> None:
    class Wait(Action):
        timeout = None

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        await chain([Double, Wait], {"x": 1}, timeout=0.05)


def test_plan_phases_and_cycle_detection() -> None:
    plan = (
        Plan()
        .add("a", Double, {"x": 1})
        .add("b", Double, {"x": 2})
        .add("c", Describe, depends_on=["a"])
        .add("d", Describe, depends_on=["b", "c"])
    )
    assert [sorted(p) for p in plan.phases()] == [["a", "b"], ["c"], ["d"]]

    cyclic = Plan().add("a", Double, depends_on=["c"]).add("b", Double, depends_on=["a"])
    cyclic.add("c", Double, depends_on=["b"]).add("free", Double)
    with pytest.raises(DefinitionError, match="cycle") as info:
        cyclic.phases()
    cycle = info.value.details["cycle"]
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}

    self_loop = Plan().add("s", Double, depends_on=["s"])
    with pytest.raises(DefinitionError, match="s -> s"):
        self_loop.phases()
    with pytest.raises(DefinitionError, match="unknown step"):
        Plan().add("a", Double, depends_on=["nope"]).phases()
    with pytest.raises(DefinitionError, match="unique"):
        Plan().add("a", Double).add("a", Double)


async def test_plan_runs_each_phase_in_parallel() -> None:
    arrived = 0
    both_in = asyncio.Event()

    class Meet(Action):
        """Finish only once both steps of the phase are running at the same time."""

        class Params(BaseModel):
            tag: str

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            nonlocal arrived
            arrived += 1
            if arrived == 2:
                both_in.set()
            await both_in.wait()
            return {params.tag: True}

    class Join(Action):
        extra = "allow"

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {"seen": sorted(params.model_extra)}

    plan = Plan().add("left", Meet, {"tag": "l"}).add("right", Meet, {"tag": "r"})
    plan.add("join", Join, depends_on=["left", "right"])
    results = await asyncio.wait_for(plan.run(), 5)
    assert results["left"].result == {"l": True}
    assert results["join"].result == {"seen": ["l", "r"]}


async def test_plan_feeds_dependency_results_forward() -> None:
    plan = Plan().add("double", Double, {"x": 5}).add("show", Describe, depends_on=["double"])
    results = await plan.run(ActionContext(agent_id="a"))
    assert results["show"].result == {"text": "value=10"}


async def test_plan_failure_cancels_the_rest_of_its_phase() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    class Slow(Action):
        timeout = None

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

    class FailAfterStart(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            await started.wait()
            raise RuntimeError("boom")

    plan = Plan().add("ok", Double, {"x": 1}).add("slow", Slow).add("bad", FailAfterStart)
    plan.add("later", Double, {"x": 1}, depends_on=["bad"])
    with pytest.raises(ExecutionError) as info:
        await plan.run()
    assert cancelled.is_set()
    assert info.value.details["plan_step"] == "bad"
    assert "later" not in info.value.details["completed_steps"]


async def test_cancelling_a_plan_cancels_its_running_steps() -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    class Long(Action):
        timeout = None

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                stopped.set()

    runner = asyncio.create_task(Plan().add("long", Long).add("quick", Double, {"x": 1}).run())
    await started.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert stopped.is_set()
