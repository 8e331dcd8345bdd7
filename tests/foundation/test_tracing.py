"""OpenTelemetry spans across nodes: in-process nodes with the SDK's in-memory exporter, and
node processes exporting over OTLP/HTTP to a receiver run by the test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from foundation import _tracing
from foundation._node import Node
from foundation.testing import LocalCluster, NatsServer
from jido import Signal
from jido.ai.testing import OpenAITestServer, text_reply
from tests.foundation.apps import AGENTS, ClusteredCounter
from tests.foundation.chaos.ai_app import AGENTS as AI_AGENTS
from tests.foundation.chaos.ai_app import MODEL_ENV, SINK_ENV, ChaosAssistant
from tests.foundation.conftest import eventually, repo_env

pytestmark = pytest.mark.nats

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_PARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _tracing.configure(provider)
    try:
        yield memory
    finally:
        _tracing.configure(None)
        provider.shutdown()


async def _pair(url: str) -> tuple[Node, Node]:
    a = Node(nats=url, name="ta", agents=AGENTS, failover=False)
    b = Node(nats=url, name="tb", agents=AGENTS, failover=False)
    await asyncio.gather(a.start(), b.start())
    await a.membership.wait_members(["ta", "tb"])
    return a, b


@pytest.fixture
async def pair(nats_server: NatsServer, exporter: InMemorySpanExporter) -> AsyncIterator[Any]:
    a, b = await _pair(nats_server.url)
    try:
        yield a, b
    finally:
        await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_call_across_nodes_one_span_per_hop(
    pair: tuple[Node, Node], exporter: InMemorySpanExporter
) -> None:
    a, _ = pair
    await a.spawn(ClusteredCounter, id="traced-1", node="tb")
    exporter.clear()
    sig = Signal(type="counter.echo", source="/t", data={}, traceparent=CALLER_PARENT)
    out = await a.ref("traced-1").call(sig)
    seen = out["traceparent"]
    # the remote action runs in the caller's trace, under a span of its own hop
    assert seen.split("-")[1] == CALLER_TRACE
    assert seen != CALLER_PARENT

    spans = exporter.get_finished_spans()
    client = _by_name(spans, "call ClusteredCounter")
    server = [s for s in _by_name(spans, "call") if s.kind is SpanKind.SERVER]
    process = _by_name(spans, "process counter.echo")
    commit = _by_name(spans, "kv commit")
    assert len(client) == len(server) == len(process) == 1 and commit
    assert {s.context.trace_id for s in (*client, *server, *process, *commit)} == {
        int(CALLER_TRACE, 16)
    }
    assert client[0].kind is SpanKind.CLIENT
    assert _parent_id(client[0]) == int(CALLER_PARENT.split("-")[2], 16)
    assert client[0].attributes is not None and client[0].attributes["foundation.node"] == "ta"
    assert _parent_id(server[0]) == client[0].context.span_id
    assert server[0].attributes is not None and server[0].attributes["foundation.node"] == "tb"
    assert _parent_id(process[0]) == server[0].context.span_id
    assert seen.split("-")[2] == f"{process[0].parent.span_id:016x}"  # type: ignore[union-attr]
    assert any(_parent_id(c) == process[0].context.span_id for c in commit)


async def test_call_without_traceparent_starts_a_trace(
    pair: tuple[Node, Node], exporter: InMemorySpanExporter
) -> None:
    a, _ = pair
    await a.spawn(ClusteredCounter, id="traced-2", node="tb")
    assert _by_name(exporter.get_finished_spans(), "spawn")
    assert _by_name(exporter.get_finished_spans(), "activate")
    exporter.clear()
    out = await a.ref("traced-2").call(Signal(type="counter.echo", source="/t", data={}))
    client = _by_name(exporter.get_finished_spans(), "call ClusteredCounter")[0]
    assert client.parent is None
    assert out["traceparent"].split("-")[1] == f"{client.context.trace_id:032x}"


async def test_cast_is_a_producer_span_parenting_the_command(
    pair: tuple[Node, Node], exporter: InMemorySpanExporter
) -> None:
    a, _ = pair
    await a.spawn(ClusteredCounter, id="traced-3", node="tb")
    exporter.clear()
    await a.ref("traced-3").cast(Signal(type="counter.add", source="/t", data={"n": 1}))

    async def committed() -> bool:
        return bool(_by_name(exporter.get_finished_spans(), "process counter.add"))

    await eventually(committed)
    spans = exporter.get_finished_spans()
    producer = _by_name(spans, "cast ClusteredCounter")[0]
    assert producer.kind is SpanKind.PRODUCER
    process = _by_name(spans, "process counter.add")[0]
    assert _parent_id(process) == producer.context.span_id
    assert process.attributes is not None and process.attributes["foundation.node"] == "tb"


async def test_hand_over_is_traced(pair: tuple[Node, Node], exporter: InMemorySpanExporter) -> None:
    _, b = pair
    await b.spawn(ClusteredCounter, id="traced-4", node="tb")
    await b.host.hand_over("traced-4", to="ta")
    assert _by_name(exporter.get_finished_spans(), "hand_over")


async def test_no_sdk_means_no_instrumentation(nats_server: NatsServer) -> None:
    _tracing.configure(None)
    a, b = await _pair(nats_server.url)
    try:
        assert _tracing.active is None
        await a.spawn(ClusteredCounter, id="plain-1", node="tb")
        sig = Signal(type="counter.echo", source="/t", data={}, traceparent=CALLER_PARENT)
        out = await a.ref("plain-1").call(sig)
        assert out["traceparent"] == CALLER_PARENT  # carried, untouched
    finally:
        await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.spans: list[tuple[str, bytes, dict[str, Any]]] = []
        self.ids: dict[str, tuple[bytes, bytes]] = {}  # span name -> (span id, parent span id)
        self.lock = threading.Lock()


class _OtlpHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for rs in request.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    found.append((sp.name, bytes(sp.trace_id), resource))
                    ids = (bytes(sp.span_id), bytes(sp.parent_span_id))
                    with self.server.lock:
                        self.server.ids[sp.name] = ids
        with self.server.lock:
            self.server.spans.extend(found)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _exporting(
    nats_server: NatsServer,
    receiver: _Receiver,
    tmp_path: Any,
    nodes: list[str],
    app: str,
    **env: str,
) -> LocalCluster:
    """Node processes of ``app``'s ``AGENTS`` exporting their spans to ``receiver``; the test
    process itself runs no SDK."""
    _tracing.configure(None)
    return LocalCluster(
        nats=nats_server,
        nodes=nodes,
        app=f"{app}:AGENTS",
        env=repo_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_address[1]}",
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_SERVICE_NAME="foundation-test",
            **env,
        ),
        log_dir=tmp_path,
    )


@pytest.mark.slow
async def test_node_processes_export_over_otlp(
    nats_server: NatsServer, receiver: _Receiver, tmp_path: Any
) -> None:
    cluster = _exporting(nats_server, receiver, tmp_path, ["p1", "p2"], "tests.foundation.apps")
    async with cluster:
        caller = Node(nats=nats_server.url, name="pc", agents=AGENTS, failover=False)
        async with caller:
            await caller.membership.wait_members(["p1", "p2", "pc"])
            await caller.spawn(ClusteredCounter, id="otlp-1", node="p1")
            sig = Signal(type="counter.echo", source="/t", data={}, traceparent=CALLER_PARENT)
            await caller.ref("otlp-1").call(sig)

            async def exported() -> bool:
                with receiver.lock:
                    names = {
                        (name, res.get("foundation.node"))
                        for name, tid, res in receiver.spans
                        if tid.hex() == CALLER_TRACE
                    }
                # the caller runs no SDK: the signal's traceparent parents the command span
                return {("process counter.echo", "p1"), ("kv commit", "p1")} <= names

            await eventually(exported, timeout=30)
    with receiver.lock:
        services = {res.get("service.name") for _, _, res in receiver.spans}
    assert services == {"foundation-test"}


@pytest.mark.slow
async def test_node_process_exports_the_llm_loop_spans(
    nats_server: NatsServer, receiver: _Receiver, tmp_path: Any
) -> None:
    # the GenAI spans (tracer jido.ai, the global provider) leave a node process with the
    # node's own spans, in the caller's trace, the turn under the command running it
    async with OpenAITestServer() as model:
        model.script(text_reply("hello"))
        env = {MODEL_ENV: model.url, SINK_ENV: str(tmp_path / "sink.txt")}
        cluster = _exporting(
            nats_server, receiver, tmp_path, ["p1"], "tests.foundation.chaos.ai_app", **env
        )
        async with cluster:
            caller = Node(nats=nats_server.url, name="pc", agents=AI_AGENTS, failover=False)
            async with caller:
                await caller.membership.wait_members(["p1", "pc"])
                await caller.spawn(ChaosAssistant, id="otlp-ai", node="p1")
                sig = Signal(
                    type="ai.prompt", source="/t", data={"text": "hi"}, traceparent=CALLER_PARENT
                )
                await caller.ref("otlp-ai").call(sig)

                async def exported() -> bool:
                    with receiver.lock:
                        names = {
                            name for name, tid, res in receiver.spans if tid.hex() == CALLER_TRACE
                        }
                    return {"chat chaos", "process ai.prompt"} <= names and any(
                        n.startswith("invoke_agent ") for n in names
                    )

                await eventually(exported, timeout=30)
                with receiver.lock:
                    turn = next(v for k, v in receiver.ids.items() if k.startswith("invoke_agent"))
                    command = receiver.ids["process ai.prompt"]
                    chat = receiver.ids["chat chaos"]
                assert turn[1] == command[0] and chat[1] == turn[0]
