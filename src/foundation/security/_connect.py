"""One way to open a cluster connection, with or without credentials.

Every connection a node (data, control, the lease thread's), a client, the CLI or the
dashboard opens goes through :func:`open_connection`: without credentials or TLS it is the
cluster layer's plain :func:`foundation.nats.connect.connect`; with them it is
:func:`~foundation.security._auth.secure_connect` (typed refusals, the principal's reply
inboxes) with the same reconnect settings.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient

from foundation.nats.connect import connect
from foundation.nats.redact import redact_text
from foundation.security._auth import NatsAuth, secure_connect

log = logging.getLogger("foundation.security")


def is_secure(auth: NatsAuth | None) -> bool:
    """True when ``auth`` logs in or turns TLS on (credentials in the URL do not count)."""
    return auth is not None and (auth.has_credentials or auth.uses_tls)


async def open_connection(
    url: str | list[str],
    auth: NatsAuth | None = None,
    *,
    name: str,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    ping_interval: float = 5.0,
    **options: Any,
) -> NatsClient:
    """Connect to ``url`` as ``auth`` says (see the module docs).

    A refused login raises :class:`~foundation.AuthenticationError` saying why; no reachable
    server raises :class:`~foundation.NatsUnavailableError`. Neither shows a credential.
    """
    if not is_secure(auth):
        return await connect(
            url,
            name=name,
            on_disconnect=on_disconnect,
            on_reconnect=on_reconnect,
            ping_interval=ping_interval,
            **options,
        )

    async def error_cb(exc: Exception) -> None:
        log.debug("nats client %s: %s", name, redact_text(repr(exc)))

    async def noop() -> None:
        return None

    options.pop("max_reconnect_attempts", None)
    return await secure_connect(
        url,
        auth,
        name=name,
        error_cb=error_cb,
        disconnected_cb=on_disconnect or noop,
        reconnected_cb=on_reconnect or noop,
        ping_interval=ping_interval,
        **options,
    )


__all__ = ["is_secure", "open_connection"]
