"""The fast structured-mode decoder agrees with the reference decoder on every input.

``Signal.from_json`` first tries one C pass into an envelope struct (``jido._codec``); what it
does not accept goes to the reference path (parse to a dict, check every member). These tests
hold the fast path to the reference: same signal or same typed error, on generated messages
valid and invalid, and on the edge cases of JSON itself.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from jido import PayloadTooLargeError, Signal, SignalError, TypedSignal, _codec

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def _keep_fast_decoder() -> Iterator[None]:
    """Tests that teach the fast decoder names leave the process's decoder as it was."""
    saved = _codec._fast
    yield
    _codec._install(saved)


def fast_only(cls: type[Signal], text: str | bytes) -> Signal | None:
    """The fast path alone: ``None`` where it hands the message to the reference path."""
    original = _codec._decode_reference
    _codec._decode_reference = lambda cls, text: None  # type: ignore[assignment,return-value]
    try:
        sig: Signal | None = _codec._fast.decode(cls, text)
    finally:
        _codec._decode_reference = original
    return sig


def state(sig: Signal) -> tuple[Any, ...]:
    """Everything a decoded signal holds (``time`` as received: absent means "now")."""
    return (
        type(sig).__name__,
        sig._id,
        sig.type,
        sig.source,
        sig.subject,
        sig._time,
        sig._ns == 0,
        sig.dataschema,
        sig.datacontenttype,
        sig.extensions,
        sig.data,
        type(sig.data).__name__,
    )


def outcome(decode: Any, text: str | bytes) -> tuple[Any, ...]:
    """What decoding gives: the signal's state, or the error's type and details."""
    try:
        sig = decode(Signal, text)
    except SignalError as exc:
        return ("error", type(exc).__name__, exc.details.get("attribute"), exc.message)
    return ("ok", state(sig))


def assert_agree(text: str | bytes) -> tuple[Any, ...]:
    """``from_json`` (fast path first) and the reference path give the same outcome."""
    reference = outcome(_codec._decode_reference, text)
    assert outcome(_codec.decode_json, text) == reference
    fast = fast_only(Signal, text)
    if fast is not None:  # what the fast path accepts, the reference accepts identically
        assert reference == ("ok", state(fast))
    return reference


def wire(**members: Any) -> bytes:
    event = {"specversion": "1.0", "id": "1", "source": "/s", "type": "a.b", **members}
    return json.dumps({k: v for k, v in event.items() if v is not _DROP}).encode()


_DROP: Any = object()


# -- the fast path is taken, and builds what the reference builds ---------------------------


def test_fast_path_decodes_a_typical_signal() -> None:
    sig = Signal(
        type="shop.order.created",
        source="/shop",
        subject="o-1",
        data={"n": 1, "items": [{"sku": "a", "qty": 2}], "note": "ü"},
        traceparent=TRACEPARENT,
        causationid="c-1",
    )
    text = sig.to_bytes()
    fast = fast_only(Signal, text)
    assert fast is not None
    assert fast == sig
    assert fast.extensions == {"traceparent": TRACEPARENT, "causationid": "c-1"}
    assert_agree(text)
    assert_agree(sig.to_json())
    assert_agree(bytearray(text))  # type: ignore[arg-type]
    assert_agree(memoryview(text))  # type: ignore[arg-type]


def test_unknown_extension_is_learned_after_the_reference_path_accepts_it() -> None:
    text = wire(zzlearnme="v", data={"x": 1})
    assert fast_only(Signal, text) is None  # not known yet: reference path
    sig = Signal.from_json(text)
    assert sig.extensions == {"zzlearnme": "v"}
    learned = fast_only(Signal, text)
    assert learned is not None and state(learned) == state(sig)
    # A learned name is optional: messages without it still take the fast path.
    assert fast_only(Signal, wire(data=1)) is not None


def test_invalid_extension_names_are_never_learned() -> None:
    for text in (wire(BAD="x"), wire(**{"a-b": "x"}), wire(e={"x": 1})):
        with pytest.raises(SignalError):
            Signal.from_json(text)
    assert not {"BAD", "a-b", "e"} & set(_codec._fast.names)


