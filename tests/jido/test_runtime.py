"""Runtime: start/stop/lookup, call/cast, mailbox bounds, typed errors, dead letters, listeners."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from jido import (
    Action,
    ActionContext,
    Agent,
    AgentEvent,
    AgentExistsError,
    AgentNotFoundError,
    AgentStoppedError,
    ExecutionError,
    Instruction,
    JidoError,
    MailboxFullError,
    RoutingError,
    Runtime,
    Signal,
    StateError,
    TimeoutError,
    ValidationError,
)


class Deposit(Action):
    """Deposit."""

    name = "deposit"

    class Params(BaseModel):
        amount: int = Field(gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"balance": ctx.state.balance + params.amount}


class Fail(Action):
    """Raise."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        raise ValueError("nope")


class Overdraw(Action):
    """Produce an invalid state."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"balance": "not a number"}


class Wait(Action):
    """Wait until the test opens the gate."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        GATE["entered"].set()
        await GATE["event"].wait()
        return {"waited": True}


GATE: dict[str, asyncio.Event] = {}


class Log(Action):
    """Append to the log."""

    class Params(BaseModel):
        i: int

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"log": [*ctx.state.log, params.i]}


class State(BaseModel):
    balance: int = 0
    log: list[int] = Field(default_factory=list)


EVENTS: list[str] = []


class Account(Agent):
    """Account under test."""

    state_model = State
    actions = [Deposit, Fail, Overdraw, Wait, Log]
    routes = [
        ("acc.deposit", Deposit),
        ("acc.fail", Fail),
        ("acc.overdraw", Overdraw),
        ("acc.wait", Wait),
        ("acc.log", Log),
    ]
    mailbox_size = 4

    def mount(self) -> None:
        EVENTS.append(f"mount:{self.id}")

    def on_error(self, instruction: Instruction, error: JidoError) -> None:
        EVENTS.append(f"error:{self.id}:{error.type}")

    async def shutdown(self, reason: str) -> None:
        EVENTS.append(f"shutdown:{self.id}:{reason}")


def sig(type: str, data: Any = None) -> Signal:
    return Signal(type=type, source="/test", data=data)


@pytest.fixture(autouse=True)
def _reset() -> None:
    EVENTS.clear()
    GATE["event"] = asyncio.Event()
    GATE["entered"] = asyncio.Event()


async def test_quick_start_flow() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="acc-1")
        out = await ref.call(sig("acc.deposit", {"amount": 5}))
        assert out == {"balance": 5}
        state = await ref.state()
        assert isinstance(state, State) and state.balance == 5
        assert rt.ids() == ["acc-1"]
        assert rt.get("acc-1") == ref
        assert rt.get("missing") is None
    assert EVENTS == ["mount:acc-1", "shutdown:acc-1:shutdown"]


async def test_start_with_state_duplicate_and_bad_input() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a", state={"balance": 10})
        assert (await ref.state()).balance == 10
        with pytest.raises(AgentExistsError):
            await rt.start(Account, id="a")
        with pytest.raises(StateError):
            await rt.start(Account, id="b", state={"balance": "x"})
        assert "b" not in rt.ids()
        with pytest.raises(ValidationError):
            await rt.start(int, id="c")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await rt.start(Account, id="")


async def test_signals_processed_in_arrival_order() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a", state=None)
        # mailbox holds 4; casts and calls interleave
        await ref.cast(sig("acc.log", {"i": 1}))
        await ref.cast(sig("acc.log", {"i": 2}))
        out = await ref.call(sig("acc.log", {"i": 3}))
        assert out == {"log": [1, 2, 3]}


async def test_full_mailbox_raises_never_drops() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a")
        waiter = asyncio.ensure_future(ref.call(sig("acc.wait")))
        await GATE["entered"].wait()  # the agent took the first signal and blocks in Wait
        for i in range(4):
            await ref.cast(sig("acc.log", {"i": i}))
        with pytest.raises(MailboxFullError) as info:
            await ref.cast(sig("acc.log", {"i": 99}))
        assert info.value.retryable and info.value.details["mailbox_size"] == 4
        with pytest.raises(MailboxFullError):
            await ref.call(sig("acc.log", {"i": 100}))
        GATE["event"].set()
        assert await waiter == {"waited": True}
        await rt.wait_idle()
        assert (await ref.state()).log == [0, 1, 2, 3]


