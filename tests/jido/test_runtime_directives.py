"""Directives carried out by the runtime: emit, schedule/cancel (delay and cron), sensors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, Field

from jido import (
    Action,
    ActionContext,
    Agent,
    AgentDispatch,
    AgentNotFoundError,
    CallableDispatch,
    Cancel,
    Emit,
    MailboxFullError,
    Runtime,
    Schedule,
    Sensor,
    Signal,
    StartSensor,
    StopSensor,
    ValidationError,
)


class Say(Action):
    """Emit a signal to where the params say."""

    class Params(BaseModel):
        to: str = "bus"
        text: str = "hi"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        out = ctx.signal.caused(type="chat.said", data={"text": params.text})
        if params.to == "bus":
            return {}, Emit(out)
        if params.to == "self":
            return {}, Emit(
                Signal(type="chat.heard", source="/self", data={"text": params.text}), to_self=True
            )
        return {}, Emit(
            Signal(type="chat.heard", source="/x", data={"text": params.text}), to=params.to
        )


class Heard(Action):
    """Record what was heard."""

    class Params(BaseModel):
        text: str

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"heard": [*ctx.state.heard, params.text]}


class Later(Action):
    """Schedule, cron or cancel."""

    class Params(BaseModel):
        delay: float | None = None
        cron: str | None = None
        cancel: str | None = None
        text: str = "later"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        if params.cancel:
            return {}, Cancel(params.cancel)
        sig = Signal(type="chat.heard", source="/timer", data={"text": params.text})
        if params.cron:
            return {}, Schedule(sig, cron=params.cron, key="cron")
        return {}, Schedule(sig, delay=params.delay, key="once")


class ManualSensor(Sensor):
    """A sensor the test drives by hand."""

    async def setup(self) -> None:
        EV["started"].set()

    async def teardown(self) -> None:
        EV["stopped"].set()


EV: dict[str, asyncio.Event] = {}
SENSOR: dict[str, ManualSensor] = {}


class Watch(Action):
    """Start or stop the manual sensor."""

    class Params(BaseModel):
        stop: bool = False

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        if params.stop:
            return {}, StopSensor("manual")
        return {}, StartSensor(SENSOR["s"], key="manual")


class ChatState(BaseModel):
    heard: list[str] = Field(default_factory=list)


class Chat(Agent):
    """Talks and listens."""

    state_model = ChatState
    actions = [Say, Heard, Later, Watch]
    routes = [
        ("chat.say", Say),
        ("chat.heard", Heard),
        ("chat.later", Later),
        ("chat.watch", Watch),
        ("sensor.tick", Heard),
    ]


def sig(type: str, data: Any = None) -> Signal:
    return Signal(type=type, source="/t", data=data)


@pytest.fixture(autouse=True)
def _reset() -> None:
    EV["started"] = asyncio.Event()
    EV["stopped"] = asyncio.Event()
    SENSOR["s"] = ManualSensor(id="manual")


async def test_emit_to_bus_with_causation() -> None:
    async with Runtime() as rt:
        got: asyncio.Queue[Signal] = asyncio.Queue()
        rt.bus.subscribe("chat.**", got)
        ref = await rt.start(Chat, id="a")
        cause = sig("chat.say", {"text": "hello"})
        await ref.call(cause)
        out = await asyncio.wait_for(got.get(), 10)
        assert out.type == "chat.said" and out.data == {"text": "hello"}
        assert out.causation_id == cause.id


async def test_emit_to_self_and_to_other_agent() -> None:
    async with Runtime() as rt:
        a = await rt.start(Chat, id="a")
        b = await rt.start(Chat, id="b")
        await a.call(sig("chat.say", {"to": "self", "text": "me"}))
        await a.call(sig("chat.say", {"to": "b", "text": "you"}))
        await rt.wait_idle()
        assert (await a.state()).heard == ["me"]
        assert (await b.state()).heard == ["you"]
        await a.call(sig("chat.say", {"to": "ghost", "text": "?"}))
        assert isinstance(rt.dead_letters[-1].error, AgentNotFoundError)
        assert rt.dead_letters[-1].agent_id == "ghost"


ADAPTERS: list[Any] = []


class ViaDispatch(Action):
    """Emit through every adapter in ADAPTERS."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        s = Signal(type="chat.heard", source="/d", data={"text": "d"})
        return {}, [Emit(s, dispatch=adapter) for adapter in ADAPTERS]


class Dispatching(Chat):
    actions = [*Chat.actions, ViaDispatch]
    routes = [*Chat.routes, ("chat.dispatch", ViaDispatch)]


async def test_emit_through_dispatch_adapter_and_agent_dispatch() -> None:
    got: list[Signal] = []
    async with Runtime() as rt:
        a = await rt.start(Dispatching, id="a")
        b = await rt.start(Chat, id="b")
        ADAPTERS[:] = [CallableDispatch(got.append), AgentDispatch(rt, "b")]
        await a.call(sig("chat.dispatch"))
        await rt.wait_idle()
        assert [s.type for s in got] == ["chat.heard"]
        assert (await b.state()).heard == ["d"]
        assert (await a.state()).heard == []
        call_mode = AgentDispatch(rt, "b", mode="call")
        await call_mode.dispatch(Signal(type="chat.heard", source="/d", data={"text": "e"}))
        assert (await b.state()).heard == ["d", "e"]
        with pytest.raises(ValidationError):
            AgentDispatch(rt, "b", mode="shout")
        # the command has committed: a failed delivery becomes a dead letter
        ADAPTERS[:] = [AgentDispatch(rt, "ghost")]
        assert await a.call(sig("chat.dispatch")) == {}
        assert isinstance(rt.dead_letters[-1].error, AgentNotFoundError)
        assert rt.dead_letters[-1].signal.type == "chat.heard"


