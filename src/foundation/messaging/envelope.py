"""Agent subjects and the request/reply wire between nodes (see ``docs/cluster-wire.md``).

Two kinds of subject carry agent traffic:

* ``<prefix>.node.<node_id>.<op>`` — the private subject of one node. Each node subscribes
  **once** to ``<prefix>.node.<node_id>.>`` and dispatches to its local agents by the agent id
  carried in the message, so a node hosting 100k agents still holds a handful of subscriptions.
  Ops: ``call``, ``cast``, ``casts`` (a batch of casts), ``state``, ``start``, ``stop``,
  ``ping``, ``stats``.
* ``<prefix>.agent.<tenant>.<agent_id>`` — the public subject of one agent. Every node serves
  ``<prefix>.agent.>`` in the queue group ``<prefix>-agents``; whichever node receives a message
  forwards it to the owner. A plain NATS client can send a CloudEvent there (binary mode: ``ce-``
  headers and the data as body; or structured JSON) and gets the reply envelope back.

Internal requests are one JSON object (``{"a": agent_id, "s": signal, "t": timeout, "m": meta}``);
replies are ``{"ok": result}`` or ``{"error": JidoError.to_dict()}``, so errors cross the network
typed and become the same ``JidoError`` subclass on the caller's side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from foundation._ids import check_agent_id, check_token
from foundation._wire import DEFAULT_TENANT, HDR_META, HDR_TIMEOUT, SUBJECT_ROOT, Subjects
from jido import JidoError, Signal, SignalError, ValidationError
from jido._codec import dumps_json

_loads = msgspec.json.Decoder().decode
"""JSON decoding for the wire: integers beyond 64 bits stay exact (orjson would make floats)."""

OPS: tuple[str, ...] = ("call", "cast", "casts", "state", "start", "stop", "ping", "stats")
"""Operations served on a node's private subject."""

WIRE_FEATURES: tuple[str, ...] = ("casts",)
"""Optional wire features this software serves, published in its node record.

Senders use a feature only towards nodes whose record lists it, so nodes of an older version
in the same cluster keep receiving what they understand (a node without ``casts`` gets one
``cast`` message per cast).
"""

DEFAULT_PREFIX = SUBJECT_ROOT
TIMEOUT_HEADER = HDR_TIMEOUT
META_HEADER = HDR_META


