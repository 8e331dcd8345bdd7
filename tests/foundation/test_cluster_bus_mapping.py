"""Subject mapping of the cluster bus: jido patterns → NATS subjects (+ local filter).

The property test checks that "NATS subject matching of the plan, then the local Router filter
when the plan is not exact" accepts exactly the types jido's Router matches.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation.messaging.cluster_bus import (
    SubjectPlan,
    decode_signal,
    encode_signal,
    plan_pattern,
    signal_subject,
)
from jido import RoutingError, Signal, SignalError
from jido._router import Router


def nats_match(subject: str, filter_subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more tokens."""
    tokens = subject.split(".")
    parts = filter_subject.split(".")
    for i, part in enumerate(parts):
        if part == ">":
            return i == len(parts) - 1 and len(tokens) > i
        if i >= len(tokens):
            return False
        if part != "*" and part != tokens[i]:
            return False
    return len(tokens) == len(parts)


def delivered(plan: SubjectPlan, signal_type: str) -> bool:
    """Whether the cluster bus hands a signal of ``signal_type`` to a subscription of ``plan``."""
    prefix = "foundation.signal"
    subject = f"{prefix}.{signal_type}"
    if not any(nats_match(subject, s) for s in plan.subjects(prefix)):
        return False
    if plan.exact:
        return True
    router = Router()
    router.add(plan.pattern, True)
    return bool(router.route(signal_type))


def jido_match(pattern: str, signal_type: str) -> bool:
    router = Router()
    router.add(pattern, True)
    return bool(router.route(signal_type))


@pytest.mark.parametrize(
    ("pattern", "tails", "exact"),
    [
        ("orders.created", ("orders.created",), True),
        ("orders.*.created", ("orders.*.created",), True),
        ("audit.**", ("audit", "audit.>"), True),
        ("**", (">",), True),
        ("a.*.**", ("a.*", "a.*.>"), True),
        ("a.**.c", ("a.>",), False),
        ("**.c", (">",), False),
        ("a.**.b.**", ("a.>",), False),
    ],
)
def test_plan_examples(pattern: str, tails: tuple[str, ...], exact: bool) -> None:
    plan = plan_pattern(pattern)
    assert plan.tails == tails
    assert plan.exact is exact


def test_plan_subjects_put_the_prefix_in_front() -> None:
    assert plan_pattern("audit.**").subjects("p") == ["p.audit", "p.audit.>"]
    assert signal_subject("a.b") == "foundation.signal.a.b"
    assert signal_subject("a.b", "at_least_once") == "foundation.durable.a.b"


@pytest.mark.parametrize("bad", ["", "a..b", "a.**.**", "a b", "a.>", 3])
def test_bad_patterns_raise_routing_error(bad: object) -> None:
    with pytest.raises(RoutingError):
        plan_pattern(bad)  # type: ignore[arg-type]


_segment = st.sampled_from(["a", "b", "c"])
_types = st.lists(_segment, min_size=1, max_size=6).map(".".join)


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    segs = draw(st.lists(st.sampled_from(["a", "b", "*", "**"]), min_size=1, max_size=5))
    out: list[str] = []
    for seg in segs:
        if seg == "**" and out and out[-1] == "**":
            continue
        out.append(seg)
    return ".".join(out)


@given(_patterns(), _types)
def test_subjects_plus_filter_agree_with_the_jido_router(pattern: str, signal_type: str) -> None:
    assert delivered(plan_pattern(pattern), signal_type) == jido_match(pattern, signal_type)


@given(_patterns(), _types)
def test_exact_plans_need_no_filter(pattern: str, signal_type: str) -> None:
    plan = plan_pattern(pattern)
    if plan.exact:
        prefix = "p"
        hit = any(nats_match(f"{prefix}.{signal_type}", s) for s in plan.subjects(prefix))
        assert hit == jido_match(pattern, signal_type)


@given(
    st.dictionaries(
        st.sampled_from(["k", "n", "ok"]), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
    ),
    st.sampled_from(["binary", "structured"]),
)
def test_encode_decode_round_trip(data: dict[str, object], wire: str) -> None:
    sig = Signal(type="orders.o1.created", source="/shop", data=data, subject="o1", tenant="t1")
    headers, body = encode_signal(sig, wire)  # type: ignore[arg-type]
    assert decode_signal(headers, body) == sig


def test_decode_detects_mode_and_adopts_plain_traceparent() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    body = Signal(type="a.b", source="/s", data=1).to_bytes()
    sig = decode_signal({"traceparent": parent}, body)
    assert sig.traceparent == parent
    raw = decode_signal(
        {"Ce-Specversion": "1.0", "Ce-Id": "x1", "Ce-Source": "/raw", "Ce-Type": "a.b"}, b""
    )
    assert (raw.id, raw.type, raw.data) == ("x1", "a.b", None)


def test_decode_rejects_garbage_with_signal_error() -> None:
    with pytest.raises(SignalError):
        decode_signal(None, b"not json")
    with pytest.raises(SignalError):
        decode_signal({"ce-id": "1", "ce-type": "a"}, b"")  # no source / specversion
