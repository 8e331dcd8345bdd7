"""Two cooperating agents, a skill and a sensor, on one node with no server.

* ``Orders`` takes ``order.place`` signals, remembers each order and asks ``Inventory`` (by agent
  id) to reserve stock. Its ``Fulfilment`` skill (a state slice of its own) handles the answers:
  a confirmation is published on the bus as ``order.fulfilled``; a rejection is retried later
  with a ``Schedule`` directive.
* ``Inventory`` reserves stock and answers ``Orders``. A heartbeat sensor it starts on
  ``inventory.open`` restocks one unit per beat, so every back-ordered order is fulfilled in the
  end.

Run it with ``python examples/warehouse.py``; state is checkpointed to SQLite in a temporary
directory and read back at the end.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from jido import (
    Action,
    ActionContext,
    Agent,
    Emit,
    HeartbeatSensor,
    Runtime,
    Schedule,
    Signal,
    Skill,
    SQLiteStore,
    StartSensor,
)

ORDERS = 6
INITIAL_STOCK = 2

# -- inventory --------------------------------------------------------------------------------


class Reserve(Action):
    """Reserve one unit for an order, or reject it when out of stock."""

    class Params(BaseModel):
        order_id: str

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        stock = ctx.state.stock
        ok = stock > 0
        answer = ctx.signal.caused(
            type="order.confirmed" if ok else "order.rejected",
            source="/inventory",
            data={"order_id": params.order_id},
        )
        return {"stock": stock - 1 if ok else stock}, Emit(answer, to="orders")


class Restock(Action):
    """Add one unit (driven by the heartbeat sensor)."""

    class Params(BaseModel):
        count: int = 0

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"stock": ctx.state.stock + 1, "restocks": ctx.state.restocks + 1}


class Open(Action):
    """Start the restocking heartbeat."""

    class Params(BaseModel):
        every: float = Field(0.01, gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        sensor = HeartbeatSensor(id="restock", interval=params.every, type="inventory.restock")
        return {}, StartSensor(sensor)


class InventoryState(BaseModel):
    stock: int = 0
    restocks: int = 0


class Inventory(Agent):
    """Keeps stock; restocked by a heartbeat sensor."""

    state_model = InventoryState
    actions = [Reserve, Restock, Open]
    routes = [
        ("stock.reserve", Reserve),
        ("inventory.restock", Restock),
        ("inventory.open", Open),
    ]


# -- orders and the fulfilment skill ------------------------------------------------------------


class Place(Action):
    """Record an order and ask the inventory for stock."""

    class Params(BaseModel):
        order_id: str
        item: str

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        ask = ctx.signal.caused(
            type="stock.reserve", source="/orders", data={"order_id": params.order_id}
        )
        orders = {**ctx.state.orders, params.order_id: params.item}
        return {"orders": orders}, Emit(ask, to="inventory")


class Confirmed(Action):
    """Note a confirmed order and publish it."""

    class Params(BaseModel):
        order_id: str

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        done = ctx.signal.caused(
            type="order.fulfilled", source="/orders", data={"order_id": params.order_id}
        )
        return {"fulfilled": [*ctx.state.fulfilled, params.order_id]}, Emit(done)


class Rejected(Action):
    """Note a back-order and ask again a little later."""

    class Params(BaseModel):
        order_id: str

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        config = ctx.metadata["skill_config"]
        # a scheduled signal comes back to this agent, which forwards it to the inventory
        retry = Signal(type="orders.retry", source="/orders", data={"order_id": params.order_id})
        later = Schedule(retry, delay=config.retry_after, key=f"retry-{params.order_id}")
        return {"backorders": ctx.state.backorders + 1}, later


class Retry(Action):
    """Forward a scheduled retry to the inventory."""

    class Params(BaseModel):
        order_id: str

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        ask = Signal(type="stock.reserve", source="/orders", data={"order_id": params.order_id})
        return {}, Emit(ask, to="inventory")


class FulfilmentState(BaseModel):
    fulfilled: list[str] = Field(default_factory=list)
    backorders: int = 0


class FulfilmentConfig(BaseModel):
    retry_after: float = Field(0.01, gt=0)


class Fulfilment(Skill):
    """Tracks confirmations and retries rejected orders."""

    state_model = FulfilmentState
    config_model = FulfilmentConfig
    actions = [Confirmed, Rejected, Retry]
    routes = [
        ("order.confirmed", Confirmed),
        ("order.rejected", Rejected),
        ("orders.retry", Retry),
    ]


class OrdersState(BaseModel):
    orders: dict[str, str] = Field(default_factory=dict)


class Orders(Agent):
    """Takes orders; fulfilment is a mounted skill."""

    state_model = OrdersState
    actions = [Place]
    routes = [("order.place", Place)]
    skills = [Fulfilment(retry_after=0.01)]


# -- the app ---------------------------------------------------------------------------------


async def main(db: Path) -> dict[str, Any]:
    """Run the warehouse until every order is fulfilled; return a summary."""
    async with SQLiteStore(db) as store, Runtime(store=store) as rt:
        fulfilled: asyncio.Queue[Signal] = asyncio.Queue()
        rt.bus.subscribe("order.fulfilled", fulfilled)
        orders = await rt.start(Orders, id="orders")
        inventory = await rt.start(Inventory, id="inventory", state={"stock": INITIAL_STOCK})
        for i in range(ORDERS):
            await orders.call(
                Signal(
                    type="order.place",
                    source="/app",
                    data={"order_id": f"o{i}", "item": "widget"},
                )
            )
        # every reservation is queued at the inventory before it opens (mailboxes are FIFO):
        # the first INITIAL_STOCK orders are confirmed, the rest wait for restocking
        await inventory.call(Signal(type="inventory.open", source="/app", data={"every": 0.01}))
        seen = {
            (await asyncio.wait_for(fulfilled.get(), 30)).data["order_id"] for _ in range(ORDERS)
        }
        await rt.stop("inventory")  # stops its sensor too
        state = await orders.state()
    # everything was checkpointed: read it back in a fresh runtime
    async with SQLiteStore(db) as store, Runtime(store=store) as rt:
        again = await rt.start(Orders, id="orders")
        restored = await again.state()
    return {
        "fulfilled": sorted(seen),
        "backorders": state.fulfilment.backorders,  # type: ignore[attr-defined]
        "restored_fulfilled": len(restored.fulfilment.fulfilled),  # type: ignore[attr-defined]
    }


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        summary = asyncio.run(main(Path(tmp) / "warehouse.db"))
    print(f"fulfilled {len(summary['fulfilled'])} orders: {', '.join(summary['fulfilled'])}")
    print(f"back-ordered and retried: {summary['backorders']} times")
    print(f"restored from SQLite: {summary['restored_fulfilled']} fulfilled orders")
    sys.exit(0 if len(summary["fulfilled"]) == ORDERS else 1)
