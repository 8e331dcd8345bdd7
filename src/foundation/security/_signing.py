"""Signed signals: an ed25519 signature over a signal's canonical form, kept with the signal.

:class:`SignalSigner` adds two CloudEvents extension attributes: ``fdnkey`` (the signer's
nkey public key) and ``fdnsig`` (base64 signature of the canonical form: the structured
JSON form with ``fdnsig`` left out, sorted keys, compact). The signature travels with the
signal wherever it is stored (bus streams, inboxes) and replayed, so its origin can be
checked later by :class:`SignalVerifier` against the keys it trusts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any, Final

from foundation._errors import AuthenticationError
from foundation.security._keys import KeyPair, verify
from jido import Signal

#: Extension attribute holding the signer's public key.
KEY_EXTENSION: Final = "fdnkey"
#: Extension attribute holding the signature.
SIG_EXTENSION: Final = "fdnsig"


def canonical_signal(signal: Signal) -> bytes:
    """The bytes a signature covers: the structured form without ``fdnsig``, canonical JSON."""
    body: dict[str, Any] = signal.to_dict()
    body.pop(SIG_EXTENSION, None)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class SignalSigner:
    """Signs signals with one nkey (a node's or a principal's)."""

    def __init__(self, key: KeyPair) -> None:
        self.key = key

    @property
    def public_key(self) -> str:
        """The key verifiers must trust."""
        return self.key.public_key

    def sign(self, signal: Signal) -> Signal:
        """A copy of ``signal`` carrying ``fdnkey`` and ``fdnsig``."""
        body = signal.to_dict()
        body.pop(SIG_EXTENSION, None)
        body[KEY_EXTENSION] = self.key.public_key
        unsigned = type(signal).from_dict(body)
        sig = base64.b64encode(self.key.sign(canonical_signal(unsigned))).decode()
        body[SIG_EXTENSION] = sig
        return type(signal).from_dict(body)


class SignalVerifier:
    """Checks signed signals against trusted public keys."""

    def __init__(self, trusted_keys: Iterable[str]) -> None:
        self.trusted_keys = frozenset(trusted_keys)

    @staticmethod
    def is_signed(signal: Signal) -> bool:
        """True when the signal carries a signature."""
        return SIG_EXTENSION in signal.extensions

    def verify(self, signal: Signal) -> str:
        """The signer's public key; :class:`AuthenticationError` when unsigned, forged or
        signed by an untrusted key."""
        key = signal.extensions.get(KEY_EXTENSION)
        sig = signal.extensions.get(SIG_EXTENSION)
        details = {"signal_id": signal.id, "signal_type": signal.type, "key": key}
        if not isinstance(key, str) or not isinstance(sig, str):
            raise AuthenticationError(
                f"signal {signal.id} ({signal.type}) is not signed; sign it with SignalSigner",
                details=details,
            )
        if key not in self.trusted_keys:
            raise AuthenticationError(
                f"signal {signal.id} is signed by {key}, which is not a trusted key; add the "
                "signer's public key to the verifier",
                details=details,
            )
        try:
            raw = base64.b64decode(sig, validate=True)
        except ValueError:
            raw = b""
        if not verify(key, canonical_signal(signal), raw):
            raise AuthenticationError(
                f"signal {signal.id} ({signal.type}) was changed after it was signed, or its "
                "signature is forged; drop it",
                details=details,
            )
        return key


__all__ = [
    "KEY_EXTENSION",
    "SIG_EXTENSION",
    "SignalSigner",
    "SignalVerifier",
    "canonical_signal",
]
