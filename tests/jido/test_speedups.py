"""The optional native checks (``jido._speedups``) answer exactly what their Python versions do.

The signal decoder's fast path asks two questions per message: is ``time`` the canonical
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` of a real instant, and is ``traceparent`` a valid W3C trace
context. Where the extension was built it answers them in C; these tests hold it to the Python
versions in ``jido._codec`` on generated input, valid and invalid. Without the extension they
are skipped locally; with ``CI`` set they fail instead, so CI always tests the native path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jido import Signal, _codec

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _native() -> ModuleType:
    try:
        from jido import _speedups
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must build and test the native extension: {exc}")
        pytest.skip(f"native extension not built here ({exc})")
    return _speedups


@pytest.fixture(scope="module")
def native() -> ModuleType:
    return _native()


def _mutate(text: str, data: st.DataObject) -> str:
    """``text`` with one to three characters replaced, inserted or removed."""
    alphabet = "0123456789abcdefABCDEF-:.TtZz+ \u0661\u00e9f0"
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        c = data.draw(st.sampled_from(alphabet))
        if op == "replace" and i < len(text):
            text = text[:i] + c + text[i + 1 :]
        elif op == "insert":
            text = text[:i] + c + text[i:]
        elif i < len(text):
            text = text[:i] + text[i + 1 :]
    return text


def _canonical(moment: datetime) -> str:
    m = moment  # strftime does not pad years before 1000 on every platform
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond:06d}Z"
    )


_EPOCH = datetime(1, 1, 1, tzinfo=UTC)
moments = st.integers(0, (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH).days * 86400).map(
    lambda s: _EPOCH + timedelta(seconds=s)
)


def _same(native_check: Callable[[object], bool], python_check: Callable[[object], bool]) -> None:
    """A helper for the fixed cases below: both checks agree on each value."""
    for value in _EDGE_TIMES + _EDGE_TRACEPARENTS + _NOT_STRINGS:
        assert native_check(value) is python_check(value), value


_EDGE_TIMES: list[object] = [
    "2026-11-24T03:30:59.756968Z",
    "2024-02-29T00:00:00.000000Z",  # leap day
    "2023-02-29T00:00:00.000000Z",  # not a leap year
    "2000-02-29T12:00:00.000000Z",  # divisible by 400
    "1900-02-29T12:00:00.000000Z",  # divisible by 100 only
    "0001-01-01T00:00:00.000000Z",
    "0000-01-01T00:00:00.000000Z",
    "9999-12-31T23:59:59.999999Z",
    "2026-04-31T00:00:00.000000Z",
    "2026-13-01T00:00:00.000000Z",
    "2026-00-10T00:00:00.000000Z",
    "2026-01-00T00:00:00.000000Z",
    "2026-01-01T24:00:00.000000Z",
    "2026-01-01T23:60:00.000000Z",
    "2026-12-31T23:59:60.000000Z",  # a leap second: the full check decides
    "2026-11-24t03:30:59.756968z",
    "2026-11-24T03:30:59.756968+00:00",
    "2026-11-24T03:30:59Z",
    "2026-11-24 03:30:59.756968Z",
    "2026-11-24T03:30:59,756968Z",
    "2026-W47-2T03:30:59.756968Z",
    "2026-11-24T03:30:59.75696\u0661Z",
    "",
]
_EDGE_TRACEPARENTS: list[object] = [
    TRACEPARENT,
    TRACEPARENT.upper(),
    "ff" + TRACEPARENT[2:],
    "fe" + TRACEPARENT[2:],
    "00-" + "0" * 32 + TRACEPARENT[35:],
    TRACEPARENT[:36] + "0" * 16 + TRACEPARENT[52:],
    TRACEPARENT + "-00",
    TRACEPARENT[:-1],
    TRACEPARENT.replace("-", "_"),
    TRACEPARENT[:10] + "\u00e9" + TRACEPARENT[11:],
]


class _Str(str):
    """A ``str`` subclass: both checks refuse anything that is not exactly ``str``."""


_NOT_STRINGS: list[object] = [
    None,
    27,
    True,
    b"2026-11-24T03:30:59.756968Z",
    _Str("2026-11-24T03:30:59.756968Z"),
    _Str(TRACEPARENT),
]


def test_fixed_edge_cases_agree(native: ModuleType) -> None:
    _same(native.canonical_time, _codec._canonical_time)
    _same(native.valid_traceparent, _codec._valid_traceparent)
    assert native.canonical_time("2024-02-29T00:00:00.000000Z") is True
    assert native.canonical_time("2023-02-29T00:00:00.000000Z") is False
    assert native.valid_traceparent(TRACEPARENT) is True
    assert native.valid_traceparent(TRACEPARENT.upper()) is False


@settings(max_examples=400, deadline=None)
@given(moment=moments, micro=st.integers(0, 999_999), data=st.data())
def test_time_check_agrees_on_generated_times(
    moment: datetime, micro: int, data: st.DataObject
) -> None:
    native = _native()
    text = _canonical(moment.replace(microsecond=micro))
    assert native.canonical_time(text) is True
    assert _codec._canonical_time(text) is True
    mutated = _mutate(text, data)
    assert native.canonical_time(mutated) is _codec._canonical_time(mutated), mutated


@settings(max_examples=400, deadline=None)
@given(
    version=st.text("0123456789abcdef", min_size=2, max_size=2),
    trace=st.text("0123456789abcdef", min_size=32, max_size=32),
    span=st.text("0123456789abcdef", min_size=16, max_size=16),
    flags=st.text("0123456789abcdef", min_size=2, max_size=2),
    data=st.data(),
)
def test_traceparent_check_agrees_on_generated_values(
    version: str, trace: str, span: str, flags: str, data: st.DataObject
) -> None:
    native = _native()
    text = f"{version}-{trace}-{span}-{flags}"
    assert native.valid_traceparent(text) is _codec._valid_traceparent(text), text
    mutated = _mutate(text, data)
    assert native.valid_traceparent(mutated) is _codec._valid_traceparent(mutated), mutated


def test_the_decoder_uses_the_native_checks_where_built(native: ModuleType) -> None:
    assert _codec.NATIVE is True
    assert _codec.canonical_time is native.canonical_time
    assert _codec.valid_traceparent is native.valid_traceparent


def test_pure_python_switch_decodes_the_same() -> None:
    sig = Signal(type="shop.order.created", source="/s", data={"n": 1}, traceparent=TRACEPARENT)
    program = (
        "import sys; from jido import Signal, _codec; "
        "sig = Signal.from_json(sys.stdin.buffer.read()); "
        "print(_codec.NATIVE, sig.to_json())"
    )
    env = {**os.environ, _codec.PURE_PYTHON_ENV: "1"}
    out = subprocess.run(
        [sys.executable, "-c", program],
        input=sig.to_bytes(),
        capture_output=True,
        env=env,
        check=True,
        timeout=60,
    ).stdout.decode()
    native_flag, _, text = out.strip().partition(" ")
    assert native_flag == "False"
    assert Signal.from_json(text).to_dict() == sig.to_dict()
