"""``Signal``: a CloudEvents 1.0.2 envelope, typed signals and the naming rules for types.

A signal is cheap to build: ``id`` (a UUIDv7) and ``time`` (RFC 3339, UTC) are derived lazily
from the creation timestamp taken in the constructor, so a signal that is routed in memory and
never serialised never pays for formatting them. The id is still time-ordered by creation (its
12 ``rand_a`` bits carry sub-millisecond clock precision, RFC 9562 section 6.2 method 3).

Attribute rules (checked on construction and on decoding; a violation raises
:class:`jido.SignalError` whose ``details['attribute']`` names the attribute):

* ``type``: dot-separated segments ``domain.entity.action`` — one or more segments, each
  ``[A-Za-z0-9_-]+``, at most 255 characters in all; no empty segments, no wildcards.
* ``source``: a non-empty string (a URI-reference such as ``/shop`` or ``urn:app:1``).
* ``id``: a non-empty string (default: a fresh UUIDv7).
* ``time``: an RFC 3339 timestamp string or an aware ``datetime`` (default: creation time, UTC).
* ``subject``, ``dataschema``, ``datacontenttype``: a non-empty string or ``None``.
* extensions: names are lower-case ASCII letters and digits (CloudEvents naming rule), values
  are ``str``, ``int`` or ``bool`` (an aware ``datetime`` is stored as an RFC 3339 string).
  ``traceparent`` must be a W3C trace-context header value.

Codecs live in :mod:`jido._codec`; the methods here delegate to it.
"""

from __future__ import annotations

import hashlib
import os
import re
import time as _time_mod
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from jido._errors import SignalError

__all__ = [
    "SPECVERSION",
    "Signal",
    "TypedSignal",
    "is_valid_type",
    "uuid7",
    "validate_type",
]

SPECVERSION = "1.0"
"""The CloudEvents spec version this module reads and writes."""

MAX_TYPE_LENGTH = 255

_SEGMENT_RE = re.compile(r"[A-Za-z0-9_\-]+")
_EXT_NAME_RE = re.compile(r"[a-z0-9]+")
# W3C trace context: version (not ff), trace id (not all zero), span id (not all zero), flags.
_TRACEPARENT_RE = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
)
_RFC3339_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+\-]\d{2}:\d{2})"
)

# Context attributes defined by the spec; everything else is an extension.
CORE_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"}
)
RESERVED_NAMES = CORE_ATTRIBUTES | {"data", "data_base64"}

# Type strings already validated (bounded; a miss only costs a re-check).
_VALID_TYPES: dict[str, None] = {}
_VALID_TYPES_MAX = 8192
# Extension names already validated (bounded).
_VALID_EXT_NAMES: set[str] = set()


def _fail(attribute: str, message: str, **details: Any) -> SignalError:
    return SignalError(message, details={"attribute": attribute, **details})


def validate_type(value: object) -> str:
    """Check a signal type against the naming rules and return it.

    Raises :class:`jido.SignalError` (``details['attribute'] == 'type'``) when it breaks them.
    """
    if value.__class__ is str and value in _VALID_TYPES:
        return value
    if not isinstance(value, str):
        raise _fail("type", f"signal type must be a string, got {type(value).__name__}")
    if not value:
        raise _fail("type", "signal type is empty; use dot-separated segments like 'order.created'")
    if len(value) > MAX_TYPE_LENGTH:
        raise _fail(
            "type", f"signal type is longer than {MAX_TYPE_LENGTH} characters", length=len(value)
        )
    for index, segment in enumerate(value.split(".")):
        if not segment:
            raise _fail(
                "type",
                f"signal type {value!r} has an empty segment at position {index}; "
                "use segments separated by single dots, e.g. 'order.item.created'",
                value=value,
            )
        if _SEGMENT_RE.fullmatch(segment) is None:
            raise _fail(
                "type",
                f"signal type {value!r} has an invalid segment {segment!r}; segments may use "
                "only letters, digits, '_' and '-' (wildcards belong in route patterns)",
                value=value,
            )
    if len(_VALID_TYPES) >= _VALID_TYPES_MAX:
        _VALID_TYPES.clear()
    _VALID_TYPES[value] = None
    return value


def is_valid_type(value: object) -> bool:
    """Return whether ``value`` is a valid signal type (see :func:`validate_type`)."""
    try:
        validate_type(value)
    except SignalError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# UUIDv7 and timestamps


