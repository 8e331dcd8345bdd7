"""Kill-anywhere durability of the LLM loop: a turn resumes from its journal after a stop.

A stop is simulated two ways: a runtime closed with ``stop_timeout=0`` (the turn is cancelled at
whatever await it was at) and a child process that SIGKILLs itself right after a tool's
external effect, before the result is committed. The next runtime over the same SQLite file
resumes the turn.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from pydantic import BaseModel, Field

from jido import (
    Action,
    ActionContext,
    Checkpoint,
    FencedError,
    MemoryStore,
    Runtime,
    Schedule,
    Signal,
    SQLiteStore,
)
from jido.ai import LLMAgent, OpenAIModel
from jido.ai.testing import OpenAITestServer, ScriptedModel, call, text_reply, tool_reply

ROOT = Path(__file__).resolve().parents[2]


class Ledger(BaseModel):
    balance: int = 0


SINK: dict[str, int] = {}  # external effects by idempotency key
GATE: dict[str, asyncio.Event] = {}
EFFECT: list[asyncio.Event] = []  # set on each effect (created per test loop)


class Transfer(Action):
    """Send money out (an external effect)."""

    name = "transfer"

    class Params(BaseModel):
        amount: int = Field(gt=0)

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        key = ctx.metadata["idempotency_key"]
        SINK[key] = SINK.get(key, 0) + 1
        if EFFECT:
            EFFECT[0].set()
        gate = GATE.get(key) or GATE.get("after_effect")
        if gate is not None:
            await gate.wait()  # the node "dies" here: effect done, result not committed
        return {"balance": ctx.state.balance - params.amount}


class ReconciledTransfer(Transfer):
    """Send money out; can tell by key whether a transfer happened."""

    name = "reconciled_transfer"

    async def reconcile(self, key: str, params: Any, ctx: ActionContext) -> dict[str, Any] | None:
        if SINK.get(key):
            return {"balance": ctx.state.balance - params.amount, "reconciled": True}
        return None


class IdempotentTransfer(Transfer):
    """Send money out, idempotently."""

    name = "idempotent_transfer"
    idempotent: ClassVar[bool] = True


class Remind(Action):
    """Arm a reminder an hour from now (a schedule, not a tool)."""

    name = "remind"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {}, Schedule(Signal(type="bank.reminded", source="/t"), delay=3600, key="remind")


@pytest.fixture(autouse=True)
def _clean() -> None:
    SINK.clear()
    GATE.clear()
    EFFECT.clear()


@pytest.fixture
async def server() -> AsyncIterator[OpenAITestServer]:
    async with OpenAITestServer() as s:
        yield s


def bank(server: OpenAITestServer) -> type[LLMAgent]:
    class Bank(LLMAgent):
        state_model = Ledger
        actions = [Transfer, ReconciledTransfer, IdempotentTransfer]
        model = OpenAIModel(base_url=server.url, model="m", api_key="k")
        instructions = "bank"

    return Bank


def prompt(text: str) -> Signal:
    return Signal(type="ai.prompt", source="/u", data={"text": text})


async def _wait_effects(n: int) -> None:
    if not EFFECT:
        EFFECT.append(asyncio.Event())
    while sum(SINK.values()) < n:
        EFFECT[0].clear()
        await EFFECT[0].wait()


async def _kill_mid_tool(store: Any, agent: type[LLMAgent], tool: str) -> None:
    GATE["after_effect"] = asyncio.Event()
    rt = Runtime(store, stop_timeout=0)
    async with rt:
        ref = await rt.start(agent, id="b1", state={"balance": 100})
        pending = asyncio.ensure_future(ref.call(prompt("send 10")))
        await _wait_effects(1)
    with pytest.raises(Exception):  # noqa: B017 - the caller learns the agent stopped
        await pending
    del GATE["after_effect"]


async def _resumed_reply(store: Any, agent: type[LLMAgent]) -> tuple[dict[str, Any], Any]:
    async with Runtime(store) as rt:
        ref = await rt.start(agent, id="b1")
        await rt.wait_idle()
        st: Any = await ref.state()
        assert st.ai.last is not None
        return st.ai.last, st


@pytest.mark.parametrize(
    ("tool", "effects", "balance", "tool_error"),
    [
        ("transfer", 1, 100, "outcome_unknown"),
        ("reconciled_transfer", 1, 90, None),
        ("idempotent_transfer", 2, 90, None),
    ],
)
async def test_a_tool_interrupted_after_its_effect_is_settled_on_restart(
    server: OpenAITestServer,
    tmp_path: Path,
    tool: str,
    effects: int,
    balance: int,
    tool_error: str | None,
) -> None:
    agent = bank(server)
    server.script(tool_reply(call(tool, {"amount": 10}, id="t1")), text_reply("done"))
    store = SQLiteStore(tmp_path / "a.db")
    await _kill_mid_tool(store, agent, tool)
    assert len(server.requests) == 1
    reply, st = await _resumed_reply(SQLiteStore(tmp_path / "a.db"), agent)
    assert reply["text"] == "done" and reply["steps"] == 2
    assert len(server.requests) == 2  # the completed model call was not issued again
    assert list(SINK.values()) == [effects]
    assert list(SINK) == ["b1:1:t1"]  # the idempotency key: agent, turn, tool call id
    assert st.balance == balance
    tool_msg = server.requests[1].body["messages"][-1]
    assert tool_msg["tool_call_id"] == "t1"
    if tool_error is None:
        assert "error" not in orjson.loads(tool_msg["content"])
    else:
        assert orjson.loads(tool_msg["content"])["error"]["type"] == tool_error


async def test_committed_tool_results_are_not_run_again(
    server: OpenAITestServer, tmp_path: Path
) -> None:
    """Three tools in one step: the first finished, the second is interrupted after its
    effect, the third had not started: it runs after the restart (its outcome is not unknown)."""
    agent = bank(server)
    server.script(
        tool_reply(
            call("idempotent_transfer", {"amount": 1}, id="x"),
            call("transfer", {"amount": 2}, id="y"),
            call("transfer", {"amount": 4}, id="z"),
        ),
        text_reply("ok"),
    )
    store = MemoryStore()
    GATE["b1:1:y"] = asyncio.Event()  # y "dies" after its effect; x runs through
    async with Runtime(store, stop_timeout=0) as rt:
        ref = await rt.start(agent, id="b1", state={"balance": 100})
        pending = asyncio.ensure_future(ref.call(prompt("go")))
        await _wait_effects(2)
    with pytest.raises(Exception):  # noqa: B017
        await pending
    reply, st = await _resumed_reply(store, agent)
    assert reply["text"] == "ok"
    assert SINK == {"b1:1:x": 1, "b1:1:y": 1, "b1:1:z": 1}
    assert st.balance == 95  # x committed with its state; y's outcome is unknown; z ran
    msgs = server.requests[1].body["messages"]
    tools = {m["tool_call_id"]: m["content"] for m in msgs if m["role"] == "tool"}
    assert "outcome_unknown" in tools["y"] and "error" not in tools["z"]
    assert len(server.requests) == 2


async def test_a_killed_process_resumes_from_sqlite(
    server: OpenAITestServer, tmp_path: Path
) -> None:
    """The child SIGKILLs itself after a tool's external effect, before its commit."""
    db = tmp_path / "k.db"
    sink = tmp_path / "sink.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).parent / "_ai_child.py"),
        str(db),
        str(sink),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await child.communicate()
    assert child.returncode == -9, err.decode()
    assert sink.read_text().split() == ["kid:1:k1"]

    from tests.jido._ai_child import Courier

    Courier.model = OpenAIModel(base_url=server.url, model="m", api_key="k")
    Courier.sink = str(sink)
    server.script(text_reply("sent, outcome checked"))
    async with Runtime(SQLiteStore(db)) as rt:
        ref = await rt.start(Courier, id="kid")
        await rt.wait_idle()
        st: Any = await ref.state()
    assert st.ai.last["text"] == "sent, outcome checked"
    assert st.sent == ["kid:1:k1"]  # reconciled from the sink: not sent twice
    assert sink.read_text().split() == ["kid:1:k1"]
    assert len(server.requests) == 1  # only the answer after the tool was requested here
    msgs = server.requests[0].body["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool"]


