"""Agents of the chaos tests (importable by node processes).

Each command records the id of the signal it applied and the pid of the process that applied
it, so the history checker can tell lost, duplicated and stale-owner writes apart.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from pydantic import BaseModel, Field

from foundation.hosting.clustered import Clustered
from jido import Action, ActionContext
from jido._agent import Agent


class ChaosState(BaseModel):
    """A counter with the ids it applied (in order) and the pid of its last writer."""

    count: int = 0
    applied: list[str] = Field(default_factory=list)
    pid: int = 0


class Apply(Action):
    """Apply one signal: count it and remember its id (``work`` seconds of work first).

    ``die_pid``: when it is this process's pid, the process SIGKILLs itself on the spot — in the
    middle of a command (of a batch, for an inbox agent), before anything is committed. Any other
    process applies the signal as usual.
    """

    name = "apply"

    class Params(BaseModel):
        model_config = {"extra": "allow"}
        work: float = 0.0
        die_pid: int = 0

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        if params.die_pid and params.die_pid == os.getpid():
            os.kill(os.getpid(), signal.SIGKILL)
        if params.work:
            await asyncio.sleep(params.work)
        state = ctx.state
        sid = ctx.signal.id if ctx.signal is not None else ""
        return {"count": state.count + 1, "applied": [*state.applied, sid], "pid": os.getpid()}


class Whoami(Action):
    """Answer with the pid of the process running the agent (and record it)."""

    name = "whoami"

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"pid": os.getpid()}


class ChaosCounter(Agent):
    """The counter every chaos agent is made of."""

    state_model = ChaosState
    actions = [Apply, Whoami]
    routes = [("chaos.apply", Apply), ("chaos.whoami", Whoami)]


class DurableCounter(
    Clustered, ChaosCounter, critical=True, placement="least_loaded", delivery="at_least_once"
):
    """Critical, fed through its JetStream inbox (effectively-once)."""


class CallCounter(Clustered, ChaosCounter, critical=True, placement="least_loaded"):
    """Critical, fed by calls (request/reply)."""


class Scratch(Clustered, ChaosCounter, placement="least_loaded"):
    """Not critical: dropped from the registry when its node dies."""


AGENTS: list[type[Agent]] = [DurableCounter, CallCounter, Scratch]
