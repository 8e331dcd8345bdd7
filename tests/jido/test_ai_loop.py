"""The LLM loop against the local OpenAI-compatible test server (real HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, Field

from jido import Action, ActionContext, Agent, Runtime, Signal, execute_tool_call
from jido.ai import BudgetExceededError, LLMAgent, ModelError, OpenAIModel, TokenBudget
from jido.ai.testing import OpenAITestServer, call, text_reply, tool_reply


class AccountState(BaseModel):
    balance: int = 0


class Deposit(Action):
    """Deposit money into the account."""

    name = "deposit"

    class Params(BaseModel):
        amount: int = Field(gt=0, description="Amount in cents")

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"balance": ctx.state.balance + params.amount}


class Balance(Action):
    """Read the balance."""

    name = "balance"

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"balance": ctx.state.balance}


@pytest.fixture
async def server() -> AsyncIterator[OpenAITestServer]:
    async with OpenAITestServer() as s:
        yield s


def teller(server: OpenAITestServer, **attrs: Any) -> type[LLMAgent]:
    ns: dict[str, Any] = {
        "state_model": AccountState,
        "actions": [Deposit, Balance],
        "model": OpenAIModel(base_url=server.url, model="m", api_key="k", backoff_base=0.001),
        "instructions": "You run a bank account.",
        **attrs,
    }
    return type("Teller", (LLMAgent,), ns)


def prompt(text: str) -> Signal:
    return Signal(type="ai.prompt", source="/u", data={"text": text})


async def test_a_turn_runs_tools_with_the_agent_state_and_answers(
    server: OpenAITestServer,
) -> None:
    server.script(
        tool_reply(call("deposit", {"amount": 5}, id="c1")),
        text_reply("Deposited 5 cents; balance 5."),
    )
    async with Runtime() as rt:
        ref = await rt.start(teller(server), id="t1")
        out = await ref.call(prompt("deposit 5 cents"))
        assert out["text"] == "Deposited 5 cents; balance 5."
        assert out["steps"] == 2 and out["tool_calls"] == 1
        assert out["usage"]["total_tokens"] > 0
        st: Any = await ref.state()
        assert st.balance == 5
    first, second = (r.body for r in server.requests)
    assert first["model"] == "m"
    assert first["messages"][0] == {"role": "system", "content": "You run a bank account."}
    assert first["messages"][1] == {"role": "user", "content": "deposit 5 cents"}
    assert {t["function"]["name"] for t in first["tools"]} == {"deposit", "balance"}
    assert server.requests[0].headers["authorization"] == "Bearer k"
    assistant, tool = second["messages"][2], second["messages"][3]
    assert assistant["tool_calls"][0]["id"] == "c1"
    assert tool["role"] == "tool" and tool["tool_call_id"] == "c1"
    assert orjson.loads(tool["content"]) == {"balance": 5}


async def test_conversation_persists_across_turns(server: OpenAITestServer) -> None:
    server.script(text_reply("hello"), text_reply("again"))
    async with Runtime() as rt:
        ref = await rt.start(teller(server), id="t1")
        await ref.call(prompt("hi"))
        out = await ref.call(prompt("and now?"))
        assert out["turn"] == 2 and out["text"] == "again"
    roles = [m["role"] for m in server.requests[1].body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]


async def test_parallel_tool_calls_and_structured_errors(server: OpenAITestServer) -> None:
    server.script(
        tool_reply(
            call("deposit", {"amount": 2}, id="a"),
            call("deposit", {"amount": -1}, id="b"),
            call("nope", {}, id="c"),
            call("deposit", '{"amount": "3"}', id="d"),
        ),
        text_reply("done"),
    )
    async with Runtime() as rt:
        ref = await rt.start(teller(server), id="t1")
        out = await ref.call(prompt("go"))
        assert out["tool_calls"] == 4
        st: Any = await ref.state()
        assert st.balance == 5
    tools = {
        m["tool_call_id"]: m for m in server.requests[1].body["messages"] if m["role"] == "tool"
    }
    assert orjson.loads(tools["b"]["content"])["error"]["type"] == "validation_error"
    assert orjson.loads(tools["c"]["content"])["error"]["message"].startswith("there is no tool")
    assert orjson.loads(tools["d"]["content"]) == {"balance": 5}


async def test_max_steps_ends_the_turn(server: OpenAITestServer) -> None:
    server.default = lambda body: tool_reply(call("balance", {}))
    async with Runtime() as rt:
        ref = await rt.start(teller(server, max_steps=3), id="t1")
        out = await ref.call(prompt("loop"))
    assert out["stop_reason"] == "max_steps" and out["steps"] == 3 and out["text"] is None
    assert len(server.requests) == 3


async def test_turn_token_limit(server: OpenAITestServer) -> None:
    server.default = lambda body: tool_reply(call("balance", {}), input_tokens=60)
    async with Runtime() as rt:
        ref = await rt.start(teller(server, max_turn_tokens=100), id="t1")
        out = await ref.call(prompt("loop"))
    assert out["stop_reason"] == "token_limit" and out["steps"] == 2


async def test_retries_honour_retry_after_then_fail_typed(server: OpenAITestServer) -> None:
    from jido.ai.testing import HTTPFailure

    server.script(HTTPFailure(429, retry_after=0), HTTPFailure(503), text_reply("ok"))
    async with Runtime() as rt:
        ref = await rt.start(teller(server), id="t1")
        out = await ref.call(prompt("hi"))
        assert out["text"] == "ok"
        server.script(HTTPFailure(400))
        with pytest.raises(ModelError) as info:
            await ref.call(prompt("bad"))
        assert info.value.details["status"] == 400 and not info.value.retryable
        # the failed turn ended; the next one works
        server.script(text_reply("fine"))
        assert (await ref.call(prompt("again")))["text"] == "fine"
    assert len(server.requests) == 5


class Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.reserved = 0
        self.log: list[tuple[str, int]] = []

    async def reserve(self, agent_id: str, tokens: int) -> int:
        if self.used + self.reserved + tokens > self.limit:
            raise BudgetExceededError(
                "tenant budget spent", details={"budget": "tenant", "used": self.used}
            )
        self.reserved += tokens
        self.log.append(("reserve", tokens))
        return tokens

    async def reconcile(self, reservation: int, used: int) -> None:
        self.reserved -= reservation
        self.used += used
        self.log.append(("reconcile", used))


async def test_tenant_budget_reserves_and_reconciles(server: OpenAITestServer) -> None:
    budget = Budget(limit=3000)
    assert isinstance(budget, TokenBudget)
    server.script(text_reply("a", input_tokens=100, output_tokens=20))
    async with Runtime() as rt:
        rt.services.add(TokenBudget, budget)
        ref = await rt.start(teller(server, max_tokens=1000), id="t1")
        await ref.call(prompt("x"))
        assert budget.used == 120 and budget.reserved == 0
        budget.limit = 500
        with pytest.raises(BudgetExceededError):
            await ref.call(prompt("y"))
    assert len(server.requests) == 1
    assert [k for k, _ in budget.log] == ["reserve", "reconcile"]


def test_execute_tool_call_with_an_agent_uses_its_state() -> None:
    async def go() -> None:
        class Account(Agent):
            state_model = AccountState
            actions = [Deposit]

        agent = Account.new(id="acc", state={"balance": 3})
        out = await execute_tool_call("deposit", '{"amount": 5}', [Deposit], agent=agent)
        assert orjson.loads(out) == {"balance": 8}
        assert agent.state.balance == 8  # type: ignore[attr-defined]

    asyncio.run(go())


async def test_other_agents_routes_as_tools(server: OpenAITestServer) -> None:
    from jido.ai import AgentRouteTools, ToolSource

    class Account(Agent):
        state_model = AccountState
        actions = [Deposit]
        routes = [("account.deposit", Deposit), ("account.**", Deposit, -1)]

    server.script(
        tool_reply(call("acc__account_deposit", {"amount": 4}, id="r1")),
        tool_reply(call("acc__account_deposit", {"amount": 0}, id="r2")),
        text_reply("ok"),
    )
    async with Runtime() as rt:
        source = AgentRouteTools(rt)
        assert isinstance(source, ToolSource)
        rt.services.add(ToolSource, source)
        assert rt.services.all(ToolSource) == [source]
        acc = await rt.start(Account, id="acc")
        ref = await rt.start(teller(server), id="t1")
        out = await ref.call(prompt("pay acc 4"))
        assert out["text"] == "ok"
        assert (await acc.state()).balance == 4  # type: ignore[attr-defined]
        rt.services.remove(ToolSource, source)
        assert rt.services.get(ToolSource) is None
    names = [t["function"]["name"] for t in server.requests[0].body["tools"]]
    assert names == ["deposit", "balance", "acc__account_deposit"]  # wildcard route left out
    msgs = server.requests[2].body["messages"]
    assert orjson.loads(msgs[3]["content"]) == {"balance": 4}
    assert orjson.loads(msgs[5]["content"])["error"]["type"] == "validation_error"


class Broken:
    """A tool source whose calls fail with a plain exception."""

    async def list_tools(self, agent_id: str) -> list[Any]:
        from jido.ai import SourceTool, ToolSpec

        schema = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
        return [SourceTool(ToolSpec("flaky", "Fails.", schema))]

    async def call_tool(
        self, name: str, arguments: Any, *, idempotency_key: str, agent_id: str
    ) -> str:
        raise ConnectionError("remote down")


async def test_a_failing_tool_source_is_reported_to_the_model(server: OpenAITestServer) -> None:
    server.script(tool_reply(call("flaky", {}, id="f")), text_reply("it failed"))
    async with Runtime() as rt:
        ref = await rt.start(teller(server, tool_sources=[Broken()]), id="t1")
        out = await ref.call(prompt("try"))
        assert out["text"] == "it failed"
    err = orjson.loads(server.requests[1].body["messages"][-1]["content"])["error"]
    assert err["type"] == "execution_error" and "remote down" in err["message"]