class CountingStore(MemoryStore):
    """A memory store that counts the bytes committed to it."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        self.bytes += len(checkpoint.to_bytes())
        await super().save(key, checkpoint)

    async def append(
        self, key: str, entries: Any, *, checkpoint: Checkpoint | None = None, epoch: int = 0
    ) -> int:
        self.bytes += sum(len(e) for e in entries)
        if checkpoint is not None:
            self.bytes += len(checkpoint.to_bytes())
        return await super().append(key, entries, checkpoint=checkpoint, epoch=epoch)


async def test_journal_grows_linearly_100_tool_calls_over_200k_tokens() -> None:
    """Each message is stored once: ≤ 5 MB for a 100-tool-call turn over a 200k-token chat."""

    class Small(Action):
        """Add one."""

        name = "add_one"

        async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
            return {"balance": ctx.state.balance + 1}

    model = ScriptedModel()

    class Long(LLMAgent):
        state_model = Ledger
        actions = [Small]
        max_steps = 200

    Long.model = model
    store = CountingStore()
    chunk = "lorem ipsum dolor sit amet " * 3700  # ~100k chars, ~25k tokens
    async with Runtime(store) as rt:
        ref = await rt.start(Long, id="long")
        for i in range(8):  # ~200k tokens of history
            model.script(text_reply(chunk))
            await ref.call(prompt(f"{i}: {chunk}"))
        before = store.bytes
        model.script(*(tool_reply(call("add_one", {})) for _ in range(100)), text_reply("done"))
        out = await ref.call(prompt("now add one, 100 times"))
        turn_bytes = store.bytes - before
        st: Any = await ref.state()
    assert out["tool_calls"] == 100 and st.balance == 100
    assert sum(len(str(m.get("content") or "")) for m in model.requests[-1].messages) > 800_000
    assert store.bytes <= 5_000_000, store.bytes
    assert turn_bytes <= 500_000, turn_bytes  # the turn itself: its own messages only


async def test_a_newer_owner_fences_the_turn_and_stops_the_agent(
    server: OpenAITestServer,
) -> None:
    """Another owner took the agent over mid-turn: the next commit is refused, the agent stops."""
    agent = bank(server)
    store = MemoryStore()
    server.script(tool_reply(call("transfer", {"amount": 1}, id="f1")), text_reply("never"))
    GATE["b1:1:f1"] = asyncio.Event()
    async with Runtime(store) as rt:
        ref = await rt.start(agent, id="b1", state={"balance": 10})
        pending = asyncio.ensure_future(ref.call(prompt("go")))
        await _wait_effects(1)
        await store.save("b1", Checkpoint(state={"balance": 0}, agent_type="other", epoch=5))
        GATE["b1:1:f1"].set()
        with pytest.raises(FencedError):
            await pending
        await rt.wait_idle()
        assert not ref.running
    assert len(server.requests) == 1
    assert await store.journal("b1") and (await store.load("b1")).epoch == 5  # type: ignore[union-attr]


async def test_a_turns_commits_keep_the_agents_schedules(
    server: OpenAITestServer, tmp_path: Path
) -> None:
    """The journal's checkpoints carry the agent's armed schedules: a turn killed after it
    committed leaves them in the store, and the next runtime arms them again."""

    class Banker(LLMAgent):
        state_model = Ledger
        actions = [Transfer, Remind]
        tools = [Transfer]
        routes = [("bank.remind", Remind)]
        model = OpenAIModel(base_url=server.url, model="m", api_key="k")
        instructions = "bank"

    server.script(tool_reply(call("transfer", {"amount": 10}, id="t1")), text_reply("done"))
    store = SQLiteStore(tmp_path / "a.db")
    GATE["after_effect"] = asyncio.Event()
    async with Runtime(store, stop_timeout=0) as rt:
        ref = await rt.start(Banker, id="b1", state={"balance": 100})
        await ref.call(Signal(type="bank.remind", source="/t"))
        assert set(rt.schedules("b1")) == {"remind"}
        pending = asyncio.ensure_future(ref.call(prompt("send 10")))
        await _wait_effects(1)
    with pytest.raises(Exception):  # noqa: B017 - the caller learns the agent stopped
        await pending
    del GATE["after_effect"]
    cp = await SQLiteStore(tmp_path / "a.db").load("b1")
    assert cp is not None and cp.state["ai"]["turn"] == 1  # the turn's commit is the last
    assert set(cp.timers) == {"remind"}
    async with Runtime(SQLiteStore(tmp_path / "a.db")) as rt:
        await rt.start(Banker, id="b1")
        await rt.wait_idle()
        assert set(rt.schedules("b1")) == {"remind"}
