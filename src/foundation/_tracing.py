"""OpenTelemetry tracing of the cluster: one span per hop, context carried by ``traceparent``.

Spans are made only when an OpenTelemetry SDK is configured: :func:`refresh` (run when a node
starts, or by :func:`configure`) reads the global tracer provider **once**; while it is the API's
no-op (or proxy) provider, :data:`active` is ``None`` and every instrumented place pays one
global read and an ``is None`` test. With an SDK, the spans are:

* ``call <agent type>`` (kind ``CLIENT``) and ``cast <agent type>`` (``PRODUCER``) around a
  ``ClusterRef`` call or cast; the signal sent carries the span's ``traceparent`` (a new span
  id, same trace id), and so does the NATS header of every request the node sends;
* ``<op>`` on the receiving node (``SERVER``; ``CONSUMER`` for one-way ops), one endpoint
  step, parented by the request's ``traceparent`` header; a call's signal is re-stamped with
  this span, so the action's span is its child;
* ``execute <action>`` around each command an agent runs (parented by the signal);
* ``spawn``, ``activate``, ``hand_over``, ``failover``, ``kv commit`` (``INTERNAL``).

A signal without a ``traceparent`` starts a new trace at the first span. The tracer is named
``foundation``; every span carries ``foundation.node`` and, where known, ``foundation.agent.id``
and ``foundation.tenant``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
)

from jido import Signal

TRACER_NAME = "foundation"
"""The instrumentation scope name of every span."""

ATTR_NODE = "foundation.node"
ATTR_AGENT = "foundation.agent.id"
ATTR_AGENT_TYPE = "foundation.agent.type"
ATTR_TENANT = "foundation.tenant"
ATTR_OP = "foundation.op"
ATTR_ACTION = "foundation.action"

active: Tracer | None = None
"""The tracer in use, or ``None`` while no SDK is configured (the no-cost path)."""

_override: TracerProvider | None = None


def configure(provider: TracerProvider | None) -> None:
    """Use ``provider`` for the spans of this process (``None``: the global provider again)."""
    global _override
    _override = provider
    refresh()


def refresh() -> Tracer | None:
    """Read the tracer provider once; return (and keep in :data:`active`) the tracer or ``None``."""
    global active
    provider = _override if _override is not None else trace.get_tracer_provider()
    if isinstance(provider, (ProxyTracerProvider, trace.NoOpTracerProvider)):
        active = None
    else:
        active = provider.get_tracer(TRACER_NAME)
    return active


# -- traceparent <-> context -------------------------------------------------------------------


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The remote span context of a W3C ``traceparent`` value (``None`` if absent or invalid)."""
    if not value or len(value) != 55:
        return None
    try:
        trace_id = int(value[3:35], 16)
        span_id = int(value[36:52], 16)
        flags = int(value[53:55], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))


_last_named: tuple[Span | None, str | None] = (None, None)


def traceparent_of(span: Span) -> str | None:
    """The ``traceparent`` value naming ``span`` (``None`` for an invalid span)."""
    global _last_named
    last, value = _last_named
    if last is span:  # a hop names its span in the signal and in the request headers
        return value
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    value = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 1:02x}"
    _last_named = (span, value)
    return value


def _parent(traceparent: str | None, remote_first: bool) -> Any:
    """The OpenTelemetry context to start a span in.

    ``remote_first`` (a hop's receiving side): the span named by ``traceparent``, else a new
    trace (a task's inherited context is never the parent of a hop). Otherwise (a sending
    side): the current span, else the one named by ``traceparent``, else a new trace.
    """
    if not remote_first:
        current = trace.get_current_span()
        if current.get_span_context().is_valid:
            return None  # the current context
    if traceparent is not None:
        last, value = _last_named
        if last is not None and value == traceparent:
            # the span this process just named (a hop's span parenting its command): itself,
            # not a parsed copy of its context
            return trace.set_span_in_context(last)
    remote = parse_traceparent(traceparent)
    if remote is None:
        return _ROOT if remote_first else None
    return trace.set_span_in_context(NonRecordingSpan(remote))


_ROOT = otel_context.Context()


def stamped(signal: Signal, span: Span) -> Signal:
    """``signal`` carrying ``span``'s ``traceparent`` (a copy; the original is left as it is)."""
    value = traceparent_of(span)
    if value is None or signal.extensions.get("traceparent") == value:
        return signal
    clone = copy.copy(signal)  # same id, time, data: one hop's view of the same event
    clone.extensions = {**signal.extensions, "traceparent": value}
    return clone


def restamp_owned(signal: Signal) -> None:
    """Set the current span's ``traceparent`` on ``signal`` itself (no-op when tracing is off).

    For a signal nobody else holds (one just decoded from a request), where a copy would only
    cost time.
    """
    if active is None:
        return
    value = traceparent_of(trace.get_current_span())
    if value is not None:
        signal.extensions["traceparent"] = value


def headers() -> dict[str, str] | None:
    """NATS headers carrying the current span's ``traceparent`` (``None``: no span)."""
    if active is None:
        return None
    value = traceparent_of(trace.get_current_span())
    return {"traceparent": value} if value is not None else None


