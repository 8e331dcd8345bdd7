"""An LLM assistant that uses tools on other agents, durable in SQLite.

The assistant (an ``LLMAgent``) has one action of its own (``note``: it writes to its own
state) and reaches an ``Inventory`` agent through that agent's routes, offered as tools by
``AgentRouteTools`` (the cluster layer offers the routes of agents anywhere in the cluster the
same way).

Model: any OpenAI-compatible endpoint given by the environment —
``OPENAI_BASE_URL`` (e.g. ``http://127.0.0.1:8000/v1`` for vLLM, llama.cpp or Ollama),
``OPENAI_API_KEY`` and ``OPENAI_MODEL``. With ``OPENAI_BASE_URL`` unset it runs against the
local test server of ``jido.ai.testing`` with a scripted conversation, so it works offline::

    python examples/ai_assistant.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from jido import Action, ActionContext, Agent, Runtime, Signal, SQLiteStore
from jido.ai import AgentRouteTools, LLMAgent, OpenAIModel, ToolSource
from jido.ai.testing import OpenAITestServer, call, text_reply, tool_reply


class Stock(BaseModel):
    """The inventory: items on hand by SKU."""

    items: dict[str, int] = Field(default_factory=lambda: {"apple": 10, "pear": 3})


class Check(Action):
    """How many of an item are on hand."""

    name = "check"

    class Params(BaseModel):
        sku: str = Field(description="The item, e.g. 'apple'")

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"sku": params.sku, "on_hand": ctx.state.items.get(params.sku, 0)}


class Reserve(Action):
    """Reserve some items (taken from stock)."""

    name = "reserve"

    class Params(BaseModel):
        sku: str
        qty: int = Field(gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        have = ctx.state.items.get(params.sku, 0)
        if have < params.qty:
            raise ValueError(f"only {have} {params.sku} on hand")
        return {"items": {**ctx.state.items, params.sku: have - params.qty}}


class Inventory(Agent):
    """Keeps the stock."""

    state_model = Stock
    actions = [Check, Reserve]
    routes = [("inventory.check", Check), ("inventory.reserve", Reserve)]


class Notes(BaseModel):
    """What the assistant wrote down."""

    notes: list[str] = Field(default_factory=list)


class Note(Action):
    """Write a short note for the user to read later."""

    name = "note"

    class Params(BaseModel):
        text: str

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"notes": [*ctx.state.notes, params.text]}


class Assistant(LLMAgent):
    """A shop assistant."""

    state_model = Notes
    actions = [Note]
    instructions = (
        "You are a shop assistant. Use the inventory tools to check and reserve stock, and "
        "write a note of every reservation you make. Answer in one sentence."
    )


def _scripted(server: OpenAITestServer) -> None:
    server.script(
        tool_reply(call("inventory__inventory_check", {"sku": "apple"})),
        tool_reply(
            call("inventory__inventory_reserve", {"sku": "apple", "qty": 2}),
            call("note", {"text": "reserved 2 apples"}),
        ),
        text_reply("I reserved 2 apples for you; 8 are left."),
    )


async def main(db: Path, question: str = "Please reserve two apples.") -> dict[str, Any]:
    """Run one turn; return the answer and what the agents' states became."""
    base_url = os.environ.get("OPENAI_BASE_URL")
    server = None
    if base_url is None:
        server = OpenAITestServer()
        await server.start()
        _scripted(server)
        base_url = server.url
    Assistant.model = OpenAIModel(
        base_url=base_url,
        api_key=os.environ.get("OPENAI_API_KEY", "unused"),
        model=os.environ.get("OPENAI_MODEL", "test"),
    )
    try:
        async with Runtime(SQLiteStore(db)) as rt:
            inventory = await rt.start(Inventory, id="inventory")
            rt.services.add(ToolSource, AgentRouteTools(rt, agents=["inventory"]))
            assistant = await rt.start(Assistant, id="assistant")
            out = await assistant.call(
                Signal(type="ai.prompt", source="/user", data={"text": question})
            )
            stock: Any = await inventory.state()
            notes: Any = await assistant.state()
        return {
            "text": out["text"],
            "steps": out["steps"],
            "tool_calls": out["tool_calls"],
            "apples": stock.items.get("apple"),
            "notes": list(notes.notes),
        }
    finally:
        if server is not None:
            await server.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        summary = asyncio.run(main(Path(tmp) / "assistant.db"))
    print(summary["text"])
    print(
        f"steps={summary['steps']} tool_calls={summary['tool_calls']} "
        f"apples_left={summary['apples']} notes={summary['notes']}"
    )
