"""Agent subjects and the node-to-node wire codec (no server needed)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation._errors import AlreadyRegisteredError, InvalidKeyError, NotOwnerError
from foundation.messaging.envelope import (
    Subjects,
    check_agent_id,
    check_token,
    decode_public_signal,
    decode_reply,
    decode_request,
    encode_error,
    encode_ok,
    encode_request,
    public_meta,
    public_timeout,
)
from jido import JidoError, Signal, SignalError, TimeoutError, ValidationError


def test_subject_scheme() -> None:
    s = Subjects()
    assert s.node("n1", "call") == "foundation.node.n1.call"
    assert s.node_wildcard("n1") == "foundation.node.n1.>"
    assert s.agent("acc-1") == "foundation.agent.default.acc-1"
    assert s.agent("a.b", tenant="t1") == "foundation.agent.t1.a.b"
    assert s.agent_wildcard == "foundation.agent.>"
    assert s.parse_agent("foundation.agent.t1.a.b") == ("t1", "a.b")
    with pytest.raises(InvalidKeyError):
        s.parse_agent("foundation.agent.t1")
    with pytest.raises(InvalidKeyError):
        s.parse_agent("other.agent.t1.x")


@pytest.mark.parametrize("bad", ["", "a b", "a.b", "a*", "a>", "a/b"])
def test_token_validation(bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        check_token("node name", bad)


@pytest.mark.parametrize("bad", ["", ".a", "a.", "a..b", "a b", "a*", ">"])
def test_agent_id_validation(bad: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        check_agent_id(bad)
    assert isinstance(info.value, ValidationError)


def test_request_roundtrip_keeps_signal_and_trace() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    sig = Signal(type="account.deposit", source="/t", data={"amount": 5}, traceparent=tp)
    data = encode_request("acc-1", sig, timeout=1.5, meta={"seq": 3}, state={"x": 1})
    req = decode_request(data)
    assert req.agent_id == "acc-1"
    assert req.signal == sig
    assert req.signal is not None and req.signal.traceparent == tp
    assert req.timeout == 1.5
    assert req.meta == {"seq": 3}
    assert req.extra == {"state": {"x": 1}}


def test_bad_request_is_a_signal_error() -> None:
    with pytest.raises(SignalError):
        decode_request(b"not json")
    with pytest.raises(SignalError):
        decode_request(b'{"s": {}}')


def test_reply_ok_and_typed_errors() -> None:
    assert decode_reply(encode_ok({"balance": 5})) == {"balance": 5}
    err = AlreadyRegisteredError("acc-1", "n2", epoch=4)
    with pytest.raises(AlreadyRegisteredError) as info:
        decode_reply(encode_error(err))
    assert info.value.owner == "n2" and info.value.agent_id == "acc-1"
    with pytest.raises(NotOwnerError):
        decode_reply(encode_error(NotOwnerError("moved")))
    with pytest.raises(TimeoutError):
        decode_reply(encode_error(TimeoutError("slow")))
    with pytest.raises(JidoError) as other:
        decode_reply(encode_error(RuntimeError("boom")))
    assert "boom" in other.value.message
    with pytest.raises(JidoError):
        decode_reply(b"{}")
    with pytest.raises(JidoError):
        decode_reply(b"garbage")


def test_public_signal_binary_and_structured() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "0190f1c2-0000-7000-8000-000000000001",
        "ce-source": "/cli",
        "ce-type": "account.deposit",
        "content-type": "application/json",
    }
    sig = decode_public_signal(headers, b'{"amount": 5}')
    assert sig.type == "account.deposit" and sig.data == {"amount": 5}
    event = {
        "specversion": "1.0",
        "id": "x1",
        "source": "/cli",
        "type": "account.deposit",
        "datacontenttype": "application/json",
        "data": {"amount": 7},
    }
    sig2 = decode_public_signal(None, orjson.dumps(event))
    assert sig2.data == {"amount": 7} and sig2.id == "x1"
    with pytest.raises(SignalError):
        decode_public_signal({}, b"{}")


def test_unencodable_payload_is_a_signal_error() -> None:
    sig = Signal(type="x.y", source="/p", data={})
    with pytest.raises(SignalError):
        encode_request("a", sig, meta={(1, 2): "a JSON object key must be a string"})
    # integers beyond 64 bits are carried exactly (decoded signals may hold them)
    assert decode_request(encode_request("a", sig, meta={"big": 2**70 + 1})).meta == {
        "big": 2**70 + 1
    }


def test_public_headers() -> None:
    assert public_timeout(None, 5.0) == 5.0
    assert public_timeout({"fdn-timeout": "0.25"}, 5.0) == 0.25
    with pytest.raises(ValidationError):
        public_timeout({"fdn-timeout": "soon"}, 5.0)
    assert public_meta({"fdn-meta": '{"a": 1}'}) == {"a": 1}
    assert public_meta(None) is None
    with pytest.raises(ValidationError):
        public_meta({"fdn-meta": "[1]"})


@given(
    agent_id=st.from_regex(r"[a-z0-9_-]{1,8}(\.[a-z0-9_-]{1,8}){0,2}", fullmatch=True),
    data=st.dictionaries(
        st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), max_size=4
    ),
)
def test_request_roundtrip_property(agent_id: str, data: dict[str, object]) -> None:
    sig = Signal(type="x.y", source="/p", data=data)
    req = decode_request(encode_request(check_agent_id(agent_id), sig))
    assert req.agent_id == agent_id and req.signal == sig
    tenant, parsed = Subjects().parse_agent(Subjects().agent(agent_id))
    assert (tenant, parsed) == ("default", agent_id)


BIG = 123456789012345678901234567890  # beyond 64 bits: some producers send such integers


def test_a_decoded_big_integer_crosses_the_wire_exactly() -> None:
    raw = (
        b'{"specversion":"1.0","id":"1","source":"/s","type":"a.b","data":{"n":'
        + str(BIG).encode()
        + b"}}"
    )
    sig = Signal.from_json(raw)
    assert sig.data == {"n": BIG}
    req = decode_request(encode_request("agent-1", sig))
    assert req.signal is not None and req.signal.data == {"n": BIG}
