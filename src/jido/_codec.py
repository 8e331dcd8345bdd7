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

How structured mode is decoded fast (every check still runs):

* JSON is parsed by ``msgspec``. One C pass decodes the message into an envelope
  ``msgspec.Struct`` whose fields carry the checks a C decoder can make: ``specversion`` is
  the literal ``"1.0"``; ``id`` and ``source`` are non-empty strings; ``subject``,
  ``datacontenttype`` and ``dataschema`` are non-empty strings or null; extension values are
  strings, integers or booleans; ``data`` is any JSON value. The envelope forbids unknown
  members, so a message it accepts carries no attribute the envelope does not name.
* The rest is checked on the decoded fields: the type against the naming rules (validated
  types are remembered), the time as RFC 3339 (the canonical ``YYYY-MM-DDTHH:MM:SS.ffffffZ``
  of a real instant by :func:`canonical_time`, any other shape by the full check),
  ``traceparent`` by :func:`valid_traceparent`, ``data_base64`` as base64. Those two checks
  are native (``jido._speedups``, C) where the extension was built at install time, else the
  Python versions here (``datetime.fromisoformat`` by position, the regular expression); both
  answer the same (``tests/jido/test_speedups.py``), and ``JIDO_PURE_PYTHON=1`` forces Python.
* The envelope names the core attributes, the extensions this project defines
  (``traceparent``, ``tracestate``, ``causationid``) and extension names learned from earlier
  messages (at most :data:`MAX_LEARNED_EXTENSIONS`). A message the envelope does not accept —
  an extension name not learned yet, any bad value, any shape the fast checks leave open —
  is decoded again by the reference path (parse to a dict, check every member, consume it),
  which gives the typed error naming the attribute, or the signal. Extension names of a
  signal decoded there are learned (their names passed the naming rule), so the next
  message with them takes the fast path. Nothing about a particular message is kept.
* Integers beyond 64 bits decode exactly (as the CloudEvents SDK and the standard library
  do); encoding such data falls back to a slower encoder that writes them exactly. JSON nested
  deeper than the interpreter's recursion limit allows is refused ("nested too deeply").
* A decoded signal's extensions are in envelope order, not necessarily the order of the
  message (JSON member order carries no meaning in CloudEvents).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, unquote

import msgspec
import orjson
from pydantic import BaseModel

