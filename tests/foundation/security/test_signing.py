"""Signed signals: sign, round-trip through the wire forms, detect changes and forgeries."""

from __future__ import annotations

import pytest

from foundation._errors import AuthenticationError
from foundation.security import KeyPair, SignalSigner, SignalVerifier
from jido import Signal


def test_a_signed_signal_verifies_after_a_wire_round_trip() -> None:
    key = KeyPair.create("user")
    signer = SignalSigner(key)
    signal = Signal(type="account.deposit", source="/u/alice", data={"amount": 5})
    signed = signer.sign(signal)
    verifier = SignalVerifier([signer.public_key])
    assert verifier.is_signed(signed) and not verifier.is_signed(signal)
    for copy in (
        Signal.from_json(signed.to_json()),
        Signal.from_binary(*signed.to_binary()),
        Signal.from_dict(signed.to_dict()),
    ):
        assert verifier.verify(copy) == key.public_key
    assert signed.id == signal.id and signed.data == signal.data


def test_changed_unsigned_and_untrusted_signals_are_refused() -> None:
    signer = SignalSigner(KeyPair.create("user"))
    signed = signer.sign(Signal(type="account.deposit", source="/u", data={"amount": 5}))
    verifier = SignalVerifier([signer.public_key])
    body = signed.to_dict()
    body["data"] = {"amount": 5000}
    with pytest.raises(AuthenticationError, match="changed after it was signed"):
        verifier.verify(Signal.from_dict(body))
    with pytest.raises(AuthenticationError, match="not signed"):
        verifier.verify(Signal(type="account.deposit", source="/u"))
    other = SignalSigner(KeyPair.create("user")).sign(Signal(type="x.y", source="/u"))
    with pytest.raises(AuthenticationError, match="not a trusted key"):
        verifier.verify(other)