async def test_unmatched_signal_is_routing_error_and_dead_letter() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a")
        s = sig("other.thing")
        with pytest.raises(RoutingError, match="no route"):
            await ref.call(s)
        assert rt.dead_letters[-1].signal is s
        assert rt.dead_letters[-1].agent_id == "a"
        assert isinstance(rt.dead_letters[-1].error, RoutingError)
        await ref.cast(sig("other.cast"))
        await rt.wait_idle()
        assert rt.dead_letters[-1].signal.type == "other.cast"
        assert (await ref.call(sig("acc.deposit", {"amount": 1}))) == {"balance": 1}


async def test_invalid_params_keep_agent_running_with_same_state() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a", state={"balance": 3})
        with pytest.raises(ValidationError) as info:
            await ref.call(sig("acc.deposit", {"amount": -5}))
        assert info.value.details["action"] == "deposit"
        with pytest.raises(ValidationError):
            await ref.call(sig("acc.deposit", "not an object"))
        assert (await ref.state()).balance == 3
        assert await ref.call(sig("acc.deposit", {"amount": 1})) == {"balance": 4}
        assert "error:a:validation_error" in EVENTS


async def test_action_raising_calls_on_error_and_keeps_state() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a", state={"balance": 3})
        with pytest.raises(ExecutionError, match="nope"):
            await ref.call(sig("acc.fail"))
        assert "error:a:execution_error" in EVENTS
        with pytest.raises(StateError):
            await ref.call(sig("acc.overdraw"))
        assert (await ref.state()).balance == 3
        assert rt.ids() == ["a"]


async def test_cast_errors_become_dead_letters() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a")
        await ref.cast(sig("acc.fail"))
        await rt.wait_idle()
        assert isinstance(rt.dead_letters[-1].error, ExecutionError)


async def test_call_timeout_is_typed() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a")
        with pytest.raises(TimeoutError) as info:
            await ref.call(sig("acc.wait"), timeout=0.01)
        assert isinstance(info.value, builtins_timeout())
        GATE["event"].set()


def builtins_timeout() -> type[BaseException]:
    import builtins

    return builtins.TimeoutError


async def test_call_timeout_passes_through_action_errors() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a")
        with pytest.raises(ExecutionError):
            await ref.call(sig("acc.fail"), timeout=5)
        assert await ref.call(sig("acc.deposit", {"amount": 2}), timeout=5) == {"balance": 2}


async def test_stop_fails_queued_calls_and_ref_reports_not_found() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a")
        first = asyncio.ensure_future(ref.call(sig("acc.wait")))
        await GATE["entered"].wait()
        queued = asyncio.ensure_future(ref.call(sig("acc.deposit", {"amount": 1})))
        await ref.cast(sig("acc.deposit", {"amount": 2}))
        await asyncio.sleep(0)
        stopping = asyncio.ensure_future(rt.stop("a"))
        await asyncio.sleep(0)
        with pytest.raises(AgentStoppedError):
            await ref.cast(sig("acc.deposit", {"amount": 3}))
        GATE["event"].set()
        await stopping
        assert await first == {"waited": True}
        with pytest.raises(AgentStoppedError):
            await queued
        assert rt.dead_letters[-1].signal.data == {"amount": 2}
        assert rt.ids() == []
        with pytest.raises(AgentNotFoundError):
            await ref.call(sig("acc.deposit", {"amount": 1}))
        with pytest.raises(AgentNotFoundError):
            await rt.stop("a")
        # a new agent under the same id is reachable through the old ref
        await rt.start(Account, id="a", state={"balance": 7})
        assert (await ref.state()).balance == 7
    assert "shutdown:a:normal" in EVENTS


async def test_listeners_receive_lifecycle_events() -> None:
    events: list[AgentEvent] = []
    async_events: list[str] = []

    async def async_listener(ev: AgentEvent) -> None:
        async_events.append(ev.kind)

    def broken(ev: AgentEvent) -> None:
        raise RuntimeError("listener bug")

    async with Runtime() as rt:
        rt.add_listener(events.append)
        rt.add_listener(async_listener)
        rt.add_listener(broken)
        await rt.start(Account, id="a")
        await rt.stop("a", reason="bye")
        rt.remove_listener(broken)
    assert [(e.kind, e.agent_id) for e in events] == [("started", "a"), ("stopped", "a")]
    assert events[1].reason == "bye"
    assert events[0].agent_type.endswith(":Account")
    assert async_events == ["started", "stopped"]


async def test_concurrent_callers_all_answered() -> None:
    class Big(Account):
        mailbox_size = 10_000

    async with Runtime() as rt:
        ref = await rt.start(Big, id="a")
        outs = await asyncio.gather(
            *(ref.call(sig("acc.deposit", {"amount": 1})) for _ in range(500))
        )
        assert sorted(o["balance"] for o in outs) == list(range(1, 501))
        stats = rt.statistics()
        assert stats["agents"] == 1 and stats["queued"] == 0


