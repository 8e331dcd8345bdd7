"""Signals on NATS messages: CloudEvents binary or structured mode, and trace propagation.

:func:`encode_signal` / :func:`decode_signal` are the codec of the cluster bus and the agent
inboxes; :func:`current_signal` is the signal whose bus handler is running (a signal published
from inside a handler continues its trace).
"""

from __future__ import annotations

import contextlib
import contextvars
import secrets
from collections.abc import Mapping
from typing import Literal

from foundation._wire import HDR_TRACEPARENT
from jido import Signal, SignalError

WireMode = Literal["binary", "structured"]

_current: contextvars.ContextVar[Signal | None] = contextvars.ContextVar(
    "foundation_current_signal", default=None
)


def current_signal() -> Signal | None:
    """The signal whose handler is running in this task (``None`` outside a bus handler)."""
    return _current.get()


def _child_traceparent(parent: Signal) -> str:
    """A traceparent in ``parent``'s trace with a new span id."""
    flags = parent.traceparent[-2:] if parent.traceparent is not None else "01"
    return f"00-{parent.trace_id}-{secrets.randbits(64) | 1:016x}-{flags}"


def encode_signal(signal: Signal, wire: WireMode = "structured") -> tuple[dict[str, str], bytes]:
    """Encode ``signal`` as NATS ``(headers, body)`` in ``wire`` mode.

    Binary mode: ``ce-*`` headers and the data as the body. Structured mode: the JSON event as
    the body and no headers (receivers tell the modes apart by the presence of ``ce-`` headers;
    headers cost more than the whole JSON codec in nats-py).

    Inside a bus handler, a signal with no ``traceparent`` of its own gets one continuing the
    handled signal's trace (the signal object itself is not changed).
    """
    inherit: str | None = None
    if "traceparent" not in signal.extensions:
        parent = _current.get()
        if parent is not None:
            inherit = _child_traceparent(parent)
    if wire == "binary":
        headers, body = signal.to_binary()
        if inherit is not None:
            headers["ce-traceparent"] = inherit
        return headers, body
    if inherit is None:
        return {}, signal.to_bytes()
    event = signal.to_dict()
    event["traceparent"] = inherit
    return {}, Signal.from_dict(event).to_bytes()


def _is_binary(headers: Mapping[str, str]) -> bool:
    if "ce-id" in headers or "ce-type" in headers:
        return True
    return any(name[:3].lower() == "ce-" for name in headers)


def decode_signal(headers: Mapping[str, str] | None, body: bytes) -> Signal:
    """Decode a NATS message into a :class:`jido.Signal`, detecting the CloudEvents mode.

    Binary mode when any ``ce-`` header is present, else structured JSON. A plain ``traceparent``
    header (as set by OpenTelemetry NATS instrumentation) is adopted when the event has none.
    Raises :class:`jido.SignalError` for a malformed event.
    """
    if headers and _is_binary(headers):
        sig = Signal.from_binary(headers, body)
    else:
        sig = Signal.from_json(body)
    if headers and "traceparent" not in sig.extensions:
        plain = headers.get(HDR_TRACEPARENT)
        if plain is not None:
            event = sig.to_dict()
            event["traceparent"] = plain
            with contextlib.suppress(SignalError):
                sig = Signal.from_dict(event)
    return sig


__all__ = ["WireMode", "current_signal", "decode_signal", "encode_signal"]
