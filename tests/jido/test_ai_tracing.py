"""GenAI spans of the LLM loop, read back with the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from jido import Runtime, Signal, SQLiteStore
from jido.ai.testing import OpenAITestServer, call, text_reply, tool_reply
from tests.jido import test_ai_durable as durable
from tests.jido.test_ai_loop import teller

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _sdk() -> Iterator[None]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first SDK of this process
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    yield


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER


@pytest.fixture
async def server() -> AsyncIterator[OpenAITestServer]:
    async with OpenAITestServer() as s:
        yield s


def _named(spans: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name.startswith(prefix)]


PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_a_turn_is_one_invoke_agent_span_with_chat_and_tool_spans(
    server: OpenAITestServer, spans: InMemorySpanExporter
) -> None:
    server.script(
        tool_reply(call("deposit", {"amount": 5}, id="c1")), text_reply("Deposited 5 cents.")
    )
    async with Runtime() as rt:
        ref = await rt.start(teller(server), id="t1")
        sig = Signal(type="ai.prompt", source="/u", data={"text": "deposit 5"})
        sig = Signal.from_dict({**sig.to_dict(), "traceparent": PARENT})
        await ref.call(sig)
    (agent,) = _named(spans, "invoke_agent")
    chats = _named(spans, "chat ")
    (tool,) = _named(spans, "execute_tool")
    assert agent.name == "invoke_agent teller"  # the agent class's name
    assert agent.context.trace_id == int(PARENT.split("-")[1], 16)  # the caller's trace
    attrs: Any = agent.attributes
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["gen_ai.agent.id"] == "t1"
    assert len(chats) == 2 and all(c.name == "chat m" for c in chats)
    chat: Any = chats[0].attributes
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.request.model"] == "m"
    assert chat["gen_ai.usage.input_tokens"] > 0 and chat["gen_ai.usage.output_tokens"] > 0
    assert chats[0].kind == trace.SpanKind.CLIENT
    tool_attrs: Any = tool.attributes
    assert tool.name == "execute_tool deposit"
    assert tool_attrs["gen_ai.tool.call.id"] == "c1"
    for span in [*chats, tool]:
        assert span.parent is not None and span.parent.span_id == agent.context.span_id
    # message content is off: no attribute carries the prompt or the answer
    for span in spans.get_finished_spans():
        values = [str(v) for v in (span.attributes or {}).values()]
        assert not any("deposit 5" in v or "Deposited" in v for v in values)


async def test_a_resumed_turn_keeps_its_trace_and_links_to_the_span_before_the_crash(
    server: OpenAITestServer, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    durable.SINK.clear()
    durable.GATE.clear()
    durable.EFFECT.clear()
    agent = durable.bank(server)
    server.script(tool_reply(call("transfer", {"amount": 10}, id="t1")), text_reply("done"))
    await durable._kill_mid_tool(SQLiteStore(tmp_path / "a.db"), agent, "transfer")
    first = _named(spans, "invoke_agent")
    assert len(first) == 1  # the interrupted turn's span ended with the stop
    reply, _ = await durable._resumed_reply(SQLiteStore(tmp_path / "a.db"), agent)
    assert reply["text"] == "done"
    resumed = [s for s in _named(spans, "invoke_agent") if s is not first[0]]
    assert len(resumed) == 1
    before = first[0]
    assert resumed[0].context.trace_id == before.context.trace_id
    assert [link.context.span_id for link in resumed[0].links] == [before.context.span_id]


async def test_a_turn_nests_under_the_span_of_the_command_running_it(
    server: OpenAITestServer, spans: InMemorySpanExporter
) -> None:
    # a cluster node wraps every command in a span of the signal's trace (its command hook);
    # the turn is that span's child, not its sibling
    server.script(text_reply("hello"))
    tracer = trace.get_tracer("test")
    parent = TraceContextTextMapPropagator().extract({"traceparent": PARENT})

    def hook(agent_id: str, cls: type, item: Any) -> Any:
        return tracer.start_as_current_span("process ai.prompt", context=parent)

    async with Runtime() as rt:
        rt.command_hook = hook
        ref = await rt.start(teller(server), id="t2")
        sig = Signal(type="ai.prompt", source="/u", data={"text": "hi"})
        await ref.call(Signal.from_dict({**sig.to_dict(), "traceparent": PARENT}))
    (command,) = _named(spans, "process ai.prompt")
    (agent,) = _named(spans, "invoke_agent")
    assert agent.context.trace_id == command.context.trace_id == int(PARENT.split("-")[1], 16)
    assert agent.parent is not None and agent.parent.span_id == command.context.span_id
