"""OpenTelemetry spans of the LLM loop, named and attributed by the GenAI semantic conventions.

One ``invoke_agent {agent}`` span per turn (or per resumption of a turn), one ``chat {model}``
span per model call (client kind; request model, max tokens, response model, finish reason and
token usage as attributes) and one ``execute_tool {tool}`` span per tool call (tool name, call id
and type). Message content is never recorded.

The turn's span takes the incoming signal's ``traceparent`` as its parent, or the current span
when it is in that trace (under a cluster node: the command span running the turn). Its own
trace context is kept in the agent's state (``state.ai.trace``), so a turn resumed after a crash
or a failover continues the same trace and links to the span that was running when the process
died.

Everything here is a no-op when ``opentelemetry-api`` is not installed, and costs a no-op span
(a few microseconds per model call) when no SDK is configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - the api is a dependency of the package
    _trace = None  # type: ignore[assignment]

__all__ = ["chat_span", "invoke_agent_span", "record_usage", "tool_span"]

_PROPAGATOR: Any = TraceContextTextMapPropagator() if _trace is not None else None


def _tracer() -> Any:
    return _trace.get_tracer("jido.ai") if _trace is not None else None


def _context_of(traceparent: str | None) -> Any:
    if not traceparent or _PROPAGATOR is None:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


@contextlib.contextmanager
def invoke_agent_span(
    agent_name: str,
    agent_id: str,
    turn: int,
    *,
    parent: str | None,
    resumed_from: str | None = None,
) -> Iterator[str | None]:
    """The span of one turn; yields its ``traceparent`` (to keep in the agent's state).

    ``resumed_from`` (a turn continued after a crash): the span joins that trace and links to
    the span it continues.
    """
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    links = []
    context = _context_of(parent)
    current = _trace.get_current_span().get_span_context()
    if (
        context is not None
        and current.is_valid
        and current.trace_id == _trace.get_current_span(context).get_span_context().trace_id
    ):
        context = None  # the command running the turn, itself a child of that parent
    if resumed_from:
        context = _context_of(resumed_from)
        span_context = _trace.get_current_span(context).get_span_context()
        if span_context.is_valid:
            links.append(_trace.Link(span_context, {"jido.ai.resumed": True}))
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent_name,
        "gen_ai.agent.id": agent_id,
        "gen_ai.conversation.id": agent_id,
        "jido.ai.turn": turn,
    }
    with tracer.start_as_current_span(
        f"invoke_agent {agent_name}",
        context=context,
        kind=_trace.SpanKind.INTERNAL,
        attributes=attributes,
        links=links,
    ) as span:
        carrier: dict[str, str] = {}
        if span.get_span_context().is_valid:
            _PROPAGATOR.inject(carrier)
        yield carrier.get("traceparent")


@contextlib.contextmanager
def chat_span(provider: str, model: str, max_tokens: int | None) -> Iterator[Any]:
    """The span of one model call (record the response with :func:`record_usage`)."""
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }
    if max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = max_tokens
    with tracer.start_as_current_span(
        f"chat {model}", kind=_trace.SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span


def record_usage(span: Any, *, model: str, stop_reason: str | None, usage: Any) -> None:
    """Put a model response's model, finish reason and token usage on its ``chat`` span."""
    if span is None or not span.is_recording():
        return
    attributes: Mapping[str, Any] = {
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
    }
    span.set_attributes(attributes)
    if stop_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [stop_reason])


@contextlib.contextmanager
def tool_span(name: str, call_id: str, *, own: bool) -> Iterator[Any]:
    """The span of one tool call (``own``: one of the agent's actions; else another source)."""
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": "function" if own else "extension",
    }
    with tracer.start_as_current_span(
        f"execute_tool {name}", kind=_trace.SpanKind.INTERNAL, attributes=attributes
    ) as span:
        yield span
