"""Agents of the durable-schedule and durable-sensor tests (importable by node processes)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

from foundation.hosting.clustered import Clustered
from jido import Action, ActionContext, HeartbeatSensor, Schedule, Signal, StartSensor
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


class BeaconState(BaseModel):
    """Beats counted, and the process that counted the last one."""

    ticks: int = 0
    pid: int = 0


class Beam(Action):
    """Start the durable heartbeat sensor ``beacon`` feeding this agent."""

    name = "beam"

    class Params(BaseModel):
        interval: float

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        sensor = HeartbeatSensor(id="beacon", interval=params.interval, type="beacon.tick")
        return {}, StartSensor(sensor)


class Count(Action):
    """Count one beat, in this process."""

    name = "count"

    class Params(BaseModel):
        count: int = 0

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"ticks": ctx.state.ticks + 1, "pid": os.getpid()}


class Beacon(Clustered, Agent, critical=True, placement="least_loaded"):
    """A critical agent counting the beats of its own durable sensor."""

    state_model = BeaconState
    actions = [Beam, Count, Pid]
    routes = [("beacon.start", Beam), ("beacon.tick", Count), ("beacon.pid", Pid)]


AGENTS: list[type[Agent]] = [Reminder, Beacon]