async def test_runtime_options_validated() -> None:
    with pytest.raises(ValidationError):
        Runtime(checkpoint="sometimes")
    with pytest.raises(ValidationError):
        Runtime(mailbox_size=0)
    with pytest.raises(ValidationError):
        Runtime(hibernate_after=0)


async def test_call_rejects_non_signal() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="a")
        with pytest.raises(ValidationError):
            await ref.call({"type": "acc.deposit"})  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await ref.cast("acc.deposit")  # type: ignore[arg-type]


async def test_runtime_level_call_cast_and_default_timeout() -> None:
    async with Runtime(call_timeout=0.01) as rt:
        await rt.start(Account, id="a")
        assert await rt.call("a", sig("acc.deposit", {"amount": 1}), timeout=5) == {"balance": 1}
        await rt.cast("a", sig("acc.deposit", {"amount": 1}))
        await rt.wait_idle()
        with pytest.raises(TimeoutError):
            await rt.call("a", sig("acc.wait"))
        GATE["event"].set()
        with pytest.raises(AgentNotFoundError):
            await rt.call("zzz", sig("acc.deposit", {"amount": 1}))
    with pytest.raises(AgentStoppedError):
        await rt.start(Account, id="late")


async def test_stop_cancels_a_command_that_overruns_stop_timeout() -> None:
    async with Runtime(stop_timeout=0.01) as rt:
        ref = await rt.start(Account, id="a")
        stuck = asyncio.ensure_future(ref.call(sig("acc.wait")))
        await GATE["entered"].wait()
        await rt.stop("a")
        with pytest.raises(AgentStoppedError):
            await stuck
        assert rt.ids() == []


def test_runtime_options_on_the_class_are_checked() -> None:
    from jido import DefinitionError

    with pytest.raises(DefinitionError, match="mailbox_size"):

        class Bad(Agent):
            mailbox_size = 0

    with pytest.raises(DefinitionError, match="hibernate_after"):

        class Bad2(Agent):
            hibernate_after = -1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), min_size=1, max_size=30))
async def test_arrival_order_property(ops: list[tuple[bool, int]]) -> None:
    """Any mix of casts and calls is applied one at a time, in arrival order."""

    class Roomy(Account):
        mailbox_size = 64

    async with Runtime() as rt:
        ref = await rt.start(Roomy, id="p")
        pending = []
        for is_call, i in ops:
            if is_call:
                pending.append(asyncio.ensure_future(ref.call(sig("acc.log", {"i": i}))))
                await asyncio.sleep(0)  # let the call enqueue before the next op (arrival order)
            else:
                await ref.cast(sig("acc.log", {"i": i}))
        await asyncio.gather(*pending)
        await rt.wait_idle()
        assert (await ref.state()).log == [i for _c, i in ops]


async def test_info_shows_mailbox_commands_state_size_and_the_last_error() -> None:
    async with Runtime() as rt:
        ref = await rt.start(Account, id="acc-i", state={"balance": 3})
        info = ref.info()
        assert info.id == "acc-i" and info.status == "running"
        assert info.agent_class.endswith(":Account") and info.mailbox_size == 4
        assert (info.commands, info.mailbox, info.busy, info.last_error) == (0, 0, False, None)
        assert info.state_bytes == len(b'{"balance":3,"log":[]}')
        await ref.call(sig("acc.deposit", {"amount": 5}))
        with pytest.raises(ValidationError):
            await ref.call(sig("acc.deposit", {"amount": -1}))
        info = ref.info()
        assert info.commands == 1 and info.state_bytes == len(b'{"balance":8,"log":[]}')
        assert info.last_error is not None and info.last_error.type == "validation_error"
        assert "amount" in info.last_error.message
        # a waiting command and queued signals show as busy with a mailbox
        call = asyncio.create_task(ref.call(sig("acc.wait")))
        await GATE["entered"].wait()
        await ref.cast(sig("acc.log", {"i": 1}))
        busy = ref.info()
        assert busy.busy and busy.mailbox == 1 and busy.idle_seconds == 0.0
        GATE["event"].set()
        await call
        with pytest.raises(ExecutionError):
            await ref.call(sig("acc.fail"))
        crashed = ref.info()
        assert crashed.last_error is not None and crashed.last_error.type == "execution_error"
        assert "nope" in crashed.last_error.message
        assert crashed.restarts == 0  # an action's exception is its error, not a crash
        # it crosses processes as JSON and comes back the same
        from jido import AgentInfo

        assert AgentInfo.from_dict(crashed.to_dict()) == crashed
        with pytest.raises(ValueError, match="not an agent info"):
            AgentInfo.from_dict({"id": "x"})
