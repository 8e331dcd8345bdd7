"""Agents of the durable-schedule tests (importable by node processes)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

from foundation.hosting.clustered import Clustered
from jido import Action, ActionContext, Schedule, Signal
from jido._agent import Agent


class ReminderState(BaseModel):
    """Whether a reminder is armed, when it is due, and every firing (pid, wall time)."""

    armed: bool = False
    due: float = 0.0
    fired: list[tuple[int, float]] = Field(default_factory=list)


class ArmAt(Action):
    """Schedule ``reminder.ring`` for the unix time ``at``."""

    name = "arm_at"

    class Params(BaseModel):
        at: float

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        import time

        ring = Signal(type="reminder.ring", source="/timer")
        delay = max(0.0, params.at - time.time())
        return {"armed": True, "due": params.at}, Schedule(ring, delay=delay, key="ring")


class Ring(Action):
    """Record one firing: the process that ran it and when."""

    name = "ring"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        import time

        return {"fired": [*ctx.state.fired, (os.getpid(), time.time())]}


class Pid(Action):
    """Answer with the pid of the process running the agent."""

    name = "pid"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"pid": os.getpid()}


class Reminder(Clustered, Agent, critical=True, placement="least_loaded"):
    """A critical agent with one durable reminder."""

    state_model = ReminderState
    actions = [ArmAt, Ring, Pid]
    routes = [("reminder.arm", ArmAt), ("reminder.ring", Ring), ("reminder.pid", Pid)]


AGENTS: list[type[Agent]] = [Reminder]
