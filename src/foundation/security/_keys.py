"""NKeys: ed25519 key pairs with NATS' role prefixes, and signatures checked by public key.

A seed (``S…``) holds the private key; the public key (``O…`` operator, ``A…`` account,
``U…`` user, ``N…`` server) names an identity in NATS JWTs. Creation and seeds use the
``nkeys`` package; verification by public key alone uses ``cryptography``.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Final, Literal

import nkeys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

KeyKind = Literal["operator", "account", "user", "server"]

_PREFIX: Final[dict[str, int]] = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
    "server": nkeys.PREFIX_BYTE_SERVER,
}


@dataclass(frozen=True, repr=False)
class KeyPair:
    """An nkey: its seed (secret) and public key. The repr never shows the seed."""

    seed: bytes
    public_key: str

    @classmethod
    def create(cls, kind: KeyKind) -> KeyPair:
        """A fresh random key pair of ``kind``."""
        seed = bytes(nkeys.encode_seed(os.urandom(32), _PREFIX[kind]))
        return cls.from_seed(seed)

    @classmethod
    def from_seed(cls, seed: bytes | str) -> KeyPair:
        """The key pair of an encoded seed (``S…``)."""
        raw = seed.encode() if isinstance(seed, str) else bytes(seed)
        kp = nkeys.from_seed(bytearray(raw.strip()))
        return cls(seed=raw.strip(), public_key=bytes(kp.public_key).decode())

    def sign(self, data: bytes) -> bytes:
        """The 64-byte ed25519 signature of ``data``."""
        return bytes(nkeys.from_seed(bytearray(self.seed)).sign(data))

    def __repr__(self) -> str:
        return f"KeyPair(public_key={self.public_key!r})"


def _raw_public(public_key: str) -> bytes:
    data = public_key.encode()
    raw = base64.b32decode(data + b"=" * (-len(data) % 8))
    if len(raw) != 35:
        raise ValueError(f"{public_key!r} is not an nkey public key")
    return raw[1:33]


def verify(public_key: str, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the ed25519 signature of ``data`` by ``public_key``."""
    try:
        Ed25519PublicKey.from_public_bytes(_raw_public(public_key)).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


__all__ = ["KeyKind", "KeyPair", "verify"]
