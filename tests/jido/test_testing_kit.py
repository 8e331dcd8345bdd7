"""The user-facing test kit (jido.testing): drive agents, assert state and emitted signals."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from jido import Action, ActionContext, Agent, Emit, MemoryStore, Schedule, Signal
from jido.testing import AgentTest, RecordingBus


class Deposit(Action):
    """Deposit and announce it."""

    class Params(BaseModel):
        amount: int = Field(gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        balance = ctx.state.balance + params.amount
        done = ctx.signal.caused(type="account.deposited", data={"balance": balance})
        audit = Signal(type="audit.entry", source="/acc", data={"amount": params.amount})
        return {"balance": balance}, [Emit(done), Emit(audit, to="auditor")]


class Remind(Action):
    """Schedule a reminder."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        later = Signal(type="account.deposit", source="/timer", data={"amount": 1})
        return {}, Schedule(later, delay=3600, key="reminder")


class AccountState(BaseModel):
    balance: int = 0


class Account(Agent):
    """Account."""

    state_model = AccountState
    actions = [Deposit, Remind]
    routes = [("account.deposit", Deposit), ("account.remind", Remind)]


class Entry(Action):
    """Record an audit entry."""

    class Params(BaseModel):
        amount: int

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"entries": ctx.state.entries + 1}


class AuditState(BaseModel):
    entries: int = 0


class Auditor(Agent):
    """Counts audit entries."""

    state_model = AuditState
    actions = [Entry]
    routes = [("audit.entry", Entry)]


async def test_send_and_assert_state_and_emitted() -> None:
    async with AgentTest(Account, state={"balance": 10}) as t:
        auditor = await t.rt.start(Auditor, id="auditor")
        out = await t.send("account.deposit", {"amount": 5})
        assert out == {"balance": 15}
        t.assert_state(balance=15)
        found = t.assert_emitted("account.deposited", data={"balance": 15}, target="bus")
        assert found[0].type == "account.deposited"
        t.assert_emitted("audit.*", count=1, target="auditor")
        t.assert_emitted("**", count=2)
        t.assert_not_emitted("account.withdrawn")
        assert (await auditor.state()).entries == 1  # settled: no sleeps needed
        assert t.bus.published[0].type == "account.deposited"
        t.assert_transitions("account.deposit")
        assert t.transitions[0].before.balance == 10  # type: ignore[attr-defined]
        assert t.transitions[0].after.balance == 15  # type: ignore[attr-defined]


async def test_send_error_keeps_state() -> None:
    async with AgentTest(Account) as t:
        err = await t.send_error("account.deposit", {"amount": -1})
        assert err.type == "validation_error"
        t.assert_state(balance=0)
        t.assert_transitions()
        err = await t.send_error("nobody.listens")
        assert err.type == "routing_error"
        assert t.dead_letters[-1].signal.type == "nobody.listens"
        with pytest.raises(AssertionError, match="expected a JidoError"):
            await t.send_error("account.remind")


async def test_assertion_failures_are_clear() -> None:
    async with AgentTest(Account) as t:
        await t.cast("account.deposit", {"amount": 1})
        with pytest.raises(AssertionError, match="does not match"):
            t.assert_state(balance=2)
        with pytest.raises(AssertionError, match="no emitted signal matches"):
            t.assert_emitted("other.*")
        with pytest.raises(AssertionError, match="expected 3"):
            t.assert_emitted("**", count=3)
        with pytest.raises(AssertionError, match="committed commands"):
            t.assert_transitions("x")


async def test_schedules_fire_without_waiting() -> None:
    async with AgentTest(Account, store=MemoryStore()) as t:
        await t.send("account.remind")
        assert list(t.schedules()) == ["reminder"]
        await t.fire("reminder")
        t.assert_state(balance=1)
        assert t.schedules() == {}
        with pytest.raises(AssertionError, match="no pending schedule"):
            await t.fire("reminder")


async def test_signal_objects_and_ref_outside_context() -> None:
    kit = AgentTest(Account)
    with pytest.raises(RuntimeError, match="async with"):
        _ = kit.ref
    async with kit as t:
        s = Signal(type="account.deposit", source="/x", data={"amount": 2})
        assert t.signal(s) is s
        await t.send(s)
        t.assert_state(balance=2)


async def test_recording_bus_forwards_to_inner_bus() -> None:
    bus = RecordingBus()
    got: list[Signal] = []
    bus.subscribe("x.*", got.append)
    await bus.publish(Signal(type="x.y", source="/t"))
    await bus.inner.drain()
    assert [s.type for s in got] == ["x.y"] and len(bus.published) == 1
    await bus.close()
