"""Agent classes used by the cluster tests (importable by node processes too)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from foundation.hosting.clustered import Clustered
from jido import Action, ActionContext
from jido._agent import Agent


class CounterState(BaseModel):
    """A counter and the node that last applied a command."""

    count: int = 0
    applied_by: list[str] = Field(default_factory=list)


class Add(Action):
    """Add ``n`` to the counter."""

    name = "add"

    class Params(BaseModel):
        n: int = 1

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"count": ctx.state.count + params.n}


class Echo(Action):
    """Echo the signal's data, its trace context and the id of the agent."""

    name = "echo"

    class Params(BaseModel):
        model_config = {"extra": "allow"}

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        sig = ctx.signal
        return {
            "data": params.model_dump(),
            "agent": ctx.agent_id,
            "traceparent": getattr(sig, "traceparent", None),
        }


class Fail(Action):
    """Always fail with a validation error."""

    name = "fail"

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        from jido import ValidationError

        raise ValidationError("refused on purpose", details={"why": "test"})


class Sleep(Action):
    """Sleep ``seconds`` then count one."""

    name = "sleep"

    class Params(BaseModel):
        seconds: float = 0.1

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        await asyncio.sleep(params.seconds)
        return {"count": ctx.state.count + 1}


class Counter(Agent):
    """A counter agent."""

    state_model = CounterState
    actions = [Add, Echo, Fail, Sleep]
    routes = [
        ("counter.add", Add),
        ("counter.echo", Echo),
        ("counter.fail", Fail),
        ("counter.sleep", Sleep),
    ]


class ClusteredCounter(Clustered, Counter, critical=True, placement="least_loaded"):
    """A critical counter placed on the least loaded node."""


class LocalCounter(Clustered, Counter, placement="local"):
    """A counter placed on the spawning node."""


AGENTS: list[type[Agent]] = [ClusteredCounter, LocalCounter, Counter]


class DurableCounter(Clustered, Counter, critical=True, delivery="at_least_once"):
    """A critical counter whose casts travel through its JetStream inbox (acked after apply)."""


AGENTS.append(DurableCounter)


class Blob(Action):
    """Count one and answer with ``size`` bytes of text (a reply as large as asked)."""

    name = "blob"

    class Params(BaseModel):
        size: int = 0

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"count": ctx.state.count + 1, "blob": "x" * params.size}


class Grow(Action):
    """Keep ``size`` bytes of text in the state (a state as large as asked)."""

    name = "grow"

    class Params(BaseModel):
        size: int = 0

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"count": ctx.state.count + 1, "applied_by": ["x" * params.size]}


class Slow(Action):
    """Count one after ``seconds`` of work."""

    name = "slow"

    class Params(BaseModel):
        seconds: float = 0.01

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        await asyncio.sleep(params.seconds)
        return {"count": ctx.state.count + 1}


class BigCounter(Clustered, Counter, critical=True, placement="least_loaded"):
    """A counter whose replies and state can be made large (size-limit tests)."""

    actions = [*Counter.actions, Blob, Grow]
    routes = [*Counter.routes, ("counter.blob", Blob), ("counter.grow", Grow)]


class SlowCounter(Clustered, Counter, critical=True, placement="least_loaded"):
    """A counter with a small mailbox and slow commands (head-of-line tests)."""

    mailbox_size = 64
    actions = [*Counter.actions, Slow]
    routes = [*Counter.routes, ("counter.slow", Slow)]


AGENTS += [BigCounter, SlowCounter]
