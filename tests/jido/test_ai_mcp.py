"""MCP: a runtime served to the official client (streamable HTTP, stdio), and an MCP server's
tools used by an LLM agent."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import mcp_types as mt
import orjson
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from pydantic import BaseModel, Field

from jido import Action, ActionContext, Agent, Runtime, Signal
from jido.ai import LLMAgent, OpenAIModel, ToolSource
from jido.ai.mcp import MCPHTTPServer, MCPToolSource, mcp_server
from jido.ai.testing import OpenAITestServer, call, text_reply, tool_reply

ROOT = Path(__file__).resolve().parents[2]


class AccountState(BaseModel):
    balance: int = 0


class Deposit(Action):
    """Deposit money into the account."""

    name = "deposit"

    class Params(BaseModel):
        amount: int = Field(gt=0, description="Amount in cents")

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"balance": ctx.state.balance + params.amount}


class Account(Agent):
    state_model = AccountState
    actions = [Deposit]
    routes = [("account.deposit", Deposit)]


class Add(Action):
    """Add two numbers."""

    name = "add"

    class Params(BaseModel):
        a: int
        b: int

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"sum": params.a + params.b}


def _text(result: mt.CallToolResult) -> Any:
    block = result.content[0]
    assert isinstance(block, mt.TextContent)
    return orjson.loads(block.text)


async def test_runtime_served_over_streamable_http_to_the_official_client() -> None:
    async with Runtime() as rt:
        await rt.start(Account, id="acc-1")
        async with (
            MCPHTTPServer(mcp_server(rt, actions=[Add])) as http,
            Client(http.url) as client,
        ):
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"add", "acc-1__account_deposit"}
            assert tools["add"].input_schema["required"] == ["a", "b"]
            assert _text(await client.call_tool("add", {"a": 2, "b": 3})) == {"sum": 5}
            out = await client.call_tool("acc-1__account_deposit", {"amount": 7})
            assert not out.is_error and _text(out) == {"balance": 7}
            bad = await client.call_tool("acc-1__account_deposit", {"amount": -1})
            assert bad.is_error and _text(bad)["error"]["type"] == "validation_error"
        assert (await rt.ref("acc-1").state()).balance == 7  # type: ignore[attr-defined]


async def test_runtime_served_over_stdio_to_the_official_client() -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(Path(__file__).parent / "_mcp_child.py")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    async with Client(params) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert names == ["shout"]
        assert _text(await client.call_tool("shout", {"word": "hi"})) == {"loud": "HI"}


async def test_an_llm_agent_uses_an_mcp_servers_tools() -> None:
    class Helper(LLMAgent):
        instructions = "help"

    async with (
        Runtime() as tools_rt,
        MCPHTTPServer(mcp_server(tools_rt, actions=[Add])) as http,
        MCPToolSource(http.url, prefix="calc_") as source,
        OpenAITestServer() as llm,
    ):
        Helper.model = OpenAIModel(base_url=llm.url, model="m")
        llm.script(tool_reply(call("calc_add", {"a": 20, "b": 22}, id="m1")), text_reply("42"))
        async with Runtime() as rt:
            rt.services.add(ToolSource, source)
            ref = await rt.start(Helper, id="h")
            out = await ref.call(Signal(type="ai.prompt", source="/u", data={"text": "20+22?"}))
        assert out["text"] == "42"
        first, second = (r.body for r in llm.requests)
        assert [t["function"]["name"] for t in first["tools"]] == ["calc_add"]
        assert "strict" not in first["tools"][0]["function"]
        assert orjson.loads(second["messages"][-1]["content"]) == {"sum": 42}