def test_learning_is_bounded_and_unlearned_names_still_decode() -> None:
    limit = len(_codec._KNOWN_EXTENSIONS) + _codec.MAX_LEARNED_EXTENSIONS
    for index in range(_codec.MAX_LEARNED_EXTENSIONS + 10):
        name = f"bound{index}"
        sig = Signal.from_json(wire(**{name: index}))
        assert sig.extensions == {name: index}
    assert len(_codec._fast.names) <= limit
    late = wire(**{f"bound{_codec.MAX_LEARNED_EXTENSIONS + 9}": 1, "traceparent": TRACEPARENT})
    assert_agree(late)


def test_typed_signals_take_the_fast_path_and_validate_data() -> None:
    class FastData(BaseModel):
        order_id: str
        total: int

    class FastOrder(TypedSignal):
        type = "fast.order.created"
        Data = FastData

    good = FastOrder(source="/s", data={"order_id": "o", "total": 3}).to_bytes()
    decoded = FastOrder.from_json(good)
    assert isinstance(decoded, FastOrder)
    assert decoded.data == FastData(order_id="o", total=3)
    assert fast_only(FastOrder, good) is not None
    bad = Signal(type="fast.order.created", source="/s", data={"order_id": "o"}).to_bytes()
    with pytest.raises(SignalError) as exc:
        FastOrder.from_json(bad)
    assert exc.value.details["attribute"] == "data"
    with pytest.raises(SignalError) as exc2:
        FastOrder.from_json(Signal(type="other.type", source="/s").to_bytes())
    assert exc2.value.details["attribute"] == "type"


def test_data_base64_and_missing_data() -> None:
    blob = base64.b64encode(b"\x00\xffraw").decode()
    text = wire(data_base64=blob, datacontenttype="application/octet-stream")
    assert assert_agree(text)[0] == "ok"
    assert Signal.from_json(text).data == b"\x00\xffraw"
    assert fast_only(Signal, text) is not None
    assert Signal.from_json(wire()).data is None
    assert Signal.from_json(wire(data=None)).data is None
    for bad in (wire(data=1, data_base64="AA=="), wire(data_base64="!!"), wire(data_base64=5)):
        assert assert_agree(bad)[2] == "data_base64"


def test_time_without_a_time_attribute_gets_a_creation_stamp() -> None:
    sig = Signal.from_json(wire())
    assert sig._time is None and sig._ns > 0
    assert sig.time.endswith("Z")


# -- bad input: the same typed error either way ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "attribute"),
    [
        (b"{not json", "event"),
        (b"[1,2]", "event"),
        (b'"just a string"', "event"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a"} trailing', "event"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data":"\xff"}', "event"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data":"\\ud800"}', "event"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data":"\\udc00"}', "event"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data":1e400}', "event"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data":[1,]}', "event"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data":01}', "event"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data":NaN}', "event"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data":' + b"[" * 5000, "event"),
        (
            b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data":'
            + b"[" * 3000
            + b"]" * 3000
            + b"}",
            "event",
        ),
        (wire(specversion=_DROP), "specversion"),
        (wire(specversion="0.3"), "specversion"),
        (wire(specversion=1.0), "specversion"),
        (wire(id=""), "id"),
        (wire(id=1), "id"),
        (wire(id=_DROP), "id"),
        (wire(source=""), "source"),
        (wire(source=None), "source"),
        (wire(type="a..b"), "type"),
        (wire(type="a.*"), "type"),
        (wire(type="x" * 256), "type"),
        (wire(type=["a"]), "type"),
        (wire(time="2024-02-30T12:00:00.000000Z"), "time"),
        (wire(time="2024-01-01T25:00:00.000000Z"), "time"),
        (wire(time="2024-01-01 12:00:00.000000Z"), "time"),
        (wire(time="2024-01-01T12:00:00"), "time"),
        (wire(time=5), "time"),
        (wire(subject=""), "subject"),
        (wire(subject=3), "subject"),
        (wire(dataschema=""), "dataschema"),
        (wire(datacontenttype=[]), "datacontenttype"),
        (wire(traceparent="00-zz"), "traceparent"),
        (
            wire(traceparent="ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "traceparent",
        ),
        (wire(traceparent="00-" + "0" * 32 + "-00f067aa0ba902b7-01"), "traceparent"),
        (wire(traceparent=TRACEPARENT.upper()), "traceparent"),
        (wire(traceparent=TRACEPARENT + "\n"), "traceparent"),
        (wire(traceparent=1), "traceparent"),
        (wire(tracestate=1.5), "tracestate"),
        (wire(causationid=None), "causationid"),
        (wire(causationid={"a": 1}), "causationid"),
        (wire(Tenant="x"), "Tenant"),
        (wire(data_base64=None), "data_base64"),
    ],
)
def test_bad_input_gives_the_reference_error(text: bytes, attribute: str) -> None:
    result = assert_agree(text)
    assert result[0] == "error" and result[1] == "SignalError"
    assert result[2] == attribute


