"""The HTTP models against the local test server: formats, streaming, Anthropic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from jido import Action, ActionContext, Runtime, Signal
from jido.ai import AnthropicModel, LLMAgent, ModelRequest, OpenAIModel, ToolSpec
from jido.ai.testing import (
    HTTPFailure,
    OpenAITestServer,
    ScriptedModel,
    call,
    text_reply,
    tool_reply,
)


@pytest.fixture
async def server() -> AsyncIterator[OpenAITestServer]:
    async with OpenAITestServer() as s:
        yield s


SPEC = ToolSpec(
    "add",
    "Add.",
    {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
)


async def test_openai_streaming_gathers_text_and_tool_calls(server: OpenAITestServer) -> None:
    server.script(
        text_reply("a fairly long streamed answer"),
        tool_reply(call("add", {"a": 1}, id="s1"), text="calling"),
    )
    model = OpenAIModel(base_url=server.url, model="m")
    pieces: list[str] = []
    out = await model.complete(
        ModelRequest([{"role": "user", "content": "hi"}], on_text=pieces.append)
    )
    assert out.text == "a fairly long streamed answer" and "".join(pieces) == out.text
    assert len(pieces) > 1 and out.usage.total_tokens > 0
    out = await model.complete(
        ModelRequest([{"role": "user", "content": "x"}], tools=[SPEC], on_text=pieces.append)
    )
    assert out.tool_calls[0].id == "s1" and orjson.loads(out.tool_calls[0].arguments) == {"a": 1}
    assert server.requests[0].body["stream"] is True
    assert "authorization" not in server.requests[0].headers
    await model.aclose()


async def test_openai_gives_up_after_its_retries(server: OpenAITestServer) -> None:
    from jido.ai import ModelError

    server.script(*(HTTPFailure(503, retry_after=0) for _ in range(3)))
    model = OpenAIModel(base_url=server.url, model="m", max_retries=2)
    with pytest.raises(ModelError) as info:
        await model.complete(ModelRequest([{"role": "user", "content": "x"}]))
    assert info.value.retryable and info.value.details["attempts"] == 3
    assert len(server.requests) == 3


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_messages_round_trip(server: OpenAITestServer, stream: bool) -> None:
    server.script(tool_reply(call("add", {"a": 2}, id="tu1"), text="let me add"))
    model = AnthropicModel(base_url=server.root, model="claude", api_key="sk")
    messages = [
        {"role": "user", "content": "add"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "p", "name": "add", "arguments": "{}"}],
        },
        {"role": "tool", "tool_call_id": "p", "name": "add", "content": "{}", "is_error": False},
        {"role": "tool", "tool_call_id": "q", "name": "add", "content": "{}", "is_error": True},
    ]
    out = await model.complete(
        ModelRequest(
            messages, system="sys", tools=[SPEC], on_text=(lambda t: None) if stream else None
        )
    )
    assert out.text == "let me add"
    assert out.tool_calls[0].id == "tu1" and orjson.loads(out.tool_calls[0].arguments) == {"a": 2}
    assert out.usage.input_tokens == 10
    req = server.requests[0]
    assert req.path == "/v1/messages" and req.headers["x-api-key"] == "sk"
    body = req.body
    assert body["system"] == "sys" and body["max_tokens"] == 4096
    assert body["tools"][0]["input_schema"] == SPEC.parameters
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    results = body["messages"][2]["content"]
    assert [b["tool_use_id"] for b in results] == ["p", "q"] and results[1]["is_error"] is True
    await model.aclose()


class Note(BaseModel):
    notes: list[str] = []


class AddNote(Action):
    """Add a note."""

    name = "add_note"

    class Params(BaseModel):
        text: str

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"notes": [*ctx.state.notes, params.text]}


async def test_an_llm_agent_over_anthropic_with_streamed_text(server: OpenAITestServer) -> None:
    server.script(tool_reply(call("add_note", {"text": "milk"})), text_reply("noted milk"))

    class Notes(LLMAgent):
        state_model = Note
        actions = [AddNote]
        model = AnthropicModel(base_url=server.root, model="claude", api_key="sk")
        stream_text = True

    deltas: list[str] = []
    async with Runtime() as rt:

        async def on_delta(sig: Signal) -> None:
            deltas.append(sig.data["text"])  # type: ignore[index]

        rt.bus.subscribe("ai.text.delta", on_delta)
        ref = await rt.start(Notes, id="n")
        out = await ref.call(Signal(type="ai.prompt", source="/u", data={"text": "note milk"}))
        await rt.wait_idle()
        assert out["text"] == "noted milk"
        assert (await ref.state()).notes == ["milk"]  # type: ignore[attr-defined]
    assert "".join(deltas) == "noted milk"


async def test_scripted_model_records_requests() -> None:
    model = ScriptedModel(text_reply("hi"), lambda req: text_reply(f"{len(req.messages)} msgs"))
    r1 = await model.complete(ModelRequest([{"role": "user", "content": "a"}]))
    r2 = await model.complete(ModelRequest([{"role": "user", "content": "a"}] * 3))
    assert (r1.text, r2.text) == ("hi", "3 msgs") and len(model.requests) == 2


async def test_a_model_that_does_not_answer_times_out_typed(server: OpenAITestServer) -> None:
    from jido.ai import ModelError

    release = asyncio.Event()

    async def hang(body: Any) -> Any:
        await release.wait()
        return text_reply("late")

    server.script(hang)
    model = OpenAIModel(base_url=server.url, model="m", timeout=0.2, max_retries=0)
    with pytest.raises(ModelError) as info:
        await model.complete(ModelRequest([{"role": "user", "content": "x"}]))
    release.set()
    assert info.value.retryable and "did not answer" in info.value.message
    await model.aclose()


def test_tools_must_be_the_agents_actions() -> None:
    from jido import DefinitionError

    with pytest.raises(DefinitionError):

        class Bad(LLMAgent):
            tools = [AddNote]