def _default(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(obj)


def dumps(value: Any) -> bytes:
    """JSON-encode ``value`` (pydantic models are dumped; unknown objects become strings).

    Integers beyond 64 bits are written exactly. Raises :class:`jido.SignalError` for values
    JSON cannot carry.
    """
    try:
        return orjson.dumps(value, default=_default)
    except TypeError as exc:
        if "64-bit" in str(exc):
            # A signal decoded from a producer that sends big integers keeps them exact: write
            # them exactly too, so that what was accepted can be forwarded.
            with contextlib.suppress(TypeError):
                return dumps_json(value)
        raise SignalError(
            f"payload is not JSON-serialisable: {exc}; send JSON values (64-bit integers)",
            details={"reason": str(exc)},
            cause=exc,
        ) from exc


def encode_request(
    agent_id: str,
    signal: Signal | None = None,
    *,
    timeout: float | None = None,
    meta: Mapping[str, Any] | None = None,
    **extra: Any,
) -> bytes:
    """Encode one node-to-node request about ``agent_id``."""
    body: dict[str, Any] = {"a": agent_id}
    if signal is not None:
        body["s"] = signal.to_dict()
    if timeout is not None:
        body["t"] = timeout
    if meta:
        body["m"] = dict(meta)
    if extra:
        body.update(extra)
    return dumps(body)


@dataclass(slots=True)
class Request:
    """A decoded node-to-node request."""

    agent_id: str
    signal: Signal | None
    timeout: float | None
    meta: dict[str, Any] | None
    extra: dict[str, Any]


def decode_request(data: bytes) -> Request:
    """Decode :func:`encode_request` output; raises :class:`jido.SignalError` on bad input."""
    try:
        body = _loads(data)
    except msgspec.DecodeError as exc:
        raise SignalError("request body is not JSON", cause=exc) from exc
    return _request_of(body)


CAST_BATCH_BYTES = 64 * 1024
"""A sender publishes its pending casts to one node once they reach this many bytes."""


def encode_cast(agent_id: str, signal: Signal, meta: Mapping[str, Any] | None = None) -> bytes:
    """Encode one cast as an item of a ``casts`` batch (the ``cast`` request body)."""
    body: dict[str, Any] = {"a": agent_id, "s": signal.to_dict()}
    if meta:
        body["m"] = dict(meta)
    return dumps(body)


def encode_cast_batch(items: list[bytes]) -> bytes:
    """Join :func:`encode_cast` items into the body of one ``casts`` message (a JSON array)."""
    return b"[" + b",".join(items) + b"]"


def decode_cast_batch(data: bytes) -> list[Request | SignalError]:
    """Decode a ``casts`` body into its requests, in order.

    A malformed item becomes a :class:`jido.SignalError` in its place (the others are kept);
    a body that is not a JSON array raises ``SignalError``.
    """
    try:
        body = _loads(data)
    except msgspec.DecodeError as exc:
        raise SignalError("casts body is not JSON", cause=exc) from exc
    if not isinstance(body, list):
        raise SignalError("casts body is not a JSON array of cast requests")
    out: list[Request | SignalError] = []
    for item in body:
        try:
            out.append(_request_of(item))
        except SignalError as exc:
            out.append(exc)
    return out


def _request_of(body: Any) -> Request:
    if not isinstance(body, dict) or not isinstance(body.get("a"), str):
        raise SignalError("request lacks the agent id field 'a'", details={"attribute": "a"})
    raw = body.pop("s", None)
    signal = Signal.from_dict(raw) if raw is not None else None
    timeout = body.pop("t", None)
    meta = body.pop("m", None)
    agent_id = body.pop("a")
    return Request(
        agent_id=agent_id,
        signal=signal,
        timeout=float(timeout) if timeout is not None else None,
        meta=meta if isinstance(meta, dict) else None,
        extra=body,
    )


def encode_ok(result: Any) -> bytes:
    """Encode a successful reply."""
    return dumps({"ok": result})


def encode_error(error: BaseException) -> bytes:
    """Encode a failed reply; a non-``JidoError`` becomes an ``execution_error``."""
    if not isinstance(error, JidoError):
        error = JidoError(f"{type(error).__name__}: {error}", details={"exception": repr(error)})
    return dumps({"error": error.to_dict()})


def decode_reply(data: bytes) -> Any:
    """Return the result of a reply, or raise the typed error it carries."""
    try:
        body = _loads(data)
    except msgspec.DecodeError as exc:
        raise JidoError(
            "reply is not JSON", details={"body": data[:200].decode(errors="replace")}
        ) from exc
    if isinstance(body, dict):
        if "ok" in body:
            return body["ok"]
        err = body.get("error")
        if isinstance(err, dict):
            raise JidoError.from_dict(err)
    raise JidoError("reply is neither {'ok': ...} nor {'error': ...}", details={"reply": body})


def decode_public_signal(headers: Mapping[str, str] | None, data: bytes) -> Signal:
    """Decode a CloudEvent sent by any NATS client to a public agent subject.

    Binary mode (a ``ce-specversion`` header; the other ``ce-`` headers are the attributes and the
    body is the data) or structured JSON mode (the whole event as a JSON body).
    """
    if headers and any(k.lower() == "ce-specversion" for k in headers):
        return Signal.from_binary(headers, data)
    return Signal.from_json(data)


def public_timeout(headers: Mapping[str, str] | None, default: float) -> float:
    """The caller's timeout from the optional ``fdn-timeout`` header, else ``default``."""
    if headers:
        raw = headers.get(TIMEOUT_HEADER)
        if raw is not None:
            try:
                value = float(raw)
            except ValueError as exc:
                raise ValidationError(
                    f"header {TIMEOUT_HEADER}={raw!r} is not a number of seconds", cause=exc
                ) from exc
            if value > 0:
                return value
    return default


def public_meta(headers: Mapping[str, str] | None) -> dict[str, Any] | None:
    """The optional ``fdn-meta`` header as a dict."""
    if headers and META_HEADER in headers:
        try:
            meta = _loads(headers[META_HEADER])
        except msgspec.DecodeError as exc:
            raise ValidationError(f"header {META_HEADER} is not a JSON object", cause=exc) from exc
        if isinstance(meta, dict):
            return meta
        raise ValidationError(f"header {META_HEADER} is not a JSON object")
    return None


__all__ = [
    "CAST_BATCH_BYTES",
    "DEFAULT_PREFIX",
    "DEFAULT_TENANT",
    "META_HEADER",
    "OPS",
    "TIMEOUT_HEADER",
    "Request",
    "Subjects",
    "check_agent_id",
    "check_token",
    "decode_cast_batch",
    "decode_public_signal",
    "decode_reply",
    "decode_request",
    "dumps",
    "encode_cast",
    "encode_cast_batch",
    "encode_error",
    "encode_ok",
    "encode_request",
    "public_meta",
    "public_timeout",
]
