"""Signal codecs: CloudEvents JSON structured mode and binary mode (``ce-*`` headers + body).

Wire rules, all in one place:

* Structured mode is the CloudEvents JSON format: core attributes and extensions as top-level
  members, ``data`` as a JSON value, or ``data_base64`` (standard base64) when ``data`` is bytes.
  Media type :data:`STRUCTURED_CONTENT_TYPE`.
* Binary mode puts each attribute in a header named ``ce-<attribute>`` (values percent-encoded
  as the CloudEvents HTTP binding requires: everything outside printable ASCII, plus space,
  ``"`` and ``%``), the media type in ``content-type`` and ``data`` in the body: JSON-encoded
  for JSON media types (or none given), raw bytes for ``bytes`` data, UTF-8 for text.
  Decoding gives ``data`` as a JSON value for JSON media types, ``str`` for ``text/*``,
  ``bytes`` otherwise. Extension values arrive as strings (headers carry no types).

Decoding is strict: malformed JSON, a missing or wrong ``specversion``, missing required
attributes, bad attribute values, non-string extension names and input larger than the size
limit raise :class:`jido.SignalError` / :class:`jido.PayloadTooLargeError` naming the attribute.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import orjson
from pydantic import BaseModel

from jido._errors import JidoError, PayloadTooLargeError
from jido._signal import (
    _VALID_TYPES,
    SPECVERSION,
    Signal,
    _check_time,
    _fail,
    check_extensions,
    validate_type,
)

__all__ = [
    "BINARY_HEADER_PREFIX",
    "DEFAULT_MAX_SIZE",
    "STRUCTURED_CONTENT_TYPE",
    "decode_binary",
    "decode_json",
    "encode_binary",
    "encode_json",
    "is_json_content_type",
    "signal_from_dict",
    "signal_to_dict",
]

S = TypeVar("S", bound="Signal")

DEFAULT_MAX_SIZE = 1024 * 1024
"""Default limit (bytes) for an encoded signal accepted by the decoders (1 MiB)."""

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
"""Media type of a structured-mode message."""

BINARY_HEADER_PREFIX = "ce-"
"""Prefix of attribute headers in binary mode."""

_JSON_CT_RE = re.compile(r"(application|text)/([a-zA-Z0-9\-.]+\+)?json(;.*)?", re.IGNORECASE)
_JSON_CT_CACHE: dict[str, bool] = {}
_NEEDS_QUOTE_RE = re.compile(r'[^\x21-\x7e]|[ "%]')
_HEADER_SAFE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')


def is_json_content_type(content_type: str | None) -> bool:
    """Return whether ``data`` with this media type is a JSON value (``None`` counts as JSON)."""
    if content_type is None:
        return True
    known = _JSON_CT_CACHE.get(content_type)
    if known is None:
        known = _JSON_CT_RE.fullmatch(content_type.strip()) is not None
        if len(_JSON_CT_CACHE) < 1024:
            _JSON_CT_CACHE[content_type] = known
    return known


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_dumps = orjson.dumps
_loads = orjson.loads


def _not_serialisable(attribute: str, exc: TypeError) -> JidoError:
    return _fail(
        attribute,
        f"signal {attribute} is not JSON-serialisable: {exc}; send JSON values, "
        "bytes or a pydantic model",
    )


def _dump(value: Any, attribute: str) -> bytes:
    try:
        return _dumps(value, default=_default)
    except TypeError as exc:
        raise _not_serialisable(attribute, exc) from exc


# ---------------------------------------------------------------------------------------------
# structured mode


def signal_to_dict(sig: Signal) -> dict[str, Any]:
    """Return the CloudEvents JSON structured form of ``sig`` as a dict."""
    sig_id = sig._id
    out: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": sig_id if sig_id is not None else sig.id,
        "source": sig.source,
        "type": sig.type,
    }
    if sig.subject is not None:
        out["subject"] = sig.subject
    sig_time = sig._time
    out["time"] = sig_time if sig_time is not None else sig.time
    if sig.datacontenttype is not None:
        out["datacontenttype"] = sig.datacontenttype
    if sig.dataschema is not None:
        out["dataschema"] = sig.dataschema
    if sig.extensions:
        out.update(sig.extensions)
    data = sig.data
    if data is not None:
        cls = data.__class__
        if cls is dict or cls is list or cls is str or cls is int:
            out["data"] = data
        elif isinstance(data, bytes | bytearray | memoryview):
            out["data_base64"] = base64.b64encode(data).decode("ascii")
        elif isinstance(data, BaseModel):
            out["data"] = data.model_dump(mode="json")
        else:
            out["data"] = data
    return out


def encode_json(sig: Signal) -> bytes:
    """Encode ``sig`` in CloudEvents JSON structured mode (UTF-8 bytes)."""
    try:
        return _dumps(signal_to_dict(sig), default=_default)
    except TypeError as exc:
        raise _not_serialisable("data", exc) from exc


_MISSING: Any = object()


def _required(name: str, value: object) -> str:
    """Return a required string attribute, or raise the error naming it."""
    if value is None or value is _MISSING:
        raise _fail(name, f"required attribute {name!r} is missing")
    if not isinstance(value, str) or not value:
        raise _fail(name, f"attribute {name!r} must be a non-empty string, got {value!r}")
    return value


def _from_event(cls: type[S], event: dict[str, Any]) -> S:
    """Build a ``cls`` instance from a structured-mode dict, which this function consumes.

    Every attribute is checked; what is left in ``event`` once the known attributes are taken
    out are the extensions, and the dict itself becomes ``sig.extensions``.
    """
    pop = event.pop
    specversion = pop("specversion", None)
    if specversion != SPECVERSION:
        if specversion is None:
            raise _fail("specversion", "required attribute 'specversion' is missing")
        raise _fail(
            "specversion",
            f"unsupported specversion {specversion!r}; only {SPECVERSION!r} is accepted",
            value=specversion,
        )
    sig_id = pop("id", None)
    if sig_id.__class__ is not str or not sig_id:
        sig_id = _required("id", sig_id)
    source = pop("source", None)
    if source.__class__ is not str or not source:
        source = _required("source", source)
    sig_type = pop("type", None)
    if sig_type.__class__ is not str or sig_type not in _VALID_TYPES:
        sig_type = validate_type(_required("type", sig_type))
    subject = pop("subject", None)
    raw_time = pop("time", None)
    content_type = pop("datacontenttype", None)
    dataschema = pop("dataschema", None)
    data: Any = pop("data", _MISSING)
    encoded = pop("data_base64", _MISSING)
    if event:  # what is left are the extensions
        check_extensions(event)
    sig_time = _check_time(raw_time) if raw_time is not None else None
    if (
        (subject is not None and (subject.__class__ is not str or not subject))
        or (dataschema is not None and (dataschema.__class__ is not str or not dataschema))
        or (content_type is not None and (content_type.__class__ is not str or not content_type))
    ):
        for name, value in (
            ("subject", subject),
            ("dataschema", dataschema),
            ("datacontenttype", content_type),
        ):
            if value is not None and (not isinstance(value, str) or not value):
                raise _fail(name, f"attribute {name!r} must be a non-empty string, got {value!r}")
    if encoded is not _MISSING:
        if data is not _MISSING:
            raise _fail("data_base64", "an event may carry 'data' or 'data_base64', not both")
        if not isinstance(encoded, str):
            raise _fail("data_base64", "'data_base64' must be a base64 string")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _fail("data_base64", f"'data_base64' is not valid base64: {exc}") from exc
    elif data is _MISSING:
        data = None
    sig = cls.__new__(cls)
    sig.type = sig_type
    sig.source = source
    sig.data = data
    sig.subject = subject
    sig._id = sig_id
    sig._time = sig_time
    sig._ns = 0 if sig_time is not None else time.time_ns()
    sig.dataschema = dataschema
    sig.datacontenttype = content_type
    sig.extensions = event
    if cls is not Signal:
        sig._decoded()
    return sig


def signal_from_dict(cls: type[S], event: Mapping[str, Any]) -> S:
    """Build a ``cls`` instance from a CloudEvents JSON structured dict, strictly."""
    if not isinstance(event, Mapping):
        raise _fail("event", f"a CloudEvent must be a JSON object, got {type(event).__name__}")
    return _from_event(cls, dict(event))  # a copy: the caller's mapping is left as it is


def _too_large(size: int, limit: int, attribute: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"signal {attribute} is {size} bytes, over the {limit}-byte limit; "
        "send less data or raise max_size",
        details={"attribute": attribute, "size": size, "limit": limit},
    )


def decode_json(cls: type[S], text: str | bytes, *, max_size: int | None = None) -> S:
    """Decode CloudEvents JSON structured mode into a ``cls`` instance."""
    if text.__class__ is bytes:
        size = len(text)
    elif isinstance(text, str):
        size = len(text) if text.isascii() else len(text.encode())
    elif isinstance(text, bytes | bytearray | memoryview):
        size = len(text)
    else:
        raise _fail("event", f"expected JSON text or bytes, got {type(text).__name__}")
    if size > (DEFAULT_MAX_SIZE if max_size is None else max_size):
        raise _too_large(size, DEFAULT_MAX_SIZE if max_size is None else max_size, "event")
    try:
        event = _loads(text)
    except orjson.JSONDecodeError as exc:
        raise _fail("event", f"malformed JSON: {exc}") from exc
    if event.__class__ is not dict:
        raise _fail("event", f"a CloudEvent must be a JSON object, got {type(event).__name__}")
    return _from_event(cls, event)


# ---------------------------------------------------------------------------------------------
# binary mode


def _header_value(value: Any) -> str:
    if value is True:
        text = "true"
    elif value is False:
        text = "false"
    else:
        text = str(value)
    if _NEEDS_QUOTE_RE.search(text) is None:
        return text
    return quote(text, safe=_HEADER_SAFE)


def encode_binary(sig: Signal) -> tuple[dict[str, str], bytes]:
    """Encode ``sig`` in binary mode: ``(headers, body)``."""
    headers: dict[str, str] = {
        "ce-specversion": SPECVERSION,
        "ce-id": _header_value(sig.id),
        "ce-source": _header_value(sig.source),
        "ce-type": sig.type,
        "ce-time": sig.time,
    }
    if sig.subject is not None:
        headers["ce-subject"] = _header_value(sig.subject)
    if sig.dataschema is not None:
        headers["ce-dataschema"] = _header_value(sig.dataschema)
    for name, value in sig.extensions.items():
        headers[BINARY_HEADER_PREFIX + name] = _header_value(value)
    content_type = sig.datacontenttype
    if content_type is not None:
        headers["content-type"] = content_type
    data = sig.data
    if data is None:
        body = b""
    elif isinstance(data, bytes | bytearray | memoryview):
        body = bytes(data)
    elif is_json_content_type(content_type):
        body = _dump(data, "data")
    elif isinstance(data, str):
        body = data.encode()
    else:
        raise _fail(
            "data",
            f"data of type {type(data).__name__} cannot be sent as {content_type!r}; "
            "use a JSON media type, or str/bytes data",
        )
    return headers, body


def decode_binary(
    cls: type[S],
    headers: Mapping[str, str],
    body: bytes | str | None,
    *,
    max_size: int | None = None,
) -> S:
    """Decode binary mode (``ce-*`` headers, case-insensitive, and a body) into ``cls``."""
    event: dict[str, Any] = {}
    content_type: str | None = None
    for raw_name, value in headers.items():
        if not isinstance(raw_name, str):
            raise _fail(repr(raw_name), "header names must be strings")
        name = raw_name.lower()
        if name.startswith(BINARY_HEADER_PREFIX):
            attribute = name[len(BINARY_HEADER_PREFIX) :]
            if not isinstance(value, str):
                raise _fail(attribute, f"header {raw_name!r} must have a string value")
            event[attribute] = unquote(value) if "%" in value else value
        elif name == "content-type":
            content_type = value
    if "data" in event or "data_base64" in event:
        raise _fail("data", "binary mode carries data in the body, not in a ce- header")
    if body is None:
        body = b""
    elif isinstance(body, str):
        body = body.encode()
    limit = DEFAULT_MAX_SIZE if max_size is None else max_size
    if len(body) > limit:
        raise _too_large(len(body), limit, "data")
    data: Any
    if not body:
        data = None
    elif is_json_content_type(content_type):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _fail("data", f"body is not valid JSON for {content_type!r}: {exc}") from exc
    elif content_type is not None and content_type.lower().startswith("text/"):
        try:
            data = body.decode()
        except UnicodeDecodeError as exc:
            raise _fail("data", f"text body is not valid UTF-8: {exc}") from exc
    else:
        data = body
    if content_type is not None:
        event["datacontenttype"] = content_type
    event["data"] = data
    return _from_event(cls, event)
