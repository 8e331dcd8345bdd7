"""Interop with the official ``cloudevents`` SDK, both directions, structured and binary modes."""

from __future__ import annotations

from datetime import UTC, datetime

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as CoreEvent
from cloudevents.v1 import conversion as v1_conversion
from cloudevents.v1.http import CloudEvent as V1Event
from cloudevents.v1.http import from_http as v1_from_http

from jido import Signal


def sample() -> Signal:
    return Signal(
        type="com.example.order.created",
        source="/shop/eu",
        subject="order 42 ü",
        data={"order_id": "o-42", "total": 1250, "lines": [{"sku": "a", "qty": 2}]},
        dataschema="https://example.com/order.json",
        tenant="acme",
        traceparent="00-" + "1f" * 16 + "-" + "2e" * 8 + "-01",
    )


def test_ours_structured_parses_with_sdk_core() -> None:
    sig = sample()
    event = JSONFormat().read(None, sig.to_bytes())
    assert event.get_id() == sig.id
    assert event.get_type() == sig.type
    assert event.get_source() == sig.source
    assert event.get_subject() == sig.subject
    assert event.get_dataschema() == sig.dataschema
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("tenant") == "acme"
    assert event.get_extension("traceparent") == sig.traceparent
    assert event.get_data() == sig.data
    assert event.get_time() == sig.timestamp


def test_ours_structured_parses_with_sdk_v1() -> None:
    sig = sample()
    event = v1_conversion.from_json(V1Event, sig.to_json())
    assert event["id"] == sig.id
    assert event["type"] == sig.type
    assert event["tenant"] == "acme"
    assert event.data == sig.data
    # and over HTTP, structured content mode
    event2 = v1_from_http({"content-type": "application/cloudevents+json"}, sig.to_bytes())
    assert event2["subject"] == sig.subject and event2.data == sig.data


def test_ours_binary_parses_with_sdk() -> None:
    sig = sample()
    headers, body = sig.to_binary()
    event = ce_http.from_binary(ce_http.HTTPMessage(headers=headers, body=body), JSONFormat())
    assert event.get_id() == sig.id
    assert event.get_subject() == "order 42 ü"
    assert event.get_extension("tenant") == "acme"
    assert event.get_data() == sig.data
    assert event.get_time() == sig.timestamp
    # The legacy v1 API does not percent-decode header values, so give it a plain subject.
    plain = Signal(type="a.b", source="/s", subject="order-42", data={"k": 1}, tenant="acme")
    headers, body = plain.to_binary()
    v1 = v1_from_http(headers, body)
    assert v1["id"] == plain.id and v1["subject"] == "order-42" and v1.data == {"k": 1}
    assert v1["tenant"] == "acme"


def test_ours_bytes_data_parses_with_sdk() -> None:
    sig = Signal(type="a.b", source="/s", data=b"\x00\x01\xfe", datacontenttype="application/x")
    event = JSONFormat().read(None, sig.to_bytes())
    assert event.get_data() == b"\x00\x01\xfe"


def sdk_event(data: object = None) -> CoreEvent:
    return CoreEvent(
        {
            "type": "com.example.thing.happened",
            "source": "https://example.com/src",
            "subject": "thing 1",
            "time": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
            "datacontenttype": "application/json",
            "myext": "value with spaces",
        },
        data if data is not None else {"a": [1, 2], "b": "x"},
    )


def test_sdk_structured_parses_here() -> None:
    event = sdk_event()
    raw = JSONFormat().write(event)
    sig = Signal.from_json(raw)
    assert sig.id == event.get_id()
    assert sig.type == "com.example.thing.happened"
    assert sig.source == "https://example.com/src"
    assert sig.subject == "thing 1"
    assert sig.timestamp == datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert sig.extensions == {"myext": "value with spaces"}
    assert sig.data == {"a": [1, 2], "b": "x"}
    # the SDK's HTTP structured message too
    msg = ce_http.to_structured(event, JSONFormat())
    assert Signal.from_json(msg.body) == sig


def test_sdk_binary_parses_here() -> None:
    event = sdk_event()
    msg = ce_http.to_binary(event, JSONFormat())
    sig = Signal.from_binary(msg.headers, msg.body)
    assert sig.id == event.get_id()
    assert sig.subject == "thing 1"
    assert sig.extensions == {"myext": "value with spaces"}
    assert sig.data == {"a": [1, 2], "b": "x"}
    assert sig.timestamp == datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


def test_sdk_v1_binary_and_bytes_parse_here() -> None:
    event = V1Event(
        {"type": "com.example.x", "source": "/v1", "datacontenttype": "application/octet-stream"},
        b"\x01\x02",
    )
    raw = v1_conversion.to_json(event)
    sig = Signal.from_json(raw)
    assert sig.data == b"\x01\x02"
    assert sig.id == event["id"]


def test_round_trip_through_sdk_and_back() -> None:
    sig = sample()
    event = JSONFormat().read(None, sig.to_bytes())
    back = Signal.from_json(JSONFormat().write(event))
    assert back.id == sig.id
    assert back.data == sig.data
    assert back.extensions == sig.extensions
    assert back.timestamp == sig.timestamp
