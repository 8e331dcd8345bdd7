"""LLM agents: what the durable loop costs per step, what it commits, how fast a turn resumes.

Figures (each against a baseline measured in the same run):

* Loop step over HTTP: one model call to the local OpenAI-compatible test server, one tool run
  with the agent's state, three journal commits (model response, tool start, tool result) in a
  SQLite store — per step of a 20-step turn; baseline: a bare ``httpx`` POST of the same
  request body to the same server. The difference is the loop's overhead per step.
* Loop step in process (``ScriptedModel``, no HTTP, SQLite store): the overhead alone; target
  ≤ 1 ms; baseline: the same work without the loop (the scripted model's answer and the
  action run through ``jido.execute``).
* Committed bytes per step of a 100-step turn over a ~200k-token conversation; baseline: a
  checkpoint-only design that saves the whole conversation with each step.
* Resume: time from ``rt.start`` of an agent whose turn was interrupted until that turn has
  finished (SQLite); baseline: ``rt.start`` of a plain agent restored from the same store.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import BaseModel

from bench._harness import Row, Stats
from jido import Action, ActionContext, Agent, Checkpoint, MemoryStore, Runtime, Signal, SQLiteStore
from jido import execute as run_action
from jido.ai import LLMAgent, ModelRequest, OpenAIModel
from jido.ai.testing import OpenAITestServer, ScriptedModel, call, text_reply, tool_reply

GROUP = "llm agents"


class Counter(BaseModel):
    n: int = 0


class Bump(Action):
    """Add one to the counter."""

    name = "bump"

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"n": ctx.state.n + 1}


class Looper(LLMAgent):
    """Bumps the counter as often as the model asks."""

    state_model = Counter
    actions = [Bump]
    max_steps = 10_000


class Plain(Agent):
    """The same state, no loop."""

    state_model = Counter
    actions = [Bump]


def _prompt(text: str = "go") -> Signal:
    return Signal(type="ai.prompt", source="/bench", data={"text": text})


def _script(steps: int) -> list[Any]:
    return [*(tool_reply(call("bump", {})) for _ in range(steps - 1)), text_reply("done")]


async def _http_rows(tmp: Path, turns: int, steps: int) -> Row:
    async with OpenAITestServer() as server:
        model = OpenAIModel(base_url=server.url, model="bench", api_key="k")
        Looper.model = model
        per_step: list[float] = []
        async with Runtime(SQLiteStore(tmp / "http.db")) as rt:
            ref = await rt.start(Looper, id="http")
            for i in range(turns + 1):
                server.script(*_script(steps))
                t0 = time.perf_counter()
                await ref.call(_prompt())
                if i:  # the first turn warms up
                    per_step.append((time.perf_counter() - t0) / steps)
        body = server.requests[-1].body  # the largest request of the run
        raw = orjson.dumps(body)
        base: list[float] = []
        server.default = tool_reply(call("bump", {}))
        async with httpx.AsyncClient() as client:
            for i in range(turns * steps + 20):
                t0 = time.perf_counter()
                resp = await client.post(
                    f"{server.url}/chat/completions",
                    content=raw,
                    headers={"content-type": "application/json", "authorization": "Bearer k"},
                )
                orjson.loads(resp.content)
                if i >= 20:
                    base.append(time.perf_counter() - t0)
        await model.aclose()
    ours, baseline = Stats.of(per_step), Stats.of(base)
    return Row.from_stats(
        GROUP,
        f"loop step over HTTP ({steps}-step turns, SQLite)",
        "s",
        ours,
        "bare httpx POST, same server and body",
        baseline,
        note="model call + tool with state + 3 journal commits per step",
        extra={"overhead_ms": (ours.median - baseline.median) * 1e3},
    )


async def _inprocess_row(tmp: Path, turns: int, steps: int) -> Row:
    model = ScriptedModel()
    Looper.model = model
    per_step: list[float] = []
    async with Runtime(SQLiteStore(tmp / "inproc.db")) as rt:
        ref = await rt.start(Looper, id="inproc")
        for i in range(turns + 1):
            model.script(*_script(steps))
            t0 = time.perf_counter()
            await ref.call(_prompt())
            if i:
                per_step.append((time.perf_counter() - t0) / steps)
    base: list[float] = []
    bare = ScriptedModel()
    state: Any = Counter()
    for _ in range(turns * steps + 20):
        bare.script(tool_reply(call("bump", {})))
        t0 = time.perf_counter()
        await bare.complete(ModelRequest([{"role": "user", "content": "go"}]))
        out = await run_action(Bump, {}, ActionContext(state=state))
        state = Counter(n=out.result["n"])
        base.append(time.perf_counter() - t0)
    return Row.from_stats(
        GROUP,
        f"loop step in process ({steps}-step turns, ScriptedModel, SQLite)",
        "s",
        Stats.of(per_step),
        "scripted answer + jido.execute of the tool, no loop",
        Stats.of(base[20:]),
        target="≤ 1 ms",
        note="the loop's own cost: journal commits, state merge, message bookkeeping",
    )


class _Counting(MemoryStore):
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


async def _bytes_row(steps: int) -> Row:
    model = ScriptedModel()
    Looper.model = model
    store = _Counting()
    chunk = "lorem ipsum dolor sit amet " * 3700  # ~100k characters, ~25k tokens
    async with Runtime(store) as rt:
        ref = await rt.start(Looper, id="bytes")
        for _ in range(8):
            model.script(text_reply(chunk))
            await ref.call(_prompt(chunk))
        before = store.bytes
        model.script(*_script(steps))
        await ref.call(_prompt())
        turn_bytes = store.bytes - before
        history = sum(len(orjson.dumps(m)) for m in model.requests[-1].messages)
    ours = turn_bytes / steps
    # a checkpoint-only design writes the whole conversation with each of the 3 commits a step
    baseline = 3 * history
    return Row(
        GROUP,
        f"committed bytes per step ({steps}-step turn over ~200k tokens)",
        "B",
        ours,
        "whole conversation saved with each commit",
        baseline,
        extra={"turn_total_bytes": turn_bytes, "all_bytes": store.bytes},
        note="each message is stored once, in the journal",
    )


async def _resume_row(tmp: Path, rounds: int) -> Row:
    ours: list[float] = []
    base: list[float] = []
    for r in range(rounds):
        db = tmp / f"resume-{r}.db"
        gate = asyncio.Event()
        model = ScriptedModel(*_script(10)[:5])

        reached = asyncio.Event()

        async def stall(
            req: ModelRequest, gate: asyncio.Event = gate, reached: asyncio.Event = reached
        ) -> Any:
            reached.set()
            await gate.wait()
            return text_reply("never")

        model.script(stall)
        Looper.model = model
        quiet = logging.getLogger("jido.runtime")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the interrupted command is cancelled on purpose
        async with Runtime(SQLiteStore(db), stop_timeout=0) as rt:
            ref = await rt.start(Looper, id="r")
            pending = asyncio.ensure_future(ref.call(_prompt()))
            await reached.wait()
        quiet.setLevel(level)
        pending.cancel()
        Looper.model = ScriptedModel(text_reply("resumed"))
        async with Runtime(SQLiteStore(db)) as rt:
            t0 = time.perf_counter()
            ref = await rt.start(Looper, id="r")
            await rt.wait_idle()
            ours.append(time.perf_counter() - t0)
            st: Any = await ref.state()
            assert st.ai.last["text"] == "resumed"
        async with Runtime(SQLiteStore(db)) as rt:
            t0 = time.perf_counter()
            await rt.start(Plain, id="plain")
            base.append(time.perf_counter() - t0)
    return Row.from_stats(
        GROUP,
        "resume an interrupted 5-step turn (SQLite)",
        "s",
        Stats.of(ours),
        "rt.start of a plain agent from the same store",
        Stats.of(base),
        note="load checkpoint and journal, settle the open step, one model call, finish",
    )


async def run(quick: bool) -> list[Row]:
    """Measure the loop; ``quick`` keeps it to a few seconds."""
    turns = 2 if quick else 20
    steps = 10 if quick else 20
    with tempfile.TemporaryDirectory(prefix="bench-ai-") as name:
        tmp = Path(name)
        return [
            await _http_rows(tmp, turns, steps),
            await _inprocess_row(tmp, turns, steps),
            await _bytes_row(100),
            await _resume_row(tmp, 3 if quick else 20),
        ]
