"""Observability: what tracing, the metrics and watching a cluster cost a cross-node call.

Two in-process nodes on one real ``nats-server``; node ``a`` calls order desks hosted by ``b``.
Rounds are interleaved so machine drift hits both sides alike.

- tracing on (OpenTelemetry SDK, every span sampled, batched to an exporter that drops them)
  vs tracing off (no tracer provider): the nodes start with the SDK configured, so the
  endpoint step is installed; "off" clears the provider between rounds, which is what a node
  without an SDK runs; a third variant in the same rounds has the SDK configured with a
  sampler that records nothing (``ALWAYS_OFF``): every hop still makes its (non-recording)
  spans and carries the ``traceparent``, so it is what the propagation costs apart from
  recording, and about what a call pays in production when it is not among the sampled ones;
  a fourth has no SDK at all but a minimal tracer of the API's own types (each span a valid,
  non-recording ``NonRecordingSpan`` with fresh ids): what our propagation costs around a
  tracer that costs next to nothing, so "tracing on" minus it is the SDK's own share;
- no SDK vs no instrumentation: the nodes as they run without an SDK (the command hook feeding
  the latency histogram, and the ``is None`` checks of tracing) vs the same nodes with the
  command hook removed (the checks in refs and the client cannot be removed, so the baseline
  still pays them);
- the node metrics endpoint scraped 10/s and a dashboard refreshing 10/s vs neither.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from bench._harness import Row, Stats, nats_server, sample_async_latency
from foundation import _tracing
from foundation._node import Node
from foundation.demo_app import AGENTS, ClusteredOrderDesk
from foundation.observability.dashboard import Dashboard
from foundation.observability.node_metrics import serve_metrics
from jido import Signal


class _Drop(SpanExporter):
    """Exports nowhere (the cost measured is the spans' own, not a collector's)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class _BareTracer(trace.NoOpTracer):
    """Spans of the API's own types: valid ids, nothing recorded, no SDK."""

    def start_span(self, name: str, context: Any = None, *args: Any, **kwargs: Any) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else random.getrandbits(128)
        ids = trace.SpanContext(trace_id, random.getrandbits(64), False, trace.TraceFlags(1))
        return trace.NonRecordingSpan(ids)


class _BareProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _BareTracer()


def _order(n: int) -> Signal:
    return Signal(type="order.place", source="/bench", data={"order_id": f"o{n}", "amount": 1})


async def run(quick: bool) -> list[Row]:
    """Measure the observability figures (``quick``: a few seconds)."""
    n_calls = 400 if quick else 4000
    rounds = 4 if quick else 10
    rows: list[Row] = []
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(_Drop()))
    unsampled = TracerProvider(sampler=ALWAYS_OFF)
    unsampled.add_span_processor(BatchSpanProcessor(_Drop()))
    _tracing.configure(provider)
    try:
        async with nats_server() as url:
            a = Node(nats=url, name="obs-a", agents=AGENTS, failover=False)
            b = Node(nats=url, name="obs-b", agents=AGENTS, failover=False)
            await a.start()
            await b.start()
            try:
                await a.membership.wait_members(["obs-a", "obs-b"])
                desks = [f"desk-{i}" for i in range(8)]
                for agent_id in desks:
                    await a.spawn(ClusteredOrderDesk, id=agent_id, node="obs-b")
                refs = [a.ref(d) for d in desks]
                counter = iter(range(10**9))

                async def call() -> Any:
                    n = next(counter)
                    return await refs[n % len(refs)].call(_order(n))

                per = n_calls // rounds
                # 1. tracing on (100 % sampled) vs off
                variants: dict[str, trace.TracerProvider | None] = {
                    "on": provider,
                    "off": None,
                    "propagated": unsampled,
                    "minimal": _BareProvider(),
                }
                seen: dict[str, list[float]] = {name: [] for name in variants}
                for _ in range(rounds):
                    for name, variant in variants.items():
                        _tracing.configure(variant)
                        seen[name] += await sample_async_latency(call, n=per, warmup=50)
                _tracing.configure(None)
                on, off, propagated, minimal = (seen[name] for name in variants)
                rows.append(
                    Row.from_stats(
                        "observability",
                        "cross-node call p50, tracing on (every span sampled)",
                        "s",
                        Stats.of(on),
                        "same calls, tracing off",
                        Stats.of(off),
                        target="≤ 1.15×",
                    )
                )
                rows.append(
                    Row.from_stats(
                        "observability",
                        "cross-node call p50, SDK sampling nothing (propagation only)",
                        "s",
                        Stats.of(propagated),
                        "same calls, tracing off",
                        Stats.of(off),
                        note="the spans of the row above, not recorded: their cost apart",
                    )
                )
                rows.append(
                    Row.from_stats(
                        "observability",
                        "cross-node call p50, minimal API tracer, no SDK (our propagation)",
                        "s",
                        Stats.of(minimal),
                        "same calls, tracing off",
                        Stats.of(off),
                        note="tracing on minus this row: the SDK's own share",
                    )
                )

                # 2. no SDK vs no instrumentation (command hook removed)
                hooks = [a.runtime.command_hook, b.runtime.command_hook]
                plain: list[float] = []
                bare: list[float] = []
                for _ in range(rounds):
                    plain += await sample_async_latency(call, n=per, warmup=50)
                    a.runtime.command_hook = b.runtime.command_hook = None
                    bare += await sample_async_latency(call, n=per, warmup=50)
                    a.runtime.command_hook, b.runtime.command_hook = hooks
                rows.append(
                    Row.from_stats(
                        "observability",
                        "cross-node call p50, no SDK (metrics hook, tracing checks)",
                        "s",
                        Stats.of(plain),
                        "same calls, command hook removed",
                        Stats.of(bare),
                        target="≤ 1.02×",
                    )
                )

                # 3. metrics scraped 10/s + dashboard refreshing 10/s vs neither
                port = serve_metrics(0, addr="127.0.0.1")
                watched: list[float] = []
                quiet: list[float] = []
                async with httpx.AsyncClient(timeout=10.0) as http:
                    for _ in range(rounds):
                        quiet += await sample_async_latency(call, n=per, warmup=50)
                        async with Dashboard(a, refresh=0.1):
                            stop = asyncio.Event()

                            async def scrape(s: asyncio.Event = stop) -> None:
                                while not s.is_set():
                                    await http.get(f"http://127.0.0.1:{port}/metrics")
                                    await asyncio.sleep(0.1)

                            scraper = asyncio.create_task(scrape())
                            try:
                                watched += await sample_async_latency(call, n=per, warmup=50)
                            finally:
                                stop.set()
                                await scraper
                rows.append(
                    Row.from_stats(
                        "observability",
                        "cross-node call p50, node metrics scraped 10/s + dashboard 10/s",
                        "s",
                        Stats.of(watched),
                        "same calls, neither",
                        Stats.of(quiet),
                        target="≤ 1.02×",
                    )
                )
            finally:
                await b.stop()
                await a.stop()
    finally:
        _tracing.configure(None)
        provider.shutdown()
    return rows
