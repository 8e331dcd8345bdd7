"""Checkpoint codec: properties of to_bytes / from_bytes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jido import Checkpoint, CorruptCheckpointError, StoreError

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
_checkpoints = st.builds(
    Checkpoint,
    state=st.dictionaries(st.text(), _values, max_size=8),
    agent_type=st.text(min_size=1),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    meta=st.dictionaries(st.text(), _values, max_size=4),
    epoch=st.integers(min_value=0, max_value=2**63 - 1),
    saved_at=st.floats(min_value=0, max_value=4e9),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # no timing in tests
@given(_checkpoints)
def test_round_trip_is_exact(cp: Checkpoint) -> None:
    assert Checkpoint.from_bytes(cp.to_bytes()) == cp


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # no timing in tests
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_the_typed_error(data: bytes) -> None:
    try:
        got = Checkpoint.from_bytes(data, key="k")
    except CorruptCheckpointError as exc:
        assert exc.details["key"] == "k"
        assert exc.details["size"] == len(data)
    else:
        assert isinstance(got, Checkpoint)
        assert isinstance(got.state, dict)


def test_defaults_are_omitted_and_restored() -> None:
    cp = Checkpoint({"a": 1}, "t")
    assert (cp.seq, cp.meta, cp.epoch) == (0, {}, 0)
    assert cp.saved_at > 0
    blob = cp.to_bytes()
    assert b"epoch" not in blob and b"meta" not in blob
    assert Checkpoint.from_bytes(blob) == cp


def test_checkpoints_do_not_share_default_meta() -> None:
    a, b = Checkpoint({}, "t"), Checkpoint({}, "t")
    a.meta["x"] = 1
    assert b.meta == {}


@pytest.mark.parametrize("bad", [{"o": object()}, {"n": -(2**64)}, {"s": {1, object()}}])
def test_unencodable_values_raise_store_error(bad: dict[str, Any]) -> None:
    with pytest.raises(StoreError, match="cannot be encoded") as info:
        Checkpoint(bad, "x.Agent").to_bytes()
    assert info.value.retryable is False
    assert info.value.details["agent_type"] == "x.Agent"
