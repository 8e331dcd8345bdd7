"""The sample app of ``foundation demo``: order processing with critical and non-critical agents.

* :class:`OrderDesk` (critical) — takes orders for one sales channel, keeps a running count and
  revenue; mounts the :class:`Metrics` skill (a state slice counting pings).
* :class:`Inventory` (critical) — reserves stock per SKU and refuses what is not there.
* :class:`Notifier` (not critical) — counts notifications; ``notifier.start`` starts a
  :class:`jido.HeartbeatSensor` whose ticks it counts too.

Every class is a plain ``jido`` agent; the ``Clustered`` versions add only the mixin. Host them
with ``foundation node --app foundation.demo_app:AGENTS``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from foundation.hosting.clustered import Clustered
from jido import Action, ActionContext, Agent, Skill
from jido._directive import StartSensor
from jido._sensor import HeartbeatSensor

# -- skill -------------------------------------------------------------------------------------


class MetricsState(BaseModel):
    """State slice of the :class:`Metrics` skill."""

    pings: int = 0


class Ping(Action):
    """Count one health ping in the metrics slice and echo the count."""

    name = "metrics_ping"

    async def run(self, params: BaseModel, ctx: ActionContext) -> dict[str, Any]:
        """Increment ``pings``."""
        return {"pings": ctx.state.pings + 1}


class Metrics(Skill):
    """Health pings for any agent: route ``metrics.ping``, state slice ``metrics``."""

    name = "metrics"
    state_model = MetricsState
    actions = [Ping]
    routes = [("metrics.ping", Ping)]


# -- orders ------------------------------------------------------------------------------------


class OrderState(BaseModel):
    """Running totals of one order desk."""

    orders: int = 0
    revenue: int = 0
    last_order: str | None = None


class PlaceOrder(Action):
    """Accept one order and add its amount to the desk's revenue."""

    name = "place_order"

    class Params(BaseModel):
        order_id: str = Field(min_length=1, description="Order id")
        amount: int = Field(gt=0, description="Amount in cents")

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        """Count the order and its revenue."""
        state = ctx.state
        return {
            "orders": state.orders + 1,
            "revenue": state.revenue + params.amount,
            "last_order": params.order_id,
        }


class OrderDesk(Agent):
    """Takes orders for one sales channel."""

    state_model = OrderState
    actions = [PlaceOrder]
    routes = [("order.place", PlaceOrder)]
    skills = [Metrics]


# -- inventory -----------------------------------------------------------------------------------


class InventoryState(BaseModel):
    """Stock and reservations per SKU."""

    stock: dict[str, int] = Field(default_factory=dict)
    reserved: int = 0


class Restock(Action):
    """Add units of a SKU to the stock."""

    name = "restock"

    class Params(BaseModel):
        sku: str = Field(min_length=1)
        qty: int = Field(gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        """Increase the stock of ``sku``."""
        stock = dict(ctx.state.stock)
        stock[params.sku] = stock.get(params.sku, 0) + params.qty
        return {"stock": stock}


class Reserve(Action):
    """Reserve units of a SKU; fails with a validation error when stock is short."""

    name = "reserve"

    class Params(BaseModel):
        sku: str = Field(min_length=1)
        qty: int = Field(gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        """Take ``qty`` units of ``sku`` out of the stock."""
        from jido import ValidationError

        stock = dict(ctx.state.stock)
        have = stock.get(params.sku, 0)
        if have < params.qty:
            raise ValidationError(
                f"only {have} units of {params.sku!r} left; restock or order less",
                details={"sku": params.sku, "have": have, "want": params.qty},
            )
        stock[params.sku] = have - params.qty
        return {"stock": stock, "reserved": ctx.state.reserved + params.qty}


class Inventory(Agent):
    """Reserves stock for orders."""

    state_model = InventoryState
    actions = [Restock, Reserve]
    routes = [("inventory.restock", Restock), ("inventory.reserve", Reserve)]


# -- notifier -------------------------------------------------------------------------------------


class NotifierState(BaseModel):
    """Counters of one notifier."""

    sent: int = 0
    ticks: int = 0


class Notify(Action):
    """Record one customer notification."""

    name = "notify"

    class Params(BaseModel):
        order_id: str = ""

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        """Count it."""
        return {"sent": ctx.state.sent + 1}


class Tick(Action):
    """Count one heartbeat of the notifier's sensor."""

    name = "tick"

    class Params(BaseModel):
        count: int = 0

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        """Count it."""
        return {"ticks": ctx.state.ticks + 1}


class StartTicking(Action):
    """Start the notifier's heartbeat sensor (one tick per ``interval`` seconds)."""

    name = "start_ticking"

    class Params(BaseModel):
        interval: float = Field(1.0, gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        """Return a ``StartSensor`` directive for a heartbeat sensor."""
        sensor = HeartbeatSensor(interval=params.interval, type="notifier.tick")
        return {}, StartSensor(sensor, key="heartbeat")


class Notifier(Agent):
    """Sends (counts) customer notifications; a heartbeat sensor keeps it ticking."""

    state_model = NotifierState
    actions = [Notify, Tick, StartTicking]
    routes = [
        ("notify.send", Notify),
        ("notifier.tick", Tick),
        ("notifier.start", StartTicking),
    ]


# -- clustered versions ---------------------------------------------------------------------------


class ClusteredOrderDesk(Clustered, OrderDesk, critical=True, placement="least_loaded"):
    """An order desk anywhere in the cluster; re-placed with its state if its node dies."""


class ClusteredInventory(Clustered, Inventory, critical=True, placement="least_loaded"):
    """The inventory anywhere in the cluster; re-placed with its state if its node dies."""


class ClusteredNotifier(Clustered, Notifier, critical=False, placement="least_loaded"):
    """A notifier anywhere in the cluster; dropped (not re-placed) if its node dies."""


AGENTS: list[type[Agent]] = [ClusteredOrderDesk, ClusteredInventory, ClusteredNotifier]
"""The agent classes every demo node hosts (``--app foundation.demo_app:AGENTS``)."""

__all__ = [
    "AGENTS",
    "ClusteredInventory",
    "ClusteredNotifier",
    "ClusteredOrderDesk",
    "Inventory",
    "Metrics",
    "Notifier",
    "OrderDesk",
]