# -- spans -------------------------------------------------------------------------------------


class _Current:
    """A span made current for a block (lighter than the API's generator-based helper)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span | None) -> None:
        self._span = span
        self._token: Any = None

    def __enter__(self) -> Span | None:
        if self._span is not None:
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        current = self._span
        if current is None:
            return
        otel_context.detach(self._token)
        if exc is not None and isinstance(exc, Exception):
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        current.end()


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    traceparent: str | None = None,
    remote_first: bool = False,
    attributes: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A current span named ``name`` for a ``with`` block (``None`` when tracing is off).

    Its parent is the current span, else the span named by ``traceparent`` (``remote_first``:
    that span, else none; see :func:`_parent`); an exception leaving the block is recorded
    and sets the status to error.
    """
    tracer = active
    if tracer is None:
        return _Current(None)
    return _Current(
        tracer.start_span(
            name,
            context=_parent(traceparent, remote_first),
            kind=kind,
            attributes=attributes,
        )
    )


def mark_error(current: Span | None, error: BaseException) -> None:
    """Record ``error`` on ``current`` (a handled error that still is the span's outcome)."""
    if current is not None:
        current.record_exception(error)
        current.set_status(Status(StatusCode.ERROR, type(error).__name__))


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def traced(name: str, agent: Callable[..., str | None] | None = None) -> Callable[[_F], _F]:
    """Decorate an async method: an ``INTERNAL`` span ``name`` around each call when tracing.

    ``agent(self, *args, **kwargs)`` names the agent the call is about (the span's
    ``foundation.agent.id``); the node is read from ``self.node_id``, ``self.owner``,
    ``self.node.id`` or ``self.id``.
    """

    def decorate(fn: _F) -> _F:
        @functools.wraps(fn)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if active is None:
                return await fn(self, *args, **kwargs)
            attrs: dict[str, Any] = {}
            node = (
                getattr(self, "node_id", None)
                or getattr(self, "owner", None)
                or getattr(getattr(self, "node", self), "id", None)
            )
            if isinstance(node, str):
                attrs[ATTR_NODE] = node
            if agent is not None:
                agent_id = agent(self, *args, **kwargs)
                if agent_id:
                    attrs[ATTR_AGENT] = agent_id
            with span(name, attributes=attrs):
                return await fn(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


Handler = Callable[[Any], Awaitable[Any]]

_ONE_WAY = frozenset({"cast", "casts"})
_SIGNAL_OPS = frozenset({"call", "cast", "casts"})


def install(endpoint: Any, node_id: str, tenant: str) -> None:
    """Trace a node's endpoint when an SDK is configured now (else: nothing is added)."""
    if refresh() is None:
        return
    endpoint.wrap(endpoint_step(node_id, tenant))


def endpoint_step(node_id: str, tenant: str) -> Callable[[str, Handler], Handler]:
    """The endpoint step of a node: a ``SERVER`` (or ``CONSUMER``) span around every op.

    Installed with ``Endpoint.wrap``; the span's parent is the request's ``traceparent``
    header. When tracing is off at the time of a message the handler runs as it is.
    """

    def wrapper(op: str, handler: Handler) -> Handler:
        kind = SpanKind.CONSUMER if op in _ONE_WAY else SpanKind.SERVER
        attrs = {ATTR_NODE: node_id, ATTR_TENANT: tenant, ATTR_OP: op}

        async def traced(msg: Any) -> Any:
            if active is None:
                return await handler(msg)
            hdrs = msg.headers
            parent = hdrs.get("traceparent") if hdrs else None
            if parent is None and op in _SIGNAL_OPS:
                # an untraced sender: the signal's own traceparent parents the command span
                return await handler(msg)
            with span(op, kind=kind, traceparent=parent, remote_first=True, attributes=attrs):
                return await handler(msg)

        return traced

    return wrapper


def command_hook(node_id: str) -> Callable[[str, Any], contextlib.AbstractContextManager[Any]]:
    """A span around each command (entered by the node's ``Runtime.command_hook``).

    Named ``process <signal type>``, parented by the signal's ``traceparent``; the action's run
    and the checkpoint commit (``kv commit``) happen inside it.
    """

    def hook(agent_id: str, item: Any) -> contextlib.AbstractContextManager[Any]:
        if active is None:
            return contextlib.nullcontext()
        head = item[0]
        signal = head if isinstance(head, Signal) else head.signals[0]
        return span(
            f"process {signal.type}",
            traceparent=signal.traceparent,
            remote_first=True,
            attributes={
                ATTR_NODE: node_id,
                ATTR_AGENT: agent_id,
                "cloudevents.event_type": signal.type,
            },
        )

    return hook


__all__ = [
    "ATTR_ACTION",
    "ATTR_AGENT",
    "ATTR_AGENT_TYPE",
    "ATTR_NODE",
    "ATTR_OP",
    "ATTR_TENANT",
    "TRACER_NAME",
    "SpanKind",
    "active",
    "command_hook",
    "configure",
    "endpoint_step",
    "headers",
    "install",
    "mark_error",
    "parse_traceparent",
    "refresh",
    "restamp_owned",
    "span",
    "stamped",
    "traced",
    "traceparent_of",
]
