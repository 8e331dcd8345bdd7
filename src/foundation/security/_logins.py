"""Refused logins: the server's own account of them, carried to the ``APP`` account's nodes.

A refused login never reaches a node (the server closes the connection before any message),
so the node cannot see it by itself. The server does: with a system account configured it
publishes a ``client_disconnect`` advisory on ``$SYS.SERVER.<server id>.CLIENT.AUTH.ERR`` for
every failed authentication. The ``SYS`` account exports that stream to ``APP`` only (an
activation token, so no other account can import it) as
``foundation.login.refused.<server id>``; the ``APP`` nodes that keep an audit trail receive it
in one queue group (one node records each refusal) and append an ``auth.login_refused`` record.

Tenant accounts do not import it: a refused login names no account the server trusts, and the
hosts and names of one tenant's failed logins are not another tenant's business.

The advisory crosses the wire, so it is read defensively (:func:`refused_login`): only short
printable strings are kept, and the presented user JWT is reduced to the public keys it names
(the user and its issuing account), never stored.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Final

import orjson

from foundation._wire import SUBJECT_ROOT
from foundation.security._jwt import activation_jwt
from foundation.security._keys import KeyPair

#: What the server publishes (in its system account) when it refuses a login.
SERVER_AUTH_ERRORS: Final = "$SYS.SERVER.*.CLIENT.AUTH.ERR"
#: Where ``APP`` receives them: ``foundation.login.refused.<server id>``.
REFUSED_LOGINS: Final = f"{SUBJECT_ROOT}.login.refused"
#: The queue group of the ``APP`` nodes that record them (one record per refusal).
REFUSED_LOGINS_QUEUE: Final = "foundation-refused-logins"
#: Audit event of a refused login.
LOGIN_REFUSED_EVENT: Final = "auth.login_refused"

_ADVISORY: Final = "io.nats.server.advisory.v1.client_disconnect"
_MAX_EVENT: Final = 64 * 1024
_MAX_TEXT: Final = 128
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")
_SEED = re.compile(r"S[A-Z][A-Z2-7]{50,}")
_USER_KEY = re.compile(r"^U[A-Z2-7]{55}$")
_ACCOUNT_KEY = re.compile(r"^A[A-Z2-7]{55}$")


def refused_logins_export() -> dict[str, Any]:
    """The system account's export of the server's refused-login events (to ``APP`` only)."""
    return {
        "name": "refused logins",
        "subject": SERVER_AUTH_ERRORS,
        "type": "stream",
        "token_req": True,
    }


def refused_logins_import(sys_key: KeyPair, app_account: str) -> dict[str, Any]:
    """``APP``'s import of the refused-login events as ``foundation.login.refused.<server>``."""
    return {
        "name": "refused logins",
        "subject": SERVER_AUTH_ERRORS,
        "account": sys_key.public_key,
        "local_subject": f"{REFUSED_LOGINS}.*",
        "type": "stream",
        "token": activation_jwt(sys_key, app_account, SERVER_AUTH_ERRORS, "stream"),
    }


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        return None
    if not _PRINTABLE.match(value):
        return None
    return _SEED.sub("[redacted]", value)


def _jwt_keys(token: Any) -> dict[str, str]:
    """The user and account public keys a presented user JWT names (its signature unchecked:
    the server refused it; these say who it claimed to be)."""
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16 * 1024:
        return {}
    body = token.split(".")[1]
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return {}
    if not isinstance(claims, dict):
        return {}
    keys: dict[str, str] = {}
    sub, iss = claims.get("sub"), claims.get("iss")
    if isinstance(sub, str) and _USER_KEY.match(sub):
        keys["user"] = sub
    if isinstance(iss, str) and _ACCOUNT_KEY.match(iss):
        keys["account"] = iss
    return keys


def refused_login(data: bytes) -> dict[str, Any] | None:
    """The audit details of one refused-login advisory (``None``: not one, or malformed).

    Keeps the client's host, the name and library it announced, the server's reason and
    name, and the public keys of a presented user JWT.
    """
    if len(data) > _MAX_EVENT:
        return None
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("type") != _ADVISORY:
        return None
    client = event.get("client")
    server = event.get("server")
    client = client if isinstance(client, dict) else {}
    server = server if isinstance(server, dict) else {}
    details: dict[str, Any] = {
        "host": _text(client.get("host")),
        "client_name": _text(client.get("name")),
        "client_lang": _text(client.get("lang")),
        "client_version": _text(client.get("ver")),
        "reason": _text(event.get("reason")),
        "server": _text(server.get("name")),
    }
    details = {k: v for k, v in details.items() if v is not None}
    details.update(_jwt_keys(client.get("jwt")))
    return details


__all__ = [
    "LOGIN_REFUSED_EVENT",
    "REFUSED_LOGINS",
    "REFUSED_LOGINS_QUEUE",
    "SERVER_AUTH_ERRORS",
    "refused_login",
    "refused_logins_export",
    "refused_logins_import",
]