def test_lone_surrogate_in_text_input() -> None:
    text = '{"specversion":"1.0","id":"1","source":"/s","type":"a","data":"\ud800"}'
    with pytest.raises(SignalError) as exc:
        Signal.from_json(text)
    assert exc.value.details["attribute"] == "event"


def test_size_limit_comes_first() -> None:
    text = wire(data="x" * 2000)
    with pytest.raises(PayloadTooLargeError) as exc:
        Signal.from_json(text, max_size=100)
    assert exc.value.details == {"attribute": "event", "size": len(text), "limit": 100}
    with pytest.raises(PayloadTooLargeError):
        Signal.from_json(b"{not json" + b" " * 200, max_size=100)


# -- JSON edge cases -----------------------------------------------------------------------


def test_duplicate_members_last_one_wins_on_both_paths() -> None:
    text = b'{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"a","data":{"k":1,"k":2}}'
    sig = Signal.from_json(text)
    assert sig.id == "2" and sig.data == {"k": 2}
    assert_agree(text)


def test_escaped_member_names_are_recognised() -> None:
    text = b'{"specversion":"1.0","\\u0069d":"1","source":"/s","type":"a"}'
    assert Signal.from_json(text).id == "1"
    assert_agree(text)


def test_integers_beyond_64_bits_are_exact_and_re_encode() -> None:
    big = 123456789012345678901234567890
    text = wire(data={"n": big, "l": [-big, 2**64, -(2**63) - 1], "ok": 2**64 - 1})
    sig = Signal.from_json(text)
    assert sig.data == {"n": big, "l": [-big, 2**64, -(2**63) - 1], "ok": 2**64 - 1}
    assert type(sig.data["n"]) is int
    assert_agree(text)
    again = Signal.from_json(sig.to_bytes())
    assert again == sig
    assert json.loads(sig.to_json())["data"]["n"] == big

    class Big(BaseModel):
        n: int

    modelled = Signal(type="a", source="/s", data=Big(n=big))
    assert Signal.from_json(modelled.to_bytes()).data == {"n": big}
    headers, body = sig.to_binary()
    assert Signal.from_binary(headers, body).data == sig.data


def test_unserialisable_data_with_a_big_integer_is_still_refused() -> None:
    sig = Signal(type="a", source="/s", data={"n": 2**70, "x": object()})
    with pytest.raises(SignalError) as exc:
        sig.to_bytes()
    assert exc.value.details["attribute"] == "data"
    keys = Signal(type="a", source="/s", data={"n": 2**70, 1: "non-string key"})
    with pytest.raises(SignalError):
        keys.to_bytes()


def test_binary_body_that_is_not_json() -> None:
    headers, _ = Signal(type="a", source="/s", data={"x": 1}).to_binary()
    with pytest.raises(SignalError) as exc:
        Signal.from_binary(headers, b"{nope")
    assert exc.value.details["attribute"] == "data"
    with pytest.raises(SignalError):
        Signal.from_binary(headers, b"[" * 5000)


# -- properties ------------------------------------------------------------------------------

