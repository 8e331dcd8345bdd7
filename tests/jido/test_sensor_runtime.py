"""Sensors owned by agents: started by a directive, feeding the agent, stopped with it."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from jido import (
    Action,
    ActionContext,
    Agent,
    Bus,
    BusSensor,
    HeartbeatSensor,
    Runtime,
    Sensor,
    Signal,
    StartSensor,
    StopSensor,
)

WORLD: dict[str, Any] = {}


class WatchState(BaseModel):
    ticks: int = 0
    orders: list[int] = []


class StartWatching(Action):
    """Start a heartbeat and a bus sensor owned by this agent."""

    name = "start_watching"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        heartbeat = HeartbeatSensor(interval=0.001, type="watch.tick", id="hb")
        orders = BusSensor(WORLD["bus"], pattern="order.*", id="orders")
        WORLD["sensors"] = [heartbeat, orders]
        return {}, [StartSensor(heartbeat), StartSensor(orders)]


class StopHeartbeat(Action):
    """Stop the heartbeat sensor only."""

    name = "stop_heartbeat"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {}, StopSensor("hb")


class Tick(Action):
    """Count a heartbeat."""

    name = "tick"

    class Params(BaseModel):
        count: int

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        ticks = ctx.state.ticks + 1
        if ticks >= 3:
            WORLD["ticked"].set()
        return {"ticks": ticks}


class Order(Action):
    """Record an order forwarded from the bus."""

    name = "order"

    class Params(BaseModel):
        n: int

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        orders = [*ctx.state.orders, params.n]
        if len(orders) >= 2:
            WORLD["ordered"].set()
        return {"orders": orders}


class Watcher(Agent):
    """Counts heartbeats and records orders seen on the bus."""

    state_model = WatchState
    actions = [StartWatching, StopHeartbeat, Tick, Order]
    routes = [
        ("watch.start", StartWatching),
        ("watch.stop_heartbeat", StopHeartbeat),
        ("watch.tick", Tick),
        ("order.*", Order),
    ]


def _sig(type: str, data: Any = None) -> Signal:
    return Signal(type=type, source="/test", data=data)


async def test_agent_sensors_feed_it_and_stop_with_it() -> None:
    WORLD.update(ticked=asyncio.Event(), ordered=asyncio.Event())
    before = asyncio.all_tasks()
    async with Bus() as bus:
        WORLD["bus"] = bus
        async with Runtime() as rt:
            ref = await rt.start(Watcher, id="w1")
            await ref.call(_sig("watch.start"))
            assert set(rt.sensors("w1")) == {"hb", "orders"}
            await asyncio.wait_for(WORLD["ticked"].wait(), 10)
            await bus.publish(_sig("order.placed", {"n": 1}), _sig("user.signed_up", {"n": 9}))
            await bus.publish(_sig("order.paid", {"n": 2}))
            await asyncio.wait_for(WORLD["ordered"].wait(), 10)

            state = await ref.state()
            assert isinstance(state, WatchState)
            assert state.ticks >= 3
            assert state.orders == [1, 2]

            heartbeat, orders = WORLD["sensors"]
            await ref.call(_sig("watch.stop_heartbeat"))
            assert not heartbeat.running and orders.running
            assert set(rt.sensors("w1")) == {"orders"}
            subscriptions = len(bus.subscriptions())

            await rt.stop("w1")
            assert not orders.running
            assert len(bus.subscriptions()) == subscriptions - 1
        assert all(not isinstance(s, Sensor) or not s.running for s in WORLD["sensors"])
    assert asyncio.all_tasks() - before == set()