class _RandomPool:
    """Random bytes from the OS, fetched in blocks so each id does not cost a system call."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def take8(self) -> int:
        pos = self._pos
        if pos + 8 > len(self._buf):
            self._buf = os.urandom(4096)
            pos = 0
        self._pos = pos + 8
        return int.from_bytes(self._buf[pos : pos + 8], "big")

    def reset(self) -> None:
        """Drop buffered bytes (after ``fork`` the child must not reuse the parent's)."""
        self._buf = b""
        self._pos = 0


_POOL = _RandomPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.reset)


def uuid7(ns: int | None = None) -> str:
    """Return a UUIDv7 string (RFC 9562) for the Unix time ``ns`` in nanoseconds (default: now).

    Layout: 48-bit millisecond timestamp, version 7, 12 bits of sub-millisecond precision,
    variant ``10``, 62 random bits. Ids made at different times sort by time, as strings too.
    """
    if ns is None:
        ns = _time_mod.time_ns()
    ms, rest = divmod(ns, 1_000_000)
    sub = (rest * 4096) // 1_000_000
    value = (
        ((ms & 0xFFFFFFFFFFFF) << 80)
        | (0x7 << 76)
        | (sub << 64)
        | (0x2 << 62)
        | (_POOL.take8() & 0x3FFFFFFFFFFFFFFF)
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _format_ns(ns: int) -> str:
    dt = _EPOCH + timedelta(microseconds=ns // 1000)
    return dt.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def format_time(value: datetime) -> str:
    """Format an aware ``datetime`` as an RFC 3339 string in UTC (``...Z``)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise _fail("time", "signal time must be timezone-aware (e.g. datetime.now(UTC))")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp string into an aware ``datetime``."""
    if _RFC3339_RE.fullmatch(value) is None:
        raise _fail(
            "time",
            f"signal time {value!r} is not an RFC 3339 timestamp such as '2024-05-01T12:00:00Z'",
            value=value,
        )
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass  # lower-case 't'/'z' or more than 6 fractional digits: normalise below
    text = value.upper()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    head, _, tail = text.partition(".")
    if tail:  # Python accepts at most 6 fractional digits; RFC 3339 allows more.
        digits = len(tail) - len(tail.lstrip("0123456789"))
        text = f"{head}.{tail[: min(digits, 6)]}{tail[digits:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise _fail("time", f"signal time {value!r} is out of range: {exc}", value=value) from exc


def _check_time(value: object) -> str:
    """Return ``value`` as a checked RFC 3339 string (an aware ``datetime`` is formatted)."""
    if isinstance(value, str):
        if _RFC3339_RE.fullmatch(value) is not None:
            try:  # the usual case: the regex checks the shape, fromisoformat the ranges
                _fromisoformat(value)
                return value
            except ValueError:
                pass
        parse_time(value)  # normalises what fromisoformat refuses, or raises naming 'time'
        return value
    if isinstance(value, datetime):
        return format_time(value)
    raise _fail("time", f"signal time must be an RFC 3339 string, got {type(value).__name__}")


_fromisoformat = datetime.fromisoformat


def _check_optional_str(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise _fail(name, f"signal {name} must be a non-empty string or None, got {value!r}")


def check_extensions(extensions: dict[str, Any]) -> None:
    """Validate extension names and values in place (datetimes become RFC 3339 strings)."""
    for name, value in extensions.items():
        if value.__class__ is str and name in _VALID_EXT_NAMES:
            if name == "traceparent" and _TRACEPARENT_RE.fullmatch(value) is None:
                _check_traceparent(value)  # raises
            continue
        if not isinstance(name, str):
            raise _fail(repr(name), f"extension names must be strings, got {type(name).__name__}")
        if _EXT_NAME_RE.fullmatch(name) is None:
            raise _fail(
                name,
                f"extension name {name!r} is invalid: CloudEvents attribute names use only "
                "lower-case ASCII letters and digits",
            )
        if name in RESERVED_NAMES:
            raise _fail(name, f"{name!r} is a core attribute, not an extension")
        if isinstance(value, datetime):
            extensions[name] = format_time(value)
            continue
        if not isinstance(value, str | int | bool):
            raise _fail(
                name,
                f"extension {name!r} must be a string, integer or boolean, "
                f"got {type(value).__name__}",
            )
        if name == "traceparent":
            _check_traceparent(value)
        if len(_VALID_EXT_NAMES) < 1024:
            _VALID_EXT_NAMES.add(name)


def _check_traceparent(value: object) -> None:
    if not isinstance(value, str) or _TRACEPARENT_RE.fullmatch(value) is None:
        raise _fail(
            "traceparent",
            f"traceparent {value!r} is not a W3C trace context value "
            "('00-<32 hex trace id>-<16 hex span id>-<2 hex flags>')",
        )


_HEX32_RE = re.compile(r"[0-9a-f]{32}")


def _trace_id_of(sig_id: str) -> str:
    """A valid W3C trace id for a signal without trace context, derived from its id."""
    text = sig_id.replace("-", "").lower()
    if _HEX32_RE.fullmatch(text) is not None and text != _ZERO_TRACE:
        return text
    digest = hashlib.blake2b(sig_id.encode(), digest_size=16).hexdigest()
    return digest if digest != _ZERO_TRACE else "0" * 31 + "1"


_ZERO_TRACE = "0" * 32

# ---------------------------------------------------------------------------------------------
# Signal


class Signal:
    """A CloudEvents 1.0.2 event: what happened (``type``), where (``source``) and its ``data``.

    ``Signal(type="order.item.created", source="/shop", data={...})``. Optional ``subject``,
    ``id`` (default: a UUIDv7), ``time`` (default: now, RFC 3339 UTC), ``dataschema``,
    ``datacontenttype`` (default ``application/json``) and extension attributes as keyword
    arguments (``traceparent=...``, ``causationid=...``, any lower-case alphanumeric name).

    Treat a signal as immutable once built. Serialise with :meth:`to_json` / :meth:`to_bytes`
    (CloudEvents JSON structured mode) or :meth:`to_binary` (``ce-*`` headers + body).
    """

    __slots__ = (
        "_id",
        "_ns",
        "_time",
        "data",
        "datacontenttype",
        "dataschema",
        "extensions",
        "source",
        "subject",
        "type",
    )

    specversion: ClassVar[str] = SPECVERSION
    """Always ``"1.0"``."""

    type: str
    """The event type, e.g. ``order.item.created`` (see the naming rules in the module doc)."""
    source: str
    """Where the event happened (URI-reference)."""
    data: Any
    """The payload: any JSON value, ``bytes`` (sent as ``data_base64``), or a pydantic model."""
    subject: str | None
    """The subject of the event in the context of the source, if any."""
    dataschema: str | None
    """URI of the schema ``data`` adheres to, if any."""
    datacontenttype: str | None
    """Media type of ``data`` (default ``application/json``)."""
    extensions: dict[str, Any]
    """Extension attributes by name (``traceparent``, ``causationid``, ...)."""

    def __init__(
        self,
        type: str,
        source: str,
        data: Any = None,
        subject: str | None = None,
        id: str | None = None,
        time: str | datetime | None = None,
        dataschema: str | None = None,
        datacontenttype: str | None = "application/json",
        **extensions: Any,
    ) -> None:
        if type.__class__ is not str or type not in _VALID_TYPES:
            validate_type(type)
        if source.__class__ is not str or not source:
            raise _fail("source", f"signal source must be a non-empty string, got {source!r}")
        if id is not None and (id.__class__ is not str or not id):
            raise _fail("id", f"signal id must be a non-empty string, got {id!r}")
        if time is not None:
            time = _check_time(time)
        if subject is not None:
            _check_optional_str("subject", subject)
        if dataschema is not None:
            _check_optional_str("dataschema", dataschema)
        if datacontenttype != "application/json":
            _check_optional_str("datacontenttype", datacontenttype)
        if extensions:
            check_extensions(extensions)
        self.type = type
        self.source = source
        self.data = data
        self.subject = subject
        self._id = id
        self._time = time
        self._ns = _time_mod.time_ns()
        self.dataschema = dataschema
        self.datacontenttype = datacontenttype
        self.extensions = extensions

    def __copy__(self) -> Self:
        """A shallow copy with the same id, time, data and extensions (no re-validation)."""
        cls = self.__class__
        clone = cls.__new__(cls)
        clone.type = self.type
        clone.source = self.source
        clone.data = self.data
        clone.subject = self.subject
        clone._id = self.id  # fixed now: a lazily made id would differ between the copies
        clone._time = self.time
        clone._ns = self._ns
        clone.dataschema = self.dataschema
        clone.datacontenttype = self.datacontenttype
        clone.extensions = self.extensions
        state = getattr(self, "__dict__", None)
        if state:
            clone.__dict__.update(state)
        return clone

    # -- lazily derived attributes -------------------------------------------------------------

    @property
    def id(self) -> str:
        """The event id (a UUIDv7 made from the creation time unless one was given)."""
        value = self._id
        if value is None:
            value = self._id = uuid7(self._ns)
        return value

    @property
    def time(self) -> str:
        """The event time as an RFC 3339 string (creation time in UTC unless one was given)."""
        value = self._time
        if value is None:
            value = self._time = _format_ns(self._ns)
        return value

    @property
    def timestamp(self) -> datetime:
        """``time`` as an aware ``datetime``."""
        if self._time is None:
            return _EPOCH + timedelta(microseconds=self._ns // 1000)
        return parse_time(self._time)

    @property
    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` extension, if any."""
        value = self.extensions.get("traceparent")
        return value if isinstance(value, str) else None

    @property
    def tracestate(self) -> str | None:
        """The W3C ``tracestate`` extension, if any."""
        value = self.extensions.get("tracestate")
        return value if isinstance(value, str) else None

    @property
    def causation_id(self) -> str | None:
        """Id of the signal that caused this one (extension ``causationid``), if any."""
        value = self.extensions.get("causationid")
        return value if isinstance(value, str) else None

    @property
    def trace_id(self) -> str:
        """The trace this signal belongs to (32 lower-case hex digits, never all zero).

        From ``traceparent`` when the signal has one; else derived from its own id: the id
        itself when it is a UUID (as the default UUIDv7 ids are), a hash of it otherwise.
        """
        parent = self.traceparent
        if parent is not None:
            return parent[3:35]
        return _trace_id_of(self.id)

    # -- causality -----------------------------------------------------------------------------

    def caused(
        self,
        type: str,
        source: str | None = None,
        data: Any = None,
        **attributes: Any,
    ) -> Signal:
        """Make a follow-up signal caused by this one.

        The new signal's ``causationid`` is this signal's id and it carries this signal's trace
        context: ``traceparent`` has the same trace id (or, when this signal has none, a trace
        id derived from this signal's id, so all its effects share one trace) and a new span id;
        ``tracestate`` is copied. ``source`` defaults to this signal's source. Other keyword
        arguments are passed to :class:`Signal` (``subject``, extensions, ...).
        """
        parent = self.traceparent
        flags = parent[-2:] if parent is not None else "01"
        span = f"{_POOL.take8() | 1:016x}"
        ext: dict[str, Any] = {
            "causationid": self.id,
            "traceparent": f"00-{self.trace_id}-{span}-{flags}",
        }
        state = self.tracestate
        if state is not None:
            ext["tracestate"] = state
        ext.update(attributes)
        return Signal(type, source if source is not None else self.source, data, **ext)

    # -- codecs (implemented in jido._codec) ----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the CloudEvents JSON structured form as a dict (``data_base64`` for bytes)."""
        return _codec.signal_to_dict(self)

    @classmethod
    def from_dict(cls, event: Mapping[str, Any]) -> Self:
        """Build a signal from the CloudEvents JSON structured form (see :meth:`to_dict`)."""
        return _codec.signal_from_dict(cls, event)

    def to_json(self) -> str:
        """Encode in CloudEvents JSON structured mode as text."""
        return _codec.encode_json(self).decode()

    def to_bytes(self) -> bytes:
        """Encode in CloudEvents JSON structured mode as UTF-8 bytes."""
        # Replaced at import by ``_codec.encode_json`` itself; this body is what it does.
        return _codec.encode_json(self)

    @classmethod
    def from_json(cls, text: str | bytes, *, max_size: int | None = None) -> Self:
        """Decode CloudEvents JSON structured mode (``str`` or ``bytes``).

        ``max_size`` (bytes; default :data:`jido._codec.DEFAULT_MAX_SIZE`) rejects larger input
        with :class:`jido.PayloadTooLargeError` before parsing.
        """
        # Replaced at import by the codec's generated fast decoder itself (``_codec._install``);
        # this body is what that function does.
        return _codec.decode_json(cls, text, max_size=max_size)

    def to_binary(self) -> tuple[dict[str, str], bytes]:
        """Encode in binary mode: ``ce-<attr>`` headers (``content-type`` for the media type)."""
        return _codec.encode_binary(self)

    @classmethod
    def from_binary(
        cls, headers: Mapping[str, str], body: bytes | str | None, *, max_size: int | None = None
    ) -> Self:
        """Decode binary mode: ``ce-*`` headers (case-insensitive) and the body as ``data``."""
        return _codec.decode_binary(cls, headers, body, max_size=max_size)

    # -- misc --------------------------------------------------------------------------------

    def _decoded(self) -> None:
        """Hook run after a codec built this signal (typed signals validate here)."""

    def _key(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.type,
            self.source,
            self.subject,
            self.time,
            self.dataschema,
            self.datacontenttype,
            self.extensions,
            self.data,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Signal):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(type={self.type!r}, source={self.source!r}, "
            f"id={self.id!r}, data={self.data!r})"
        )


_TYPED_CLASSES: dict[str, type[TypedSignal]] = {}


class TypedSignal(Signal):
    """Base for signals with a fixed ``type`` and a pydantic model for ``data``.

    Declare the type and the model on the subclass; construction validates ``data`` (a dict or
    a model instance) and stores the model instance::

        class OrderCreated(TypedSignal):
            type = "order.created"

            class Data(BaseModel):
                order_id: str
                total: int

        sig = OrderCreated(source="/shop", data={"order_id": "o1", "total": 5})
        sig.data.total  # 5

    The model may also be given as ``data_model = SomeModel``. ``from_json``/``from_dict`` on the
    subclass check the type and validate the data. Invalid data raises :class:`jido.SignalError`
    with ``details['attribute'] == 'data'`` and the pydantic errors in ``details['errors']``.
    """

    signal_type: ClassVar[str] = ""
    """The fixed type of this signal class."""
    data_model: ClassVar[type[BaseModel] | None] = None
    """The pydantic model ``data`` is validated against."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("type")
        if declared is not None:
            if not isinstance(declared, str):
                raise SignalError(
                    f"{cls.__name__}.type must be a string",
                    details={"attribute": "type", "class": cls.__name__},
                )
            validate_type(declared)
            cls.signal_type = declared
            # The class attribute would shadow the instance slot; keep it as signal_type.
            delattr(cls, "type")
        model = cls.__dict__.get("data_model") or cls.__dict__.get("Data")
        if isinstance(model, type) and issubclass(model, BaseModel):
            cls.data_model = model
        if declared is not None:
            _TYPED_CLASSES[cls.signal_type] = cls  # the latest definition of a type wins

    @staticmethod
    def class_for(signal_type: str) -> type[TypedSignal] | None:
        """The typed signal class declared for ``signal_type``, if any."""
        return _TYPED_CLASSES.get(signal_type)

    @staticmethod
    def upgrade(signal: Signal) -> Signal:
        """Return ``signal`` as an instance of the typed class declared for its type.

        The data is validated against that class's model (:class:`jido.SignalError` if it does
        not fit); a signal whose type has no typed class, or that is already typed, is
        returned unchanged.
        """
        cls = _TYPED_CLASSES.get(signal.type)
        if cls is None or isinstance(signal, cls):
            return signal
        typed = cls.__new__(cls)
        typed.type = signal.type
        typed.source = signal.source
        typed.data = signal.data
        typed.subject = signal.subject
        typed._id = signal.id
        typed._time = signal.time
        typed._ns = signal._ns
        typed.dataschema = signal.dataschema
        typed.datacontenttype = signal.datacontenttype
        typed.extensions = dict(signal.extensions)
        typed._decoded()
        return typed

    def __init__(
        self,
        source: str,
        data: Any = None,
        subject: str | None = None,
        id: str | None = None,
        time: str | datetime | None = None,
        dataschema: str | None = None,
        datacontenttype: str | None = "application/json",
        *,
        type: str | None = None,
        **extensions: Any,
    ) -> None:
        cls = self.__class__
        if not cls.signal_type:
            raise SignalError(
                f"{cls.__name__} declares no type; set `type = 'domain.entity.action'` on it",
                details={"attribute": "type", "class": cls.__name__},
            )
        if type is not None and type != cls.signal_type:
            raise _fail(
                "type",
                f"{cls.__name__} has type {cls.signal_type!r}, got {type!r}",
                expected=cls.signal_type,
                value=type,
            )
        data = cls._validate_data(data)
        super().__init__(
            cls.signal_type,
            source,
            data,
            subject,
            id,
            time,
            dataschema,
            datacontenttype,
            **extensions,
        )

    def _decoded(self) -> None:
        cls = self.__class__
        if self.type != cls.signal_type:
            raise _fail(
                "type",
                f"{cls.__name__} expects type {cls.signal_type!r}, got {self.type!r}",
                expected=cls.signal_type,
                value=self.type,
            )
        self.data = cls._validate_data(self.data)

    @classmethod
    def _validate_data(cls, data: Any) -> Any:
        """Validate ``data`` against ``data_model`` (``None`` counts as ``{}``)."""
        model = cls.data_model
        if model is None or isinstance(data, model):
            return data
        try:
            return model.model_validate({} if data is None else data)
        except PydanticValidationError as exc:
            raise SignalError(
                f"{cls.__name__} data does not match {model.__name__}: "
                f"{exc.error_count()} error(s); fix the data",
                details={
                    "attribute": "data",
                    "errors": exc.errors(include_url=False, include_context=False),
                },
                cause=exc,
            ) from None


# Imported last: the codec module imports names defined above.
from jido import _codec  # noqa: E402