from jido._errors import JidoError, PayloadTooLargeError, SignalError
from jido._signal import (
    _TRACEPARENT_RE,
    _VALID_TYPES,
    SPECVERSION,
    Signal,
    _check_time,
    _fail,
    _fromisoformat,
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


def _not_serialisable(attribute: str, exc: TypeError) -> JidoError:
    return _fail(
        attribute,
        f"signal {attribute} is not JSON-serialisable: {exc}; send JSON values, "
        "bytes or a pydantic model",
    )


_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def _widen(value: Any) -> Any:
    """``value`` with integers beyond 64 bits as exact JSON fragments (orjson refuses them)."""
    cls = value.__class__
    if cls is int or (isinstance(value, int) and not isinstance(value, bool)):
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
        return orjson.Fragment(int.__repr__(value).encode())
    if isinstance(value, dict):
        return {key: _widen(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_widen(item) for item in value]
    if isinstance(value, BaseModel):
        return _widen(value.model_dump(mode="json"))
    return value


def _wide_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _widen(value.model_dump(mode="json"))
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps_checked(value: Any) -> bytes:
    """``orjson.dumps`` with the signal defaults; integers beyond 64 bits are written exactly.

    Raises ``TypeError`` for values that are not JSON-serialisable.
    """
    try:
        return _dumps(value, default=_default)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise
    # Rare: data decoded from a producer that sends big integers (the decoder keeps them
    # exact). Everything else is still written, and refused, by orjson's own rules.
    return _dumps(_widen(value), default=_wide_default)


dumps_json = _dumps_checked
"""JSON bytes of ``value`` as signals are written (pydantic models dumped, big integers exact)."""


def _dump(value: Any, attribute: str) -> bytes:
    try:
        return _dumps_checked(value)
    except TypeError as exc:
        raise _not_serialisable(attribute, exc) from exc


# ---------------------------------------------------------------------------------------------
# structured mode


def signal_to_dict(sig: Signal) -> dict[str, Any]:
    """Return the CloudEvents JSON structured form of ``sig`` as a dict."""
    sig_id = sig._id
    sig_time = sig._time
    subject = sig.subject
    content_type = sig.datacontenttype
    out: dict[str, Any]
    if subject is not None and content_type is not None:  # the usual shape: one literal
        out = {
            "specversion": SPECVERSION,
            "id": sig_id if sig_id is not None else sig.id,
            "source": sig.source,
            "type": sig.type,
            "subject": subject,
            "time": sig_time if sig_time is not None else sig.time,
            "datacontenttype": content_type,
        }
    else:
        out = {
            "specversion": SPECVERSION,
            "id": sig_id if sig_id is not None else sig.id,
            "source": sig.source,
            "type": sig.type,
        }
        if subject is not None:
            out["subject"] = subject
        out["time"] = sig_time if sig_time is not None else sig.time
        if content_type is not None:
            out["datacontenttype"] = content_type
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
    subject = sig.subject
    content_type = sig.datacontenttype
    data = sig.data
    cls = data.__class__
    if (
        subject is not None
        and content_type is not None
        and sig.dataschema is None
        and (cls is dict or cls is list or cls is str or cls is int)
    ):
        # The usual shape, inline (same members, same order as signal_to_dict).
        sig_id = sig._id
        sig_time = sig._time
        out = {
            "specversion": SPECVERSION,
            "id": sig_id if sig_id is not None else sig.id,
            "source": sig.source,
            "type": sig.type,
            "subject": subject,
            "time": sig_time if sig_time is not None else sig.time,
            "datacontenttype": content_type,
        }
        extensions = sig.extensions
        if extensions:
            out.update(extensions)
        out["data"] = data
    else:
        out = signal_to_dict(sig)
    try:
        return _dumps(out, default=_default)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise _not_serialisable("data", exc) from exc
        try:
            return _dumps_checked(signal_to_dict(sig))
        except TypeError as wide_exc:
            raise _not_serialisable("data", wide_exc) from wide_exc


# The hot encoder is bound as the method itself: no call in between (a few per cent of a
# 1 KB round trip). Its docstring stays the method's.
encode_json.__doc__ = Signal.to_bytes.__doc__
Signal.to_bytes = encode_json  # type: ignore[method-assign,assignment]

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


_json_decode = msgspec.json.Decoder().decode


def _parse_json(text: str | bytes | bytearray | memoryview, attribute: str, what: str) -> Any:
    """Parse JSON text into Python values, or raise the error naming ``attribute``."""
    try:
        return _json_decode(text)
    except (msgspec.DecodeError, ValueError) as exc:
        raise _fail(attribute, f"{what}: {exc}") from exc
    except RecursionError as exc:
        raise _fail(attribute, f"{what}: nested too deeply") from exc


def _decode_reference(cls: type[S], text: str | bytes | bytearray | memoryview) -> S:
    """The reference decoder: parse to a dict, then check and consume every member."""
    event = _parse_json(text, "event", "malformed JSON")
    if event.__class__ is not dict:
        raise _fail("event", f"a CloudEvent must be a JSON object, got {type(event).__name__}")
    sig = _from_event(cls, event)
    if sig.extensions:
        _learn(sig.extensions)
    return sig


def _check_size(text: object, max_size: int | None) -> None:
    """Refuse input that is not text or bytes, or larger than the limit (before parsing)."""
    if isinstance(text, str):
        # surrogatepass: a lone surrogate is measured here and refused by the parser
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    elif isinstance(text, bytes | bytearray | memoryview):
        size = len(text)
    else:
        raise _fail("event", f"expected JSON text or bytes, got {type(text).__name__}")
    limit = DEFAULT_MAX_SIZE if max_size is None else max_size
    if size > limit:
        raise _too_large(size, limit, "event")


def _reference(cls: type[S], text: str | bytes | bytearray | memoryview) -> S:
    return _decode_reference(cls, text)  # looked up per call (tests observe the fallbacks)


# -- the fast path: one C pass into an envelope struct (see the module doc) -------------------


def _canonical_time(value: object) -> bool:
    """True iff ``value`` is a ``str`` ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` naming a real UTC time."""
    if (
        value.__class__ is not str
        or len(value) != 27
        or value[26] != "Z"
        or value[4:20:3] != "--T::."
        or not value.isascii()
    ):
        return False
    try:  # by position the shape is right; fromisoformat checks digits and ranges
        _fromisoformat(value)
    except ValueError:
        return False
    return True


def _valid_traceparent(value: object) -> bool:
    """True iff ``value`` is a ``str`` W3C ``traceparent`` (lower-case hex, non-zero ids)."""
    return value.__class__ is str and _TRACEPARENT_RE.fullmatch(value) is not None


PURE_PYTHON_ENV = "JIDO_PURE_PYTHON"
"""Set this environment variable to ``1`` to use the Python checks even when the optional
native extension ``jido._speedups`` is installed."""


def _checks() -> tuple[Callable[[object], bool], Callable[[object], bool], bool]:
    """The (time, traceparent) checks of the fast path, native when available and allowed."""
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return _canonical_time, _valid_traceparent, False
    try:
        from jido import _speedups
    except ImportError:  # built only where a C compiler was present at install time
        return _canonical_time, _valid_traceparent, False
    return _speedups.canonical_time, _speedups.valid_traceparent, True


canonical_time, valid_traceparent, NATIVE = _checks()
"""``canonical_time``/``valid_traceparent``: the checks in use; ``NATIVE``: whether they are
the compiled ones of ``jido._speedups``."""

MAX_LEARNED_EXTENSIONS = 64
"""How many extension names besides the project's own the fast decoder learns (per process)."""

_KNOWN_EXTENSIONS = ("traceparent", "tracestate", "causationid")

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_ExtValue = str | int | bool
_UNSET: Any = msgspec.UNSET
_CORE_FIELDS: list[tuple[str, Any] | tuple[str, Any, Any]] = [
    ("specversion", Literal["1.0"]),
    ("id", _NonEmpty),
    ("source", _NonEmpty),
    ("type", str),
    ("subject", _NonEmpty | None, None),
    ("time", str | None, None),
    ("datacontenttype", _NonEmpty | None, None),
    ("dataschema", _NonEmpty | None, None),
]
# After the extensions, as the encoder writes them (msgspec looks for the next field first).
_DATA_FIELDS: list[tuple[str, Any, Any]] = [
    ("data", Any, msgspec.UNSET),
    ("data_base64", str | msgspec.UnsetType, msgspec.UNSET),
]

# The fast decoder of one envelope, as straight-line code (one block per extension name, so
# no loop over names runs per message). Every message it does not accept goes to the
# reference path, which names what is wrong (or, for the shapes only it normalises, accepts
# the message). It accepts nothing the reference path refuses and builds the same signal.
_FAST_DECODE = """
def fast_decode(cls, text, *, max_size=None):
    if text.__class__ is not bytes or len(text) > (
        DEFAULT_MAX_SIZE if max_size is None else max_size
    ):
        check_size(text, max_size)
    try:
        env = envelope_decode(text)
    except (DecodeError, ValueError, RecursionError):
        return reference(cls, text)
    sig_type = env.type
    if sig_type not in VALID_TYPES:
        try:
            validate_type(sig_type)
        except SignalError:
            return reference(cls, text)
    extensions = {}
@EXTENSIONS@
    sig_time = env.time
    if sig_time is not None and not canonical_time(sig_time):
        # any other shape (offsets, other precisions, lower-case t/z) by the full check
        try:
            check_time(sig_time)
        except SignalError:
            return reference(cls, text)
    data = env.data
    encoded = env.data_base64
    if encoded is not UNSET:
        if data is not UNSET:
            return reference(cls, text)
        try:
            data = b64decode(encoded, validate=True)
        except ValueError:  # binascii.Error is a ValueError
            return reference(cls, text)
    elif data is UNSET:
        data = None
    sig = cls.__new__(cls)
    sig.type = sig_type
    sig.source = env.source
    sig.data = data
    sig.subject = env.subject
    sig._id = env.id
    sig._time = sig_time
    sig._ns = 0 if sig_time is not None else time_ns()
    sig.dataschema = env.dataschema
    sig.datacontenttype = env.datacontenttype
    sig.extensions = extensions
    if cls is not Signal:
        sig._decoded()
    return sig
"""

_EXTENSION_BLOCK = """
    value = env.{attr}
    if value is not UNSET:
        extensions[{name!r}] = value
"""

_TRACEPARENT_BLOCK = """
    value = env.{attr}
    if value is not UNSET:
        if not valid_traceparent(value):
            return reference(cls, text)
        extensions[{name!r}] = value
"""


class _FastDecoder:
    """The fast structured-mode decoder for a fixed set of extension names."""

    __slots__ = ("decode", "names")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        fields = list(_CORE_FIELDS)
        rename: dict[str, str] = {}
        blocks: list[str] = []
        for index, name in enumerate(names):
            attr = f"x{index}"  # extension names may start with a digit or be keywords
            rename[attr] = name
            fields.append((attr, _ExtValue | msgspec.UnsetType, msgspec.UNSET))
            block = _TRACEPARENT_BLOCK if name == "traceparent" else _EXTENSION_BLOCK
            blocks.append(block.format(attr=attr, name=name))
        fields.extend(_DATA_FIELDS)
        envelope = msgspec.defstruct(
            "Envelope", fields, rename=rename, forbid_unknown_fields=True, gc=False
        )
        namespace: dict[str, Any] = {
            "envelope_decode": msgspec.json.Decoder(envelope).decode,
            "DecodeError": msgspec.DecodeError,
            "VALID_TYPES": _VALID_TYPES,
            "validate_type": validate_type,
            "SignalError": SignalError,
            "valid_traceparent": valid_traceparent,
            "canonical_time": canonical_time,
            "check_time": _check_time,
            "UNSET": _UNSET,
            "b64decode": base64.b64decode,
            "time_ns": time.time_ns,
            "Signal": Signal,
            "DEFAULT_MAX_SIZE": DEFAULT_MAX_SIZE,
            "check_size": _check_size,
            "reference": _reference,
        }
        # Names passed the extension naming rule ([a-z0-9]+) and are written with repr().
        exec(_FAST_DECODE.replace("@EXTENSIONS@", "".join(blocks)), namespace)
        self.decode: Callable[..., Any] = namespace["fast_decode"]
        self.decode.__doc__ = _FROM_JSON_DOC


_FROM_JSON_DOC = Signal.from_json.__doc__


def _install(decoder: _FastDecoder) -> None:
    """Make ``decoder`` the fast path: ``Signal.from_json`` *is* its function.

    Binding the generated function as the classmethod (rather than calling it from one) saves
    a call per decode, which is a few per cent of a 1 KB round trip.
    """
    global _fast
    _fast = decoder
    Signal.from_json = classmethod(decoder.decode)  # type: ignore[method-assign,assignment]


_fast: _FastDecoder
_install(_FastDecoder(_KNOWN_EXTENSIONS))


def _learn(extensions: Mapping[str, Any]) -> None:
    """Let the fast decoder accept the (already validated) extension names it lacks."""
    current = _fast
    new = [name for name in extensions if name not in current.names]
    if not new:
        return
    room = len(_KNOWN_EXTENSIONS) + MAX_LEARNED_EXTENSIONS - len(current.names)
    if room <= 0:
        return
    _install(_FastDecoder(current.names + tuple(new[:room])))


def decode_json(cls: type[S], text: str | bytes, *, max_size: int | None = None) -> S:
    """Decode CloudEvents JSON structured mode into a ``cls`` instance."""
    result: S = _fast.decode(cls, text, max_size=max_size)
    return result


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
        data = _parse_json(body, "data", f"body is not valid JSON for {content_type!r}")
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
