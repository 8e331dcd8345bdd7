"""The agent of the seed-table benchmark (plain ``jido``; shared by the single-node half)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from jido import Action, Agent, Signal


class Noop(Action):
    """Do nothing (signal routing figure)."""

    async def run(self, params: Any, ctx: Any) -> Any:
        return None


class Work100ms(Action):
    """A 100 ms action (action execution figure)."""

    async def run(self, params: Any, ctx: Any) -> Any:
        await asyncio.sleep(0.1)
        return None


class Bump(Action):
    """Change the state (state persistence figure)."""

    async def run(self, params: Any, ctx: Any) -> Any:
        return {"n": ctx.state.n + 1, "note": "x" * 64}


class SeedState(BaseModel):
    """A small state, checkpointed on every command."""

    n: int = 0
    note: str = ""


class SeedAgent(Agent):
    """The seed table's agent: one route per figure."""

    state_model = SeedState
    actions = [Noop, Work100ms, Bump]
    routes = [("seed.noop", Noop), ("seed.work", Work100ms), ("seed.bump", Bump)]
    mailbox_size = 100_000  # the throughput figures keep thousands of calls in flight


NOOP = Signal(type="seed.noop", source="/bench")
WORK = Signal(type="seed.work", source="/bench")
BUMP = Signal(type="seed.bump", source="/bench")
