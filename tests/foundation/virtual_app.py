"""Virtual agent classes of the activation tests (importable by node processes too)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from foundation.hosting.clustered import Clustered
from jido import Action, ActionContext, Schedule, Signal
from jido._agent import Agent


class TallyState(BaseModel):
    """A count, and how many times a reminder fired."""

    count: int = 0
    fired: int = 0


class Bump(Action):
    """Add ``n``; with ``remind`` also schedule a ``tally.fire`` that many seconds ahead."""

    name = "bump"

    class Params(BaseModel):
        n: int = 1
        remind: float | None = None

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        out = {"count": ctx.state.count + params.n}
        if params.remind is None:
            return out
        ring = Signal(type="tally.fire", source="/timer", data={"at": time.time()})
        return out, Schedule(ring, delay=params.remind, key="remind")


class Fire(Action):
    """Count a firing of the reminder."""

    name = "fire"

    class Params(BaseModel):
        model_config = {"extra": "allow"}

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"fired": ctx.state.fired + 1}


class _Tally(Agent):
    state_model = TallyState
    actions = [Bump, Fire]
    routes = [("tally.bump", Bump), ("tally.fire", Fire)]


class Session(Clustered, _Tally, critical=True, virtual=True):
    """A virtual agent that stays active (ids ``session-...``)."""


class Visit(Clustered, _Tally, virtual=True, idle_timeout=0.3):
    """A virtual agent passivated after 0.3 s idle (ids ``visit-...``)."""


class Ledger(Clustered, _Tally, virtual=True, idle_timeout=0.3, delivery="at_least_once"):
    """A virtual agent fed through its JetStream inbox, passivated after 0.3 s idle."""


AGENTS: list[type[Agent]] = [Session, Visit, Ledger]
