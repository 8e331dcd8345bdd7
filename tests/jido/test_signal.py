"""Signal: construction rules, UUIDv7, codecs, causality, typed signals, bad input."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import jido
from jido import PayloadTooLargeError, Signal, SignalError, TypedSignal
from jido._signal import is_valid_type, parse_time, uuid7

UUID7_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def attr_of(exc: pytest.ExceptionInfo[SignalError]) -> Any:
    return exc.value.details.get("attribute")


# -- construction --------------------------------------------------------------------------


def test_defaults() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    sig = Signal(type="order.item.created", source="/shop", data={"n": 1})
    assert UUID7_RE.fullmatch(sig.id)
    assert sig.specversion == "1.0"
    assert sig.datacontenttype == "application/json"
    assert sig.subject is None and sig.dataschema is None
    assert sig.extensions == {}
    assert sig.time.endswith("Z")
    assert before <= sig.timestamp <= datetime.now(UTC) + timedelta(seconds=1)
    assert parse_time(sig.time) == sig.timestamp
    assert sig.id == sig.id  # stable once derived


def test_uuid7_layout_and_time_order() -> None:
    ns = time.time_ns()
    ids = [uuid7(ns + i * 1_000_000) for i in range(50)]
    assert all(UUID7_RE.fullmatch(i) for i in ids)
    assert ids == sorted(ids)
    ms = int(ids[0].replace("-", "")[:12], 16)
    assert ms == ns // 1_000_000
    # signals made one after another get ids in creation order even if read in reverse
    sigs = []
    for _ in range(20):
        sigs.append(Signal(type="a.b", source="/s"))
        time.sleep(0.0005)
    got = [s.id for s in reversed(sigs)]
    assert list(reversed(got)) == sorted(got)
    assert len(set(got)) == 20


def test_explicit_attributes_and_extensions() -> None:
    sig = Signal(
        type="a.b",
        source="urn:x",
        subject="s1",
        id="my-id",
        time="2024-05-01T12:00:00.5+02:00",
        dataschema="https://example.com/s.json",
        datacontenttype="text/plain",
        data="hi",
        tenant="t1",
        attempt=3,
        flag=True,
    )
    assert sig.id == "my-id"
    assert sig.time == "2024-05-01T12:00:00.5+02:00"
    assert sig.timestamp == datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)
    assert sig.extensions == {"tenant": "t1", "attempt": 3, "flag": True}


def test_time_from_datetime_is_normalised_to_utc() -> None:
    dt = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    assert Signal(type="a", source="/s", time=dt).time == "2024-01-02T02:04:05.000000Z"
    with pytest.raises(SignalError) as exc:
        Signal(type="a", source="/s", time=datetime(2024, 1, 1))  # naive
    assert attr_of(exc) == "time"


@pytest.mark.parametrize(
    "bad",
    ["", ".a", "a.", "a..b", "a.*", "a.**", "a b", "a/b", "ä.b", "x" * 256, 5, None],
)
def test_bad_type_is_rejected_naming_type(bad: Any) -> None:
    with pytest.raises(SignalError) as exc:
        Signal(type=bad, source="/s")
    assert attr_of(exc) == "type"
    assert not is_valid_type(bad)


@pytest.mark.parametrize("good", ["a", "order.created", "com.example.some_event-v2", "A.B.C"])
def test_good_types(good: str) -> None:
    assert Signal(type=good, source="/s").type == good


@pytest.mark.parametrize(
    ("kwargs", "attribute"),
    [
        ({"source": ""}, "source"),
        ({"source": 3}, "source"),
        ({"id": ""}, "id"),
        ({"id": 7}, "id"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2024-13-01T00:00:00Z"}, "time"),
        ({"time": "2024-01-01"}, "time"),
        ({"subject": ""}, "subject"),
        ({"dataschema": 1}, "dataschema"),
        ({"datacontenttype": ""}, "datacontenttype"),
        ({"Bad": "x"}, "Bad"),
        ({"under_score": "x"}, "under_score"),
        ({"ext": [1]}, "ext"),
        ({"ext": None}, "ext"),
        ({"traceparent": "nope"}, "traceparent"),
        ({"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"}, "traceparent"),
        ({"traceparent": "00-" + "1" * 32 + "-" + "0" * 16 + "-01"}, "traceparent"),
        ({"traceparent": "ff-" + "1" * 32 + "-" + "1" * 16 + "-01"}, "traceparent"),
        ({"traceparent": "00-" + "A" * 32 + "-" + "1" * 16 + "-01"}, "traceparent"),
    ],
)
def test_bad_attributes_name_the_attribute(kwargs: dict[str, Any], attribute: str) -> None:
    base: dict[str, Any] = {"type": "a.b", "source": "/s"}
    base.update(kwargs)
    with pytest.raises(SignalError) as exc:
        Signal(**base)
    assert attr_of(exc) == attribute
    assert isinstance(exc.value, jido.ValidationError)


def test_reserved_extension_name_rejected() -> None:
    with pytest.raises(SignalError) as exc:
        Signal.from_dict({"specversion": "1.0", "id": "1", "source": "/s", "type": "a", "Data": 1})
    assert attr_of(exc) == "Data"


# -- structured JSON ------------------------------------------------------------------------


def test_json_round_trip_is_exact() -> None:
    sig = Signal(
        type="order.item.created",
        source="/shop",
        subject="item-1",
        data={"items": [1, 2, {"x": None}], "name": "ü"},
        tenant="t",
        n=2,
    )
    text = sig.to_json()
    wire = orjson.loads(text)
    assert wire["specversion"] == "1.0"
    assert wire["tenant"] == "t" and wire["n"] == 2
    assert wire["data"] == {"items": [1, 2, {"x": None}], "name": "ü"}
    back = Signal.from_json(text)
    assert back == sig
    assert Signal.from_json(sig.to_bytes()) == sig
    assert Signal.from_dict(sig.to_dict()) == sig


def test_bytes_data_uses_data_base64() -> None:
    sig = Signal(
        type="blob.put",
        source="/s",
        data=b"\x00\xffraw",
        datacontenttype="application/octet-stream",
    )
    wire = sig.to_dict()
    assert "data" not in wire
    assert base64.b64decode(wire["data_base64"]) == b"\x00\xffraw"
    assert Signal.from_json(sig.to_json()).data == b"\x00\xffraw"


def test_pydantic_model_data_is_dumped() -> None:
    class M(BaseModel):
        when: datetime
        n: int

    sig = Signal(type="a", source="/s", data=M(when=datetime(2024, 1, 1, tzinfo=UTC), n=1))
    assert orjson.loads(sig.to_json())["data"] == {"when": "2024-01-01T00:00:00Z", "n": 1}


@pytest.mark.parametrize(
    ("payload", "attribute"),
    [
        (b"{not json", "event"),
        (b"[1,2]", "event"),
        (b'{"id":"1","source":"/s","type":"a"}', "specversion"),
        (b'{"specversion":"0.3","id":"1","source":"/s","type":"a"}', "specversion"),
        (b'{"specversion":"1.0","source":"/s","type":"a"}', "id"),
        (b'{"specversion":"1.0","id":"1","type":"a"}', "source"),
        (b'{"specversion":"1.0","id":"1","source":"/s"}', "type"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a..b"}', "type"),
        (b'{"specversion":"1.0","id":1,"source":"/s","type":"a"}', "id"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","time":"x"}', "time"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","subject":3}', "subject"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","BAD":1}', "BAD"),
        (b'{"specversion":"1.0","id":"1","source":"/s","type":"a","e":{"x":1}}', "e"),
        (
            b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data":1,"data_base64":"AA=="}',
            "data_base64",
        ),
        (
            b'{"specversion":"1.0","id":"1","source":"/s","type":"a","data_base64":"!!"}',
            "data_base64",
        ),
    ],
)
def test_bad_json_input_names_the_attribute(payload: bytes, attribute: str) -> None:
    with pytest.raises(SignalError) as exc:
        Signal.from_json(payload)
    assert attr_of(exc) == attribute


def test_non_string_extension_name_in_dict() -> None:
    with pytest.raises(SignalError) as exc:
        Signal.from_dict({"specversion": "1.0", "id": "1", "source": "/s", "type": "a", 5: "x"})
    assert attr_of(exc) == "5"


def test_from_dict_leaves_the_callers_mapping_alone() -> None:
    event = {
        "specversion": "1.0",
        "id": "1",
        "source": "/s",
        "type": "a",
        "time": "2024-05-01T12:00:00.5z",
        "tenant": "acme",
        "data": {"x": 1},
    }
    before = dict(event)
    sig = Signal.from_dict(event)
    assert event == before
    assert sig.extensions == {"tenant": "acme"}
    sig.extensions["other"] = "x"
    assert "other" not in event
    assert sig.time == "2024-05-01T12:00:00.5z"  # accepted through the normalising path
    with pytest.raises(SignalError) as exc:
        Signal.from_dict({**event, "time": "2024-02-30T12:00:00Z"})
    assert attr_of(exc) == "time"


def test_payload_limit() -> None:
    sig = Signal(type="a", source="/s", data={"blob": "x" * 5000})
    text = sig.to_json()
    with pytest.raises(PayloadTooLargeError) as exc:
        Signal.from_json(text, max_size=1000)
    assert exc.value.details["limit"] == 1000
    assert exc.value.details["size"] == len(text)
    assert Signal.from_json(text, max_size=10_000) == sig
    headers, body = sig.to_binary()
    with pytest.raises(PayloadTooLargeError):
        Signal.from_binary(headers, body, max_size=100)


def test_unserialisable_data_is_a_signal_error() -> None:
    sig = Signal(type="a", source="/s", data={"x": object()})
    with pytest.raises(SignalError) as exc:
        sig.to_json()
    assert attr_of(exc) == "data"


# -- binary mode ---------------------------------------------------------------------------


def test_binary_round_trip_json_data() -> None:
    sig = Signal(type="a.b", source="/s p", subject="ü 100%", data={"k": [1]}, tenant="t")
    headers, body = sig.to_binary()
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "a.b"
    assert headers["content-type"] == "application/json"
    assert headers["ce-source"] == "/s%20p"
    assert all(ord(c) < 128 for v in headers.values() for c in v)
    assert body == b'{"k":[1]}'
    upper = {k.upper(): v for k, v in headers.items()}
    back = Signal.from_binary(upper, body)
    assert back == sig


def test_binary_text_and_bytes_and_empty() -> None:
    text = Signal(type="a", source="/s", data="héllo", datacontenttype="text/plain")
    h, b = text.to_binary()
    assert b == "héllo".encode()
    assert Signal.from_binary(h, b).data == "héllo"
    raw = Signal(type="a", source="/s", data=b"\x00\x01", datacontenttype="application/x-raw")
    h, b = raw.to_binary()
    assert Signal.from_binary(h, b).data == b"\x00\x01"
    empty = Signal(type="a", source="/s")
    h, b = empty.to_binary()
    assert b == b"" and Signal.from_binary(h, b).data is None
    bad = Signal(type="a", source="/s", data={"x": 1}, datacontenttype="text/plain")
    with pytest.raises(SignalError):
        bad.to_binary()
    with pytest.raises(SignalError) as exc:
        Signal.from_binary({"ce-id": "1", "ce-source": "/s", "ce-type": "a"}, b"")
    assert attr_of(exc) == "specversion"
    with pytest.raises(SignalError) as exc:
        Signal.from_binary(
            {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "a"}, b"{x"
        )
    assert attr_of(exc) == "data"


# -- causality and tracing ------------------------------------------------------------------


def test_caused_links_and_keeps_trace() -> None:
    root = Signal(
        type="a",
        source="/s",
        traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
        tracestate="k=v",
    )
    child = root.caused(type="b", data={"x": 1})
    assert child.causation_id == root.id
    assert child.source == "/s"
    assert child.traceparent is not None
    assert child.trace_id == root.trace_id == "ab" * 16
    assert child.traceparent.split("-")[2] != "cd" * 8
    assert child.tracestate == "k=v"
    grandchild = child.caused(type="c", source="/other")
    assert grandchild.causation_id == child.id
    assert grandchild.trace_id == root.trace_id
    assert grandchild.source == "/other"


def test_caused_without_trace_context_shares_one_trace() -> None:
    root = Signal(type="a", source="/s")
    assert root.traceparent is None
    c1, c2 = root.caused(type="b"), root.caused(type="c")
    assert c1.trace_id == c2.trace_id == root.trace_id
    assert len(root.trace_id) == 32
    assert Signal.from_json(c1.to_json()).causation_id == root.id


@pytest.mark.parametrize("sig_id", ["order-42", "1", "0000", "0" * 32, "ünï", "A" * 32])
def test_caused_works_for_any_id(sig_id: str) -> None:
    # a trace id padded from a non-UUID id was not hex (or all zero): caused() raised
    root = Signal(type="a", source="/s", id=sig_id)
    child = root.caused(type="b")
    assert child.trace_id == root.trace_id
    assert len(root.trace_id) == 32 and root.trace_id != "0" * 32
    assert int(root.trace_id, 16) >= 0
    assert Signal(type="a", source="/s", id=sig_id).trace_id == root.trace_id  # stable


# -- typed signals ---------------------------------------------------------------------------


class OrderData(BaseModel):
    order_id: str
    total: int


class OrderCreated(TypedSignal):
    """An order was created."""

    type = "order.created"
    data_model = OrderData


class Ping(TypedSignal):
    """A ping, nested model form."""

    type = "ping"

    class Data(BaseModel):
        n: int = 0


def test_typed_signal_validates_and_round_trips() -> None:
    sig = OrderCreated(source="/shop", data={"order_id": "o1", "total": 5})
    assert sig.type == "order.created"
    assert isinstance(sig.data, OrderData) and sig.data.total == 5
    back = OrderCreated.from_json(sig.to_json())
    assert isinstance(back, OrderCreated)
    assert back.data == sig.data
    assert Ping(source="/s").data == Ping.Data(n=0)
    generic = Signal.from_json(sig.to_json())
    assert generic.data == {"order_id": "o1", "total": 5}


def test_typed_signal_bad_data_and_wrong_type() -> None:
    with pytest.raises(SignalError) as exc:
        OrderCreated(source="/shop", data={"order_id": "o1", "total": "many"})
    assert attr_of(exc) == "data"
    assert exc.value.details["errors"][0]["loc"] == ("total",)
    other = Signal(type="order.deleted", source="/s", data={"order_id": "o", "total": 1})
    with pytest.raises(SignalError) as exc2:
        OrderCreated.from_json(other.to_json())
    assert attr_of(exc2) == "type"
    with pytest.raises(SignalError):
        OrderCreated(source="/s", data={"order_id": "o", "total": 1}, type="other")
    with pytest.raises(SignalError) as exc3:
        OrderCreated.from_dict({**other.to_dict(), "type": "order.created", "data": {}})
    assert attr_of(exc3) == "data"


def test_typed_signal_class_with_bad_type_fails_at_definition() -> None:
    with pytest.raises(SignalError):

        class Bad(TypedSignal):
            type = "bad..type"


# -- properties -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
segment = st.from_regex(r"[A-Za-z0-9_\-]{1,6}", fullmatch=True)
types = st.lists(segment, min_size=1, max_size=5).map(".".join)
ext_names = st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True).filter(
    lambda n: n not in {"id", "source", "type", "subject", "time", "data", "dataschema"}
)
ext_values = st.text(max_size=20) | st.integers(-1000, 1000) | st.booleans()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # no timing in tests
@given(
    sig_type=types,
    data=json_values,
    subject=st.none() | st.text(min_size=1, max_size=20),
    source=st.text(min_size=1, max_size=20),
    extensions=st.dictionaries(ext_names, ext_values, max_size=4),
)
def test_structured_round_trip_property(
    sig_type: str, data: Any, subject: str | None, source: str, extensions: dict[str, Any]
) -> None:
    extensions = {k: v for k, v in extensions.items() if k not in {"specversion"}}
    sig = Signal(type=sig_type, source=source, data=data, subject=subject, **extensions)
    assert Signal.from_json(sig.to_json()) == sig


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # no timing in tests
@given(
    sig_type=types,
    data=json_values,
    subject=st.none() | st.text(min_size=1, max_size=20),
    source=st.text(min_size=1, max_size=20),
    extensions=st.dictionaries(ext_names, st.text(max_size=20), max_size=4),
)
def test_binary_round_trip_property(
    sig_type: str, data: Any, subject: str | None, source: str, extensions: dict[str, str]
) -> None:
    extensions = {k: v for k, v in extensions.items() if k not in {"specversion"}}
    sig = Signal(type=sig_type, source=source, data=data, subject=subject, **extensions)
    headers, body = sig.to_binary()
    back = Signal.from_binary(headers, body)
    if data is None:
        assert back.data is None
        return
    assert back == sig


def test_upgrade_to_the_declared_typed_class() -> None:
    generic = Signal.from_json(
        Signal(type="order.created", source="/s", data={"order_id": "o", "total": 3}).to_json()
    )
    typed = TypedSignal.upgrade(generic)
    assert isinstance(typed, OrderCreated)
    assert typed.data == OrderData(order_id="o", total=3)
    assert typed.id == generic.id and typed.time == generic.time
    assert TypedSignal.upgrade(typed) is typed
    plain = Signal(type="not.typed", source="/s")
    assert TypedSignal.upgrade(plain) is plain
    assert TypedSignal.class_for("order.created") is OrderCreated
    assert TypedSignal.class_for("nope") is None
    bad = Signal(type="order.created", source="/s", data={"order_id": "o"})
    with pytest.raises(SignalError) as exc:
        TypedSignal.upgrade(bad)
    assert attr_of(exc) == "data"


def test_copy_keeps_identity_and_leaves_the_original_alone() -> None:
    import copy

    parent = f"00-{'a' * 32}-{'b' * 16}-01"
    sig = Signal(type="order.item.created", source="/shop", data={"n": 1}, traceparent=parent)
    clone = copy.copy(sig)
    assert clone is not sig and type(clone) is Signal
    assert clone.id == sig.id and clone.time == sig.time and clone.data is sig.data
    clone.extensions = {**sig.extensions, "causationid": "c1"}
    assert sig.extensions == {"traceparent": parent}
    assert clone.to_dict() == {**sig.to_dict(), "causationid": "c1"}

    typed = OrderCreated(source="/shop", data={"order_id": "o1", "total": 5})
    typed_clone = copy.copy(typed)
    assert type(typed_clone) is OrderCreated
    assert typed_clone.id == typed.id and typed_clone.data == typed.data
    assert typed_clone.to_dict() == typed.to_dict()
