"""Action engine overhead and tool-description cost, each against a same-run baseline.

Figures:

* no-op action through ``execute`` (validation + deadline + result normalisation) versus
  awaiting the same ``run`` coroutine directly; target: at most 10 µs absolute p50 overhead;
* an action that suspends once (``await asyncio.sleep(0)``), so the deadline timer is armed,
  through ``execute`` versus awaiting its ``run`` directly;
* an action with two validated fields through ``execute`` versus validating the same model with
  pydantic and awaiting ``run`` by hand (the engine's own cost beyond pydantic);
* ``to_tool()`` for a 20-field nested model after the first call (cached) versus building the
  tool description from scratch; target: at most 5 µs;
* ``execute_tool_call`` (JSON arguments in, JSON result out) versus the hand-written minimum
  (``orjson.loads`` + ``model_validate`` + ``run`` + ``orjson.dumps``).

Latencies are sampled in batches (each sample is the mean of ``BATCH`` back-to-back calls) so
the clock's own cost does not dominate microsecond figures.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

from bench._harness import Row, Stats
from jido import Action, ActionContext, execute, execute_tool_call
from jido._schema import build_tool

GROUP = "actions"
BATCH = 50


class Noop(Action):
    """Do nothing."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return None


class Add(Action):
    """Add two integers."""

    class Params(BaseModel):
        a: int = Field(ge=0)
        b: int = 0

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"sum": params.a + params.b}


class Color(StrEnum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str = Field(description="Street and number")
    city: str
    zip_code: str = Field(pattern=r"^[0-9]{5}$")
    country: Literal["DE", "FR", "US"] = "DE"


class Item(BaseModel):
    sku: str
    quantity: int = Field(ge=1, le=1000)
    price: float = Field(gt=0)


class BigParams(BaseModel):
    f01: str = Field(description="Customer name")
    f02: int = Field(ge=0)
    f03: float | None = None
    f04: bool = False
    f05: Color = Color.RED
    f06: list[str] = Field(default_factory=list)
    f07: Address
    f08: Address | None = None
    f09: list[Item] = Field(default_factory=list)
    f10: Literal["a", "b", "c"] = "a"
    f11: int = Field(default=1, ge=1, le=10)
    f12: str = Field(default="", max_length=200)
    f13: list[int] = Field(default_factory=list, max_length=5)
    f14: Item
    f15: str | None = None
    f16: int | None = None
    f17: float = 0.0
    f18: bool | None = None
    f19: list[Address] = Field(default_factory=list)
    f20: Color | None = None


class Big(Action):
    """An action with a 20-field nested params model."""

    Params = BigParams

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return None


async def _batched_async(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(200):
        await fn()
    out: list[float] = []
    perf = time.perf_counter
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            t0 = perf()
            for _ in range(BATCH):
                await fn()
            out.append((perf() - t0) / BATCH)
    finally:
        gc.enable()
    return out


def _batched_sync(fn: Callable[[], Any], n: int) -> list[float]:
    for _ in range(200):
        fn()
    out: list[float] = []
    perf = time.perf_counter
    for _ in range(n):
        t0 = perf()
        for _ in range(BATCH):
            fn()
        out.append((perf() - t0) / BATCH)
    return out


async def _noop_row(n: int) -> Row:
    inst = Noop()
    params = Noop.Params()
    ctx = ActionContext()
    empty: dict[str, Any] = {}

    async def direct() -> Any:
        return await inst.run(params, ctx)

    async def engine() -> Any:
        return await execute(Noop, empty)

    base = Stats.of(await _batched_async(direct, n))
    ours = Stats.of(await _batched_async(engine, n))
    overhead = ours.median - base.median
    return Row.from_stats(
        GROUP,
        "no-op action via execute()",
        "s",
        ours,
        "await run() directly",
        base,
        target="≤ 10 µs overhead p50",
        note=f"absolute overhead p50 {overhead * 1e6:.2f} µs",
        extra={"overhead_p50_s": overhead},
    )


async def _validated_row(n: int) -> Row:
    inst = Add()
    ctx = ActionContext()
    raw = {"a": 2, "b": 3}
    model = Add.Params

    async def by_hand() -> Any:
        return await inst.run(model.model_validate(raw), ctx)

    async def engine() -> Any:
        return await execute(Add, raw)

    base = Stats.of(await _batched_async(by_hand, n))
    ours = Stats.of(await _batched_async(engine, n))
    overhead = ours.median - base.median
    return Row.from_stats(
        GROUP,
        "2-field action via execute()",
        "s",
        ours,
        "model_validate + await run()",
        base,
        note=f"engine cost beyond pydantic p50 {overhead * 1e6:.2f} µs",
        extra={"overhead_p50_s": overhead},
    )


class Tick(Action):
    """Yield to the event loop once."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        await asyncio.sleep(0)


async def _suspending_row(n: int) -> Row:
    inst = Tick()
    params = Tick.Params()
    ctx = ActionContext()

    async def direct() -> Any:
        return await inst.run(params, ctx)

    async def engine() -> Any:
        return await execute(Tick)

    base = Stats.of(await _batched_async(direct, n))
    ours = Stats.of(await _batched_async(engine, n))
    overhead = ours.median - base.median
    return Row.from_stats(
        GROUP,
        "suspending action via execute() (timer armed)",
        "s",
        ours,
        "await run() directly",
        base,
        note=f"absolute overhead p50 {overhead * 1e6:.2f} µs",
        extra={"overhead_p50_s": overhead},
    )


def _to_tool_row(n: int) -> Row:
    Big.to_tool()  # first call builds and caches

    def uncached() -> Any:
        return build_tool(Big, "openai", True)

    base = Stats.of(_batched_sync(uncached, max(5, n // 20)))
    ours = Stats.of(_batched_sync(Big.to_tool, n))
    return Row.from_stats(
        GROUP,
        "to_tool() 20-field nested model (cached)",
        "s",
        ours,
        "build from model_json_schema",
        base,
        target="≤ 5 µs",
    )


async def _tool_call_row(n: int) -> Row:
    inst = Add()
    ctx = ActionContext()
    args = '{"a": 2, "b": 3}'
    tools = [Add]

    async def by_hand() -> Any:
        params = Add.Params.model_validate(orjson.loads(args))
        return orjson.dumps(await inst.run(params, ctx)).decode()

    async def engine() -> Any:
        return await execute_tool_call("add", args, tools, ctx)

    base = Stats.of(await _batched_async(by_hand, n))
    ours = Stats.of(await _batched_async(engine, n))
    return Row.from_stats(
        GROUP,
        "execute_tool_call (JSON in/out)",
        "s",
        ours,
        "loads + validate + run + dumps",
        base,
    )


async def run(quick: bool) -> list[Row]:
    """Measure the figures (``quick``: few samples, for CI smoke)."""
    n = 40 if quick else 400
    return [
        await _noop_row(n),
        await _validated_row(n),
        await _suspending_row(n),
        _to_tool_row(n),
        await _tool_call_row(n),
    ]
