"""The Clustered mixin: class keywords, inheritance, validation, and the agent left untouched."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from foundation.hosting.clustered import (
    Clustered,
    ClusterSpec,
    cluster_spec,
    is_clustered,
    type_name_of,
)
from jido import Action, ActionContext, DefinitionError
from jido._agent import Agent


class Deposit(Action):
    """Deposit money."""

    name = "deposit"

    class Params(BaseModel):
        amount: int

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"balance": ctx.state.balance + params.amount}


class AccountState(BaseModel):
    balance: int = 0


class Account(Agent):
    state_model = AccountState
    actions = [Deposit]
    routes = [("account.deposit", Deposit)]


class ClusteredAccount(Clustered, Account, critical=True, placement="least_loaded"):
    pass


def test_spec_from_class_keywords() -> None:
    spec = cluster_spec(ClusteredAccount)
    assert spec == ClusterSpec(
        critical=True,
        placement="least_loaded",
        type_name=f"{__name__}:ClusteredAccount",
    )
    assert is_clustered(ClusteredAccount) and not is_clustered(Account)
    assert cluster_spec(Account) is None
    assert type_name_of(ClusteredAccount) == f"{__name__}:ClusteredAccount"
    assert type_name_of(Account) == f"{__name__}:Account"


def test_all_options_and_inheritance() -> None:
    class Worker(
        Clustered,
        Account,
        capabilities=["gpu", "gpu", "eu"],
        resources={"cpu": 1, "memory": 64.0},
        delivery="at_least_once",
        placement="capability",
    ):
        pass

    spec = cluster_spec(Worker)
    assert spec is not None
    assert spec.capabilities == ("eu", "gpu")
    assert spec.resources == {"cpu": 1.0, "memory": 64.0}
    assert spec.delivery == "at_least_once"
    assert spec.critical is False
    assert spec.to_dict()["placement"] == "capability"

    class Child(Worker, critical=True):
        pass

    child = cluster_spec(Child)
    assert child is not None and child.critical is True
    assert child.capabilities == ("eu", "gpu") and child.delivery == "at_least_once"
    assert child.type_name.endswith("Child")


def test_agent_definition_untouched() -> None:
    # The agent's own definition and checks still apply through the mixin.
    assert ClusteredAccount.state_model is AccountState
    assert ClusteredAccount.handles("account.deposit")
    with pytest.raises(DefinitionError):

        class Broken(Clustered, Account, critical=True):
            routes = [("x.y", "no_such_action")]


async def test_agent_runs_purely_with_mixin() -> None:
    from jido import Signal

    agent = ClusteredAccount.new(id="a1")
    agent, _ = await agent.handle(Signal(type="account.deposit", source="/t", data={"amount": 5}))
    assert agent.state.balance == 5


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("critical", "yes"),
        ("placement", ""),
        ("placement", "no spaces"),
        ("placement", 3),
        ("capabilities", "gpu"),
        ("capabilities", [""]),
        ("resources", {"cpu": -1}),
        ("resources", {"cpu": True}),
        ("resources", [1]),
        ("delivery", "exactly_once"),
    ],
)
def test_bad_options_are_definition_errors(option: str, value: Any) -> None:
    with pytest.raises(DefinitionError) as info:
        type("Bad", (Clustered, Account), {}, **{option: value})
    assert info.value.details["option"] == option
