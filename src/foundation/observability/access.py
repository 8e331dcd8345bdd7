"""Who may read the dashboard: a known ``Host`` header, and a bearer token off loopback.

A browser page on a foreign site can reach ``http://127.0.0.1:PORT`` through a DNS name it
controls (DNS rebinding); such requests carry that foreign name in ``Host`` and are refused.
A dashboard bound to anything but loopback must be given a token, and every request but
``/healthz`` (open, for load balancers and probes) must then carry
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Sequence

from foundation._errors import ClusterError
from foundation.observability import http

Refusal = tuple[int, bytes, dict[str, str]]
"""A refused request's status, body and extra headers."""

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
#: Paths anyone may read.
OPEN_PATHS = frozenset({"/healthz"})


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or an address) is this machine only."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _header(head: bytes, name: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None


class AccessGuard:
    """The checks of one dashboard (see the module docs).

    ``host`` is the address it listens on; ``token`` the bearer token (required off
    loopback); ``allowed_hosts`` more names accepted in ``Host`` (a public DNS name).
    """

    def __init__(
        self, host: str, token: str | None = None, allowed_hosts: Sequence[str] = ()
    ) -> None:
        if not is_loopback(host) and not token:
            raise ClusterError(
                f"the dashboard listens on {host!r}, beyond loopback: give it a token "
                "(Dashboard(..., token=...)); requests must then send Authorization: Bearer",
                details={"host": host},
            )
        self.token = token or None
        names = {*_LOOPBACK_NAMES, *(h.lower() for h in allowed_hosts)}
        self.names = names | ({host.lower()} if is_loopback(host) else set())
        self.check_host = is_loopback(host) or bool(allowed_hosts)

    def refusal(self, head: bytes, path: str) -> Refusal | None:
        """``(status, body, headers)`` to refuse the request with, or ``None`` to serve it."""
        if path in OPEN_PATHS:
            return None
        if self.check_host:
            host = (_header(head, b"host") or "").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.names:
                return 421, b"unknown Host\n", {}
        if self.token is not None:
            auth = _header(head, b"authorization") or ""
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                return 401, b"bearer token required\n", {"WWW-Authenticate": "Bearer"}
        return None


async def refuse(writer: asyncio.StreamWriter, refusal: Refusal) -> None:
    """Answer a refused request."""
    code, body, extra = refusal
    await http.respond(writer, code, body, "text/plain", extra=extra)


__all__ = ["OPEN_PATHS", "AccessGuard", "Refusal", "is_loopback", "refuse"]
