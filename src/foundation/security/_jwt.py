"""NATS JWTs (decentralised authentication), encoded here: operator, account and user claims.

A NATS JWT is ``base64url(header).base64url(claims).base64url(signature)`` with the header
``{"typ":"JWT","alg":"ed25519-nkey"}``; the signature is the issuer nkey's ed25519 signature of
the first two parts. Claims carry ``jti`` (base32 SHA-512/256 of the claims), ``iat``, ``iss``
(issuer public key), ``sub`` (subject public key), ``name`` and ``nats`` (the type-specific
part, with ``type`` and ``version: 2``). This is the format of ``nats-io/jwt`` v2 that
``nats-server`` and ``nsc`` read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from foundation.security._keys import KeyPair, verify

_HEADER: Final = {"typ": "JWT", "alg": "ed25519-nkey"}
#: "No limit" in NATS limits.
NO_LIMIT: Final = -1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def encode(claims: Mapping[str, Any], issuer: KeyPair) -> str:
    """Sign ``claims`` with ``issuer`` (adds ``iss``, ``iat``, ``jti``) and return the JWT."""
    body = dict(claims)
    body["iss"] = issuer.public_key
    body.setdefault("iat", int(time.time()))
    body["jti"] = ""
    digest = hashlib.new("sha512_256", _dumps(body)).digest()
    body["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    signing_input = f"{_b64(_dumps(_HEADER))}.{_b64(_dumps(body))}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


def decode(token: str, *, check_signature: bool = True) -> dict[str, Any]:
    """The claims of a NATS JWT; with ``check_signature``, only if ``iss`` signed it."""
    try:
        head, payload, sig = token.strip().split(".")
        claims = json.loads(_unb64(payload))
    except ValueError as exc:
        raise ValueError("not a NATS JWT (three base64url parts with JSON claims)") from exc
    if not isinstance(claims, dict):
        raise ValueError("not a NATS JWT: the claims are not an object")
    if check_signature and not verify(
        str(claims.get("iss", "")), f"{head}.{payload}".encode(), _unb64(sig)
    ):
        raise ValueError("the JWT's signature does not match its issuer")
    return claims


def operator_jwt(
    operator: KeyPair, name: str, *, system_account: str, signing_keys: Sequence[str] = ()
) -> str:
    """A self-signed operator JWT naming the system account."""
    nats: dict[str, Any] = {"type": "operator", "version": 2, "system_account": system_account}
    if signing_keys:
        nats["signing_keys"] = list(signing_keys)
    return encode({"sub": operator.public_key, "name": name, "nats": nats}, operator)


def account_jwt(
    operator: KeyPair,
    account: str,
    name: str,
    *,
    jetstream: bool = True,
    js_limits: Mapping[str, int] | None = None,
    exports: Sequence[Mapping[str, Any]] = (),
    imports: Sequence[Mapping[str, Any]] = (),
) -> str:
    """An account JWT signed by the operator.

    Without ``js_limits`` JetStream (when on) is unlimited; ``js_limits`` overrides the
    JetStream keys of ``nats.limits`` (``mem_storage``, ``disk_storage``, ``streams``,
    ``consumer``, ``max_ack_pending``, ...). ``exports`` and ``imports`` are the claims'
    lists as ``nats-io/jwt`` v2 spells them (see :mod:`foundation.security._tenants`).
    """
    limits: dict[str, Any] = {
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "imports": NO_LIMIT,
        "exports": NO_LIMIT,
        "wildcards": True,
        "conn": NO_LIMIT,
        "leaf": NO_LIMIT,
    }
    if jetstream:
        limits.update(
            {
                "mem_storage": NO_LIMIT,
                "disk_storage": NO_LIMIT,
                "streams": NO_LIMIT,
                "consumer": NO_LIMIT,
            }
        )
        limits.update(js_limits or {})
    nats: dict[str, Any] = {"type": "account", "version": 2, "limits": limits}
    if exports:
        nats["exports"] = [dict(e) for e in exports]
    if imports:
        nats["imports"] = [dict(i) for i in imports]
    return encode({"sub": account, "name": name, "nats": nats}, operator)


def activation_jwt(exporter: KeyPair, importer: str, subject: str, kind: str) -> str:
    """An activation token: ``exporter`` lets account ``importer`` import ``subject``.

    ``kind`` is ``"stream"`` or ``"service"``; the token goes into the importer's import
    (``token``) of an export marked ``token_req``.
    """
    nats = {"type": "activation", "version": 2, "subject": subject, "kind": kind}
    return encode({"sub": importer, "name": subject, "nats": nats}, exporter)


def user_jwt(
    account: KeyPair,
    user: str,
    name: str,
    *,
    pub_allow: Sequence[str] = (),
    pub_deny: Sequence[str] = (),
    sub_allow: Sequence[str] = (),
    sub_deny: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> str:
    """A user JWT signed by its account, with publish/subscribe permissions."""
    nats: dict[str, Any] = {
        "type": "user",
        "version": 2,
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "pub": _perm(pub_allow, pub_deny),
        "sub": _perm(sub_allow, sub_deny),
    }
    if tags:
        nats["tags"] = list(tags)
    return encode({"sub": user, "name": name, "nats": nats}, account)


def _perm(allow: Sequence[str], deny: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if allow:
        out["allow"] = list(allow)
    if deny:
        out["deny"] = list(deny)
    return out


_CREDS: Final = """-----BEGIN NATS USER JWT-----
{jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------

*************************************************************
"""


def creds_text(jwt: str, user: KeyPair) -> str:
    """The text of a NATS ``.creds`` file (user JWT and user seed)."""
    return _CREDS.format(jwt=jwt, seed=user.seed.decode())


def creds_jwt(text: str) -> str:
    """The user JWT inside the text of a ``.creds`` file."""
    lines = [ln.strip() for ln in text.splitlines()]
    try:
        start = lines.index("-----BEGIN NATS USER JWT-----")
    except ValueError as exc:
        raise ValueError("no user JWT in the creds file") from exc
    return lines[start + 1]


__all__ = [
    "NO_LIMIT",
    "account_jwt",
    "activation_jwt",
    "creds_jwt",
    "creds_text",
    "decode",
    "encode",
    "operator_jwt",
    "user_jwt",
]
