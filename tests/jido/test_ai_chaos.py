"""Kill a turn at a random point, many times: model calls, tool effects, commits.

Each round runs a 3-step turn (two tool calls a step: one plain, one idempotent) against the
local test server and stops the runtime at a random event — while the model answers, right
after a tool's external effect, or between commits — then starts the agent again from the same
store and lets the turn finish. Invariants: a model response that was recorded is never
requested again; a plain tool's effect happens at most once per tool call (exactly once when
its result was recorded as a success); every turn ends with an answer.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from jido import Action, ActionContext, MemoryStore, Runtime, Signal, SQLiteStore
from jido.ai import LLMAgent, OpenAIModel
from jido.ai.testing import OpenAITestServer, call, text_reply, tool_reply

ROUNDS = 40


class Ledger(BaseModel):
    balance: int = 0


class Chaos:
    """The round's kill switch and external effect sink."""

    effects: ClassVar[dict[str, int]] = {}
    events = 0
    kill_at = -1
    killed: asyncio.Event | None = None
    never: asyncio.Event | None = None

    @classmethod
    async def event(cls) -> None:
        cls.events += 1
        if cls.events == cls.kill_at:
            assert cls.killed is not None and cls.never is not None
            cls.killed.set()
            await cls.never.wait()


class Pay(Action):
    """Pay out (an external effect)."""

    name = "pay"

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        await Chaos.event()  # killed before the effect
        key = ctx.metadata["idempotency_key"]
        Chaos.effects[key] = Chaos.effects.get(key, 0) + 1
        await Chaos.event()  # killed after the effect, before the commit
        return {"balance": ctx.state.balance - 1}


class Log(Action):
    """Record something, idempotently."""

    name = "log"
    idempotent: ClassVar[bool] = True

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        key = ctx.metadata["idempotency_key"]
        Chaos.effects[key] = Chaos.effects.get(key, 0) + 1
        await Chaos.event()
        return {}


class Worker(LLMAgent):
    state_model = Ledger
    actions = [Pay, Log]
    max_steps = 10


async def _answer(body: dict[str, Any]) -> Any:
    await Chaos.event()  # killed while the model answers
    steps = sum(1 for m in body["messages"] if m["role"] == "assistant")
    if steps < 3:
        return tool_reply(call("pay", {}, id=f"p{steps}"), call("log", {}, id=f"l{steps}"))
    return text_reply("done")


def _prompt() -> Signal:
    return Signal(type="ai.prompt", source="/chaos", data={"text": "work"})


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_random_kills_never_repeat_recorded_work(store_kind: str, tmp_path: Any) -> None:
    rng = random.Random(1234)
    async with OpenAITestServer() as server:
        server.default = _answer
        Worker.model = OpenAIModel(base_url=server.url, model="m", api_key="k", max_retries=0)
        # events of an uninterrupted turn: 4 model calls, 3 steps x (2 + 1) tool events
        total = 4 + 3 * 3
        for r in range(ROUNDS):
            Chaos.effects = {}
            Chaos.events = 0
            Chaos.kill_at = rng.randint(1, total)
            Chaos.killed = asyncio.Event()
            Chaos.never = asyncio.Event()
            server.requests.clear()
            store: Any = (
                MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / f"{r}.db")
            )
            async with Runtime(store, stop_timeout=0) as rt:
                ref = await rt.start(Worker, id="w", state={"balance": 10})
                pending = asyncio.ensure_future(ref.call(_prompt()))
                killed = asyncio.ensure_future(Chaos.killed.wait())
                await asyncio.wait([pending, killed], return_when=asyncio.FIRST_COMPLETED)
                killed.cancel()
            assert Chaos.killed.is_set(), r  # every round is stopped somewhere
            Chaos.never.set()  # a model answer held back goes to a closed connection
            if not pending.done() or pending.exception() is not None:
                pending.cancel()
            Chaos.kill_at = -1
            async with Runtime(store) as rt:
                ref = await rt.start(Worker, id="w")
                await rt.wait_idle()
                st: Any = await ref.state()
                journal = await store.journal("w")
            assert st.ai.last is not None and st.ai.last["text"] == "done", (r, st.ai.last)
            # recorded model responses are never requested again: each conversation length
            # is requested once, except the one call that was cut off while in flight
            lengths = [len(q.body["messages"]) for q in server.requests]
            assert len(lengths) - len(set(lengths)) <= 1, (r, lengths)
            assert len(journal) > 0
            for key, n in Chaos.effects.items():
                if ":p" in key:
                    assert n == 1, (r, key, n)  # plain tool: once (reconcile-less ones never
                    # re-run; an unknown outcome is reported to the model instead)
                else:
                    assert n <= 2, (r, key, n)  # idempotent: may run again
            paid = sum(1 for k in Chaos.effects if ":p" in k)
            assert 10 - paid <= st.balance <= 10, (r, st.balance)