segment = st.from_regex(r"[A-Za-z0-9_\-]{1,6}", fullmatch=True)
types = st.lists(segment, min_size=1, max_size=4).map(".".join)
bad_types = st.sampled_from(["", "a..b", "a.", ".a", "a b", "a.*", "é", "x" * 256])
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
canonical_times = st.datetimes(
    timezones=st.none(),
).map(lambda d: d.isoformat(timespec="microseconds") + "Z")
other_times = st.sampled_from(
    [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.5z",
        "2024-05-01t12:00:00+02:00",
        "2024-05-01T12:00:00.123456789Z",
        "2024-05-01T12:00:00.123456+00:00",
        "2024-13-01T12:00:00.000000Z",
        "2024-05-01T12:00:60.000000Z",
        "2024-05-01T12:00:00.000000z",
        "2024-05-01X12:00:00.000000Z",
        "x",
        "",
    ]
)
# Near-canonical strings: the canonical shape with random characters swapped in.
mutated_times = st.tuples(
    canonical_times,
    st.lists(
        st.tuples(st.integers(0, 26), st.sampled_from(list("0123456789-T:.Z zt+٣"))), max_size=3
    ),
).map(lambda tm: "".join(_apply(tm[0], tm[1])))


def _apply(text: str, edits: list[tuple[int, str]]) -> list[str]:
    chars = list(text)
    for index, char in edits:
        if index < len(chars):
            chars[index] = char
    return chars


ext_names = st.sampled_from(
    ["traceparent", "tracestate", "causationid", "tenant", "n1", "flag", "BAD", "a-b", "data"]
)
ext_values = (
    st.text(max_size=8)
    | st.integers()
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.just(TRACEPARENT)
    | st.just({"nested": 1})
)
optional_str = st.sampled_from([_DROP, None, "", "x", 3])


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """A CloudEvent dict, mostly valid, with an invalid member now and then."""
    event: dict[str, Any] = {
        "specversion": draw(st.sampled_from(["1.0"] * 8 + ["0.3", 1, _DROP])),
        "id": draw(st.sampled_from(["id-1"] * 6 + ["", 7, _DROP]) | st.text(max_size=5)),
        "source": draw(st.sampled_from(["/s"] * 6 + ["", None, _DROP])),
        "type": draw(types | bad_types | st.just(_DROP)),
        "subject": draw(optional_str),
        "time": draw(
            st.just(_DROP) | canonical_times | mutated_times | other_times | st.just(None)
        ),
        "datacontenttype": draw(optional_str | st.just("application/json")),
        "dataschema": draw(optional_str),
    }
    event.update(draw(st.dictionaries(ext_names, ext_values, max_size=3)))
    choice = draw(st.integers(0, 5))
    if choice <= 3:
        event["data"] = draw(json_values)
    elif choice == 4:
        event["data_base64"] = draw(
            st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode()) | st.just("!")
        )
    return {k: v for k, v in event.items() if v is not _DROP}


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(event=messages(), as_text=st.booleans())
def test_fast_and_reference_paths_agree(event: dict[str, Any], as_text: bool) -> None:
    text = json.dumps(event, ensure_ascii=False)
    assert_agree(text if as_text else text.encode())
    assert_agree(text)  # twice: the first may have taught the fast decoder a name


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=mutated_times | canonical_times)
def test_fast_time_check_accepts_only_what_the_reference_accepts(value: str) -> None:
    assert_agree(wire(time=value))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values)
def test_data_decodes_like_the_standard_library(data: Any) -> None:
    """Data values are exact JSON values (integers of any size, floats round-trip)."""
    text = orjson.dumps({"specversion": "1.0", "id": "1", "source": "/s", "type": "a"})
    text = text[:-1] + b',"data":' + json.dumps(data).encode() + b"}"
    assert Signal.from_json(text).data == json.loads(json.dumps(data))


def test_the_bound_codec_methods_keep_their_documentation() -> None:
    # from_json and to_bytes are the codec's functions themselves, bound as the methods.
    assert Signal.from_json.__func__ is _codec._fast.decode  # type: ignore[attr-defined]
    assert Signal.to_bytes is _codec.encode_json
    assert "max_size" in (Signal.from_json.__doc__ or "")
    assert "structured mode" in (Signal.to_bytes.__doc__ or "")
