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

from foundation._errors import InvalidRequestError
from foundation._ids import check_agent_id, check_token
from foundation._wire import (
    DEFAULT_TENANT,
    HDR_CAST,
    HDR_META,
    HDR_TIMEOUT,
    MAX_REQUEST_TIMEOUT,
    RESERVED_META_KEYS,
    RESERVED_META_PREFIX,
    SUBJECT_ROOT,
    Subjects,
)
from jido import JidoError, PayloadTooLargeError, Signal, SignalError, ValidationError
from jido._codec import dumps_json

_loads = msgspec.json.Decoder().decode
"""JSON decoding for the wire: integers beyond 64 bits stay exact (orjson would make floats)."""


def _load_json(data: bytes, what: str) -> Any:
    """Decode ``data`` from another process; any failure is a typed :class:`SignalError`."""
    try:
        return _loads(data)
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
        raise SignalError(
            f"{what} is {reason}; send one JSON object as documented in docs/cluster-wire.md",
            details={"what": what, "reason": reason},
            cause=exc,
        ) from exc


OPS: tuple[str, ...] = (
    "call",
    "cast",
    "casts",
    "state",
    "info",
    "start",
    "stop",
    "ping",
    "stats",
)
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
CAST_HEADER = HDR_CAST


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
    return _request_of(_load_json(data, "request body"))


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
    body = _load_json(data, "casts body")
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
    """Validate one decoded request; every defect is a typed error naming the field."""
    if not isinstance(body, dict):
        raise InvalidRequestError(
            "a request is one JSON object {'a': agent_id, 's': signal, ...}",
            details={"field": "", "got": type(body).__name__},
        )
    agent_id = body.pop("a", None)
    if not isinstance(agent_id, str):
        raise InvalidRequestError(
            "request lacks the agent id field 'a' (a string)", details={"field": "a"}
        )
    check_agent_id(agent_id)
    raw = body.pop("s", None)
    signal: Signal | None = None
    if raw is not None:
        if not isinstance(raw, dict):
            raise InvalidRequestError(
                "field 's' must be a CloudEvent object", details={"field": "s"}
            )
        try:
            signal = Signal.from_dict(raw)
        except JidoError:
            raise
        except (Exception, RecursionError) as exc:
            raise SignalError(
                f"field 's' is not a valid CloudEvent: {type(exc).__name__}",
                details={"field": "s"},
                cause=exc,
            ) from exc
    return Request(
        agent_id=agent_id,
        signal=signal,
        timeout=check_timeout(body.pop("t", None), "t"),
        meta=check_meta(body.pop("m", None), "m"),
        extra=body,
    )


def check_timeout(value: Any, field: str) -> float | None:
    """A timeout from another process: ``None`` or a number of seconds in (0, 3600]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(
            f"field {field!r} must be a number of seconds", details={"field": field}
        )
    seconds = float(value)
    if not 0 < seconds <= MAX_REQUEST_TIMEOUT:  # also refuses NaN
        raise InvalidRequestError(
            f"field {field!r} must be between 0 and {MAX_REQUEST_TIMEOUT:g} seconds",
            details={"field": field, "value": repr(value)},
        )
    return seconds


def check_meta(value: Any, field: str = "meta") -> dict[str, Any] | None:
    """Command meta from a caller: a JSON object without node-only keys.

    ``stream_seq`` (an inbox agent's committed position) and ``fdn.*`` keys are written by
    nodes only; a request setting one is refused with :class:`InvalidRequestError` rather
    than allowed to move what the node believes.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            f"field {field!r} must be a JSON object", details={"field": field}
        )
    for key in value:
        if not isinstance(key, str):
            raise InvalidRequestError(
                f"field {field!r} has a non-string key", details={"field": field}
            )
        if key in RESERVED_META_KEYS or key.startswith(RESERVED_META_PREFIX):
            raise InvalidRequestError(
                f"meta key {key!r} is reserved for the cluster's nodes; use another key",
                details={"field": field, "key": key},
            )
    return dict(value)


def payload_too_large(size: int, limit: int, what: str) -> PayloadTooLargeError:
    """The typed error for ``what`` of ``size`` bytes over the server's ``limit``."""
    return PayloadTooLargeError(
        f"{what} is {size} bytes, over the NATS server's max_payload of {limit} bytes; send "
        "a reference instead (e.g. store the data in a JetStream object store and put its "
        "name in the signal) or raise max_payload on the server",
        details={"size": size, "limit": limit, "what": what},
    )


def check_size(payload: bytes, limit: int, what: str) -> bytes:
    """Return ``payload`` if the server accepts it (``limit``: its ``max_payload``), else raise.

    Raises :class:`PayloadTooLargeError` naming the size and the limit, before anything is
    sent (NATS would otherwise refuse it with an untyped error, or drop a reply unseen).
    """
    if limit > 0 and len(payload) > limit:
        raise payload_too_large(len(payload), limit, what)
    return payload


def encode_reply_within(data: bytes, limit: int, what: str) -> bytes:
    """``data`` (an encoded reply) if it fits ``limit``, else an encoded typed error reply.

    The command already ran: the error says so, so the caller does not retry blindly.
    """
    if limit <= 0 or len(data) <= limit:
        return data
    return encode_error(
        PayloadTooLargeError(
            f"the reply to {what} is {len(data)} bytes, over the NATS server's max_payload of "
            f"{limit} bytes; the command was applied, but its result cannot be sent: return "
            "less (e.g. a reference to data kept in a JetStream object store)",
            details={"size": len(data), "limit": limit, "what": what, "applied": True},
        )
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


def public_is_cast(headers: Mapping[str, str] | None) -> bool:
    """True when a public request asks for a cast to be acknowledged (header ``fdn-cast``)."""
    return bool(headers) and headers.get(CAST_HEADER) == "1"  # type: ignore[union-attr]


def public_timeout(headers: Mapping[str, str] | None, default: float) -> float:
    """The caller's timeout from the optional ``fdn-timeout`` header, else ``default``."""
    if headers:
        raw = headers.get(TIMEOUT_HEADER)
        if raw is not None:
            try:
                value = float(raw)
            except ValueError as exc:
                raise ValidationError(
                    f"header {TIMEOUT_HEADER}={raw[:40]!r} is not a number of seconds",
                    cause=exc,
                ) from exc
            if not value <= 0:  # positive, or NaN (which the check refuses)
                checked = check_timeout(value, TIMEOUT_HEADER)
                if checked is not None:
                    return checked
    return default


def public_meta(headers: Mapping[str, str] | None) -> dict[str, Any] | None:
    """The optional ``fdn-meta`` header as a dict."""
    if headers and META_HEADER in headers:
        meta = _load_json(headers[META_HEADER].encode(), f"header {META_HEADER}")
        return check_meta(meta, META_HEADER)
    return None


__all__ = [
    "CAST_BATCH_BYTES",
    "CAST_HEADER",
    "DEFAULT_PREFIX",
    "DEFAULT_TENANT",
    "META_HEADER",
    "OPS",
    "TIMEOUT_HEADER",
    "Request",
    "Subjects",
    "check_agent_id",
    "check_meta",
    "check_size",
    "check_timeout",
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
    "encode_reply_within",
    "encode_request",
    "payload_too_large",
    "public_is_cast",
    "public_meta",
    "public_timeout",
]