async def test_bus_subscription_into_agent_with_agent_dispatch() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Chat, id="a")
        rt.bus.subscribe("chat.heard", AgentDispatch(rt, "a"))
        await rt.bus.publish(Signal(type="chat.heard", source="/bus", data={"text": "bus"}))
        await rt.bus.drain()
        await rt.wait_idle()
        assert (await ref.state()).heard == ["bus"]


async def test_schedule_after_delay_fires() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Chat, id="a")
        heard = asyncio.Event()
        rt._tracer = lambda *args: heard.set() if args[1].type == "chat.heard" else None
        await ref.call(sig("chat.later", {"delay": 0.01}))
        assert list(rt.schedules("a")) == ["once"]
        await asyncio.wait_for(heard.wait(), 10)
        assert (await ref.state()).heard == ["later"]
        assert rt.schedules("a") == {}


async def test_schedule_cancel_and_manual_fire() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Chat, id="a")
        await ref.call(sig("chat.later", {"delay": 3600}))
        await ref.call(sig("chat.later", {"cancel": "once"}))
        assert rt.schedules("a") == {}
        assert not rt.fire("a", "once")
        await ref.call(sig("chat.later", {"delay": 3600, "text": "now"}))
        assert rt.fire("a", "once")
        await rt.wait_idle()
        assert (await ref.state()).heard == ["now"]


async def test_cron_schedule_rearms_after_firing() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Chat, id="a")
        await ref.call(sig("chat.later", {"cron": "0 0 1 1 *"}))
        first = rt.schedules("a")["cron"]
        assert first.cron == "0 0 1 1 *"
        assert rt.fire("a", "cron")
        assert rt.fire("a", "cron")
        await rt.wait_idle()
        assert (await ref.state()).heard == ["later", "later"]
        assert "cron" in rt.schedules("a")  # re-armed for next year
    # stopping the agent cancels its schedules
    assert rt.ids() == []


class Seen(Action):
    """Record the attributes of the signal being handled."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        s = ctx.signal
        assert s is not None
        return {"heard": [*ctx.state.heard, f"{s.dataschema}|{s.datacontenttype}|{s.subject}"]}


class CronWithSchema(Action):
    """Schedule a signal carrying every optional attribute."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        timed = Signal(
            type="chat.seen",
            source="/timer",
            data={},
            subject="s1",
            dataschema="urn:schema:seen",
            datacontenttype="application/vnd.seen+json",
            tenant="acme",
        )
        return {}, Schedule(timed, cron="0 0 1 1 *", key="cron")


async def test_cron_firings_keep_every_attribute_of_the_signal() -> None:
    class Watcher(Chat):
        actions = [*Chat.actions, Seen, CronWithSchema]
        routes = [*Chat.routes, ("chat.seen", Seen), ("chat.cron", CronWithSchema)]

    async with Runtime() as rt:
        ref = await rt.start(Watcher, id="w")
        await ref.call(sig("chat.cron"))
        assert rt.fire("w", "cron")
        assert rt.fire("w", "cron")
        await rt.wait_idle()
        want = "urn:schema:seen|application/vnd.seen+json|s1"
        assert (await ref.state()).heard == [want, want]


async def test_fired_schedule_into_full_mailbox_is_a_dead_letter() -> None:
    class Tiny(Chat):
        mailbox_size = 1

    async with Runtime() as rt:
        ref = await rt.start(Tiny, id="a")
        await ref.call(sig("chat.later", {"delay": 3600}))
        await ref.cast(sig("chat.heard", {"text": "fill"}))
        assert rt.fire("a", "once")
        assert isinstance(rt.dead_letters[-1].error, MailboxFullError)
        await rt.wait_idle()


async def test_sensor_started_and_stopped_by_directives_and_with_owner() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Chat, id="a")
        await ref.call(sig("chat.watch"))
        assert EV["started"].is_set()
        sensor = SENSOR["s"]
        assert rt.sensors("a") == {"manual": sensor}
        assert await sensor.emit(sensor.signal("sensor.tick", {"text": "tick"}))
        await rt.wait_idle()
        assert (await ref.state()).heard == ["tick"]
        with pytest.raises(ValidationError, match="already runs"):
            await ref.call(sig("chat.watch"))
        await ref.call(sig("chat.watch", {"stop": True}))
        assert EV["stopped"].is_set() and rt.sensors("a") == {}
        # started again, then stopped together with its owner
        SENSOR["s"] = ManualSensor(id="manual")
        await ref.call(sig("chat.watch"))
        EV["stopped"] = asyncio.Event()
        await rt.stop("a")
        assert EV["stopped"].is_set()
        assert not SENSOR["s"].running


class WatchToBus(Action):
    """Start the manual sensor publishing on the bus."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {}, StartSensor(SENSOR["s"], key="bus-sensor", to_bus=True)


class BusWatcher(Chat):
    actions = [*Chat.actions, WatchToBus]
    routes = [*Chat.routes, ("chat.watch_bus", WatchToBus)]


async def test_sensor_can_emit_onto_the_bus() -> None:
    async with Runtime() as rt:
        got: asyncio.Queue[Signal] = asyncio.Queue()
        rt.bus.subscribe("sensor.*", got)
        ref = await rt.start(BusWatcher, id="a")
        await ref.call(sig("chat.watch_bus"))
        sensor = SENSOR["s"]
        assert await sensor.emit(sensor.signal("sensor.tick", {"text": "to bus"}))
        out = await asyncio.wait_for(got.get(), 10)
        assert out.data == {"text": "to bus"}
        await rt.wait_idle()
        assert (await ref.state()).heard == []  # went to the bus, not the agent
    assert not sensor.running
