"""The one identifier check of the cluster layer.

Node ids, tenants, lease, lock and barrier names are single **tokens**; agent ids may be dotted
(tokens joined by single dots); KV keys are dotted tokens. A token is letters, digits, ``_``,
``-`` and ``=``; where it only ever becomes part of a KV key (never of a subject), ``/`` is
allowed too (``key=True``). Everything raises :class:`~foundation._errors.InvalidKeyError`.
"""

from __future__ import annotations

import re
from typing import Any, Final

from foundation._errors import InvalidKeyError

#: A subject token: ``[-_=a-zA-Z0-9]+``.
TOKEN_RE: Final = re.compile(r"^[-_=a-zA-Z0-9]+$")
#: A KV key token: a subject token that may also hold ``/``.
KEY_TOKEN_RE: Final = re.compile(r"^[-/_=a-zA-Z0-9]+$")
#: A dotted id (agent ids): subject tokens joined by single dots.
ID_RE: Final = re.compile(r"^[-_=a-zA-Z0-9]+(\.[-_=a-zA-Z0-9]+)*$")
#: A KV key: key tokens joined by single dots.
KEY_RE: Final = re.compile(r"^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$")


def check_token(what: str, value: Any, *, key: bool = False) -> str:
    """Return ``value`` if it is one token (``key``: a KV key token), else raise.

    ``what`` names the value in the error (``"node name"``, ``"tenant"``...).
    """
    if not isinstance(value, str) or not (KEY_TOKEN_RE if key else TOKEN_RE).match(value):
        allowed = "letters, digits, '_', '-', '='" + (" or '/'" if key else "")
        raise InvalidKeyError(
            f"{what} {value!r} cannot be used: use {allowed} only (no dots or spaces)",
            details={"kind": what, "value": repr(value)},
        )
    return value


def check_agent_id(agent_id: Any) -> str:
    """Return ``agent_id`` if it fits in a subject and a KV key (dotted tokens), else raise."""
    if not isinstance(agent_id, str) or not ID_RE.match(agent_id):
        raise InvalidKeyError(
            f"agent id {agent_id!r} cannot be used on a cluster: use letters, digits, '_', '-' "
            "and dots between them",
            details={"kind": "agent id", "value": repr(agent_id)},
        )
    return agent_id


def check_key(key: str) -> str:
    """Return ``key`` if valid for a KV bucket (dotted key tokens), else raise."""
    if not KEY_RE.match(key):
        raise InvalidKeyError(
            f"invalid key {key!r}: use letters, digits and -/_= in dot-separated tokens",
            details={"key": key},
        )
    return key


__all__ = [
    "ID_RE",
    "KEY_RE",
    "KEY_TOKEN_RE",
    "TOKEN_RE",
    "check_agent_id",
    "check_key",
    "check_token",
]
