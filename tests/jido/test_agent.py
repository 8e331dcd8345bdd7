"""Agent definition checks and the pure new()/cmd()/handle() API (no runtime)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, field_validator

from jido import (
    Action,
    ActionContext,
    Agent,
    DefinitionError,
    DeleteKeys,
    Emit,
    ExecutionError,
    Instruction,
    Replace,
    RoutingError,
    Schedule,
    SetPath,
    Signal,
    StateError,
    Stop,
    ValidationError,
)


class Deposit(Action):
    """Deposit money."""

    name = "deposit"

    class Params(BaseModel):
        amount: int = Field(gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"balance": ctx.state.balance + params.amount, "note": "not a state field"}


class Withdraw(Action):
    """Withdraw money (may overdraw: the state model rejects it)."""

    class Params(BaseModel):
        amount: int = Field(gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"balance": ctx.state.balance - params.amount}


class Boom(Action):
    """Always fails."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        raise RuntimeError("boom")


class Notify(Action):
    """Emit a signal and ask to stop."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        sig = Signal(type="account.notified", source="/t", data={"id": ctx.agent_id})
        return {"notified": True}, [Emit(sig), Stop("done")]


class Ops(Action):
    """Apply explicit state operations."""

    class Params(BaseModel):
        op: str

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        if params.op == "set":
            return None, SetPath("profile.name", "ada")
        if params.op == "delete":
            return None, DeleteKeys(("history",))
        if params.op == "replace":
            return None, Replace({"balance": 99})
        return None, SetPath("balance", -5)


class Profile(BaseModel):
    name: str = ""


class AccountState(BaseModel):
    balance: int = 0
    history: list[int] = Field(default_factory=list)
    profile: Profile = Field(default_factory=Profile)

    @field_validator("balance")
    @classmethod
    def not_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("balance must not be negative")
        return v


class Account(Agent):
    """A bank account."""

    state_model = AccountState
    actions = [Deposit, Withdraw, Boom, Notify, Ops]
    routes = [
        ("account.deposit", Deposit),
        ("account.withdraw", "withdraw"),
        ("account.*", Boom, -10),
        ("account.notify", Notify, 5),
    ]


def sig(type: str, data: Any = None) -> Signal:
    return Signal(type=type, source="/test", data=data)


# -- definition ---------------------------------------------------------------------------------


def test_metadata_defaults() -> None:
    assert Account.name == "account"
    assert Account.description == "A bank account."
    assert Account.handles("account.deposit")
    assert Account.handles("account.anything")
    assert not Account.handles("other.thing")


def test_route_to_action_not_in_actions_is_definition_error() -> None:
    with pytest.raises(DefinitionError, match="not in the agent's actions"):

        class Bad(Agent):
            actions = [Deposit]
            routes = [("x.y", Withdraw)]


def test_route_to_unknown_name_is_definition_error() -> None:
    with pytest.raises(DefinitionError, match="unknown action 'nope'"):

        class Bad(Agent):
            actions = [Deposit]
            routes = [("x.y", "nope")]


def test_non_action_in_actions_is_definition_error() -> None:
    with pytest.raises(DefinitionError, match="Action subclasses"):

        class Bad(Agent):
            actions = [int]  # type: ignore[list-item]


def test_bad_state_model_is_definition_error() -> None:
    with pytest.raises(DefinitionError, match="state_model"):

        class Bad(Agent):
            state_model = dict  # type: ignore[assignment]

    class Required(BaseModel):
        x: int

    with pytest.raises(DefinitionError, match="buildable from its defaults"):

        class Bad2(Agent):
            state_model = Required


def test_bad_route_pattern_and_shape() -> None:
    with pytest.raises(DefinitionError, match="routes"):

        class Bad(Agent):
            actions = [Deposit]
            routes = [("a..b", Deposit)]

    with pytest.raises(DefinitionError, match="a route is"):

        class Bad2(Agent):
            actions = [Deposit]
            routes = [("a.b",)]


def test_ambiguous_route_is_definition_error() -> None:
    with pytest.raises(DefinitionError, match="leads to both"):

        class Bad(Agent):
            actions = [Deposit, Withdraw]
            routes = [("a.b", Deposit), ("a.b", Withdraw)]


def test_two_actions_with_one_name_is_definition_error() -> None:
    class Other(Action):
        name = "deposit"

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return None

    with pytest.raises(DefinitionError, match="two different actions are named 'deposit'"):

        class Bad(Agent):
            actions = [Deposit, Other]


def test_bad_checkpoint_policy() -> None:
    with pytest.raises(DefinitionError, match="checkpoint"):

        class Bad(Agent):
            checkpoint = "sometimes"


def test_init_subclass_is_cooperative() -> None:
    seen: dict[str, Any] = {}

    class Mixin:
        def __init_subclass__(cls, *, flavour: str = "", **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)
            seen[cls.__name__] = flavour

    class Flavoured(Mixin, Account, flavour="mint"):
        pass

    assert seen["Flavoured"] == "mint"
    assert Flavoured.handles("account.deposit")
    assert Flavoured._type_name.endswith("Flavoured")


# -- pure cmd ---------------------------------------------------------------------------------


async def test_new_and_cmd_are_pure() -> None:
    a = Account.new(id="a1", state={"balance": 10})
    b, directives = await a.cmd(Deposit, {"amount": 5})
    assert a.state.balance == 10
    assert b.state.balance == 15
    assert b.id == "a1"
    assert b.result == {"balance": 15, "note": "not a state field"}
    assert directives == []


async def test_cmd_accepts_names_tuples_instructions_and_lists() -> None:
    a = Account.new()
    b, _ = await a.cmd(
        [
            ("deposit", {"amount": 1}),
            Instruction(Deposit, {"amount": 2}),
            (Deposit, {"amount": 3}, {"who": "me"}),
        ]
    )
    assert b.state.balance == 6
    c, _ = await b.cmd("withdraw", {"amount": 6})
    assert c.state.balance == 0


async def test_cmd_unknown_action_is_validation_error() -> None:
    with pytest.raises(ValidationError, match="does not declare"):
        await Account.new().cmd(Signal, {})
    with pytest.raises(ValidationError, match="no action named"):
        await Account.new().cmd("nope")


async def test_invalid_params_keep_state() -> None:
    a = Account.new(state={"balance": 3})
    with pytest.raises(ValidationError):
        await a.cmd(Deposit, {"amount": -1})
    assert a.state.balance == 3


async def test_invalid_merge_is_state_error_and_keeps_state() -> None:
    a = Account.new(state={"balance": 3})
    with pytest.raises(StateError, match="old state was kept"):
        await a.cmd(Withdraw, {"amount": 5})
    assert a.state.balance == 3


async def test_action_error_is_execution_error() -> None:
    with pytest.raises(ExecutionError, match="boom"):
        await Account.new().cmd(Boom)


async def test_list_is_all_or_nothing() -> None:
    a = Account.new(state={"balance": 1})
    with pytest.raises(StateError):
        await a.cmd([(Deposit, {"amount": 1}), (Withdraw, {"amount": 10})])
    assert a.state.balance == 1


async def test_handle_routes_by_specificity_and_priority() -> None:
    a = Account.new()
    b, _ = await a.handle(sig("account.deposit", {"amount": 4}))
    assert b.state.balance == 4
    c, directives = await b.handle(sig("account.notify"))
    assert c.result == {"notified": True}
    assert isinstance(directives[0], Emit) and directives[0].signal.type == "account.notified"
    assert directives[1] == Stop("done")
    with pytest.raises(ExecutionError):
        await a.handle(sig("account.other"))
    with pytest.raises(RoutingError, match="no route"):
        await a.handle(sig("bank.closed"))


async def test_handle_rejects_non_object_data() -> None:
    with pytest.raises(ValidationError, match="needs an object"):
        await Account.new().handle(sig("account.deposit", [1, 2]))


async def test_state_ops() -> None:
    a = Account.new(state={"balance": 7, "history": [1]})
    b, effects = await a.cmd(Ops, {"op": "set"})
    assert b.state.profile.name == "ada" and effects == []
    c, _ = await b.cmd(Ops, {"op": "delete"})
    assert c.state.history == [] and c.state.balance == 7
    d, _ = await c.cmd(Ops, {"op": "replace"})
    assert d.state.balance == 99 and d.state.profile.name == ""
    with pytest.raises(StateError):
        await d.cmd(Ops, {"op": "invalid"})


async def test_non_directive_return_is_execution_error() -> None:
    class Weird(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {}, ["not a directive"]

    class W(Agent):
        actions = [Weird]

    with pytest.raises(ExecutionError, match="as a directive"):
        await W.new().cmd(Weird)


async def test_hooks_are_invoked_in_order() -> None:
    calls: list[str] = []

    class Hooked(Account):
        def before_run(self, instruction: Instruction) -> Any:
            calls.append(f"before:{instruction.action.name}")
            if instruction.action is Withdraw:
                return Instruction(Deposit, instruction.params)
            return None

        async def after_run(self, instruction: Instruction, result: dict[str, Any]) -> Any:
            calls.append(f"after:{instruction.action.name}")
            return {**result, "hooked": True}

        def on_error(self, instruction: Instruction, error: Any) -> None:
            calls.append(f"error:{error.type}")

    a = Hooked.new()
    b, _ = await a.cmd(Withdraw, {"amount": 2})  # rewritten into a deposit
    assert b.state.balance == 2 and b.result["hooked"] is True
    with pytest.raises(ExecutionError):
        await b.cmd(Boom)
    assert calls == ["before:withdraw", "after:deposit", "before:boom", "error:execution_error"]


def test_schedule_validation() -> None:
    s = sig("a.b")
    with pytest.raises(ValidationError, match="exactly one"):
        Schedule(s)
    with pytest.raises(ValidationError, match="cron"):
        Schedule(s, cron="not a cron")
    with pytest.raises(ValidationError, match="seconds"):
        Schedule(s, delay=-1)
    assert Schedule(s, delay=1).schedule_key == s.id
    with pytest.raises(ValidationError, match="at most one"):
        Emit(s, to="x", to_self=True)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=1000), max_size=20))
async def test_deposits_sum_property(amounts: list[int]) -> None:
    a = Account.new()
    b, _ = await a.cmd([(Deposit, {"amount": x}) for x in amounts]) if amounts else (a, [])
    assert b.state.balance == sum(amounts)
    assert a.state.balance == 0


class OpenState(BaseModel):
    """A state model that keeps members it does not declare."""

    model_config = {"extra": "allow"}
    total: int = 0


class Tally(Action):
    """Add ``n`` to the total and record a note as an undeclared member."""

    name = "tally"

    class Params(BaseModel):
        n: int

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"total": ctx.state.total + params.n}


class OpenAgent(Agent):
    """An agent whose state model allows extra members."""

    state_model = OpenState
    actions = [Tally]


async def test_merge_keeps_extra_members_of_an_open_state_model() -> None:
    agent = OpenAgent.new(state={"total": 1, "note": "kept"})
    agent, _ = await agent.cmd((Tally, {"n": 2}))
    assert agent.state.total == 3
    assert agent.state.model_dump() == {"total": 3, "note": "kept"}
