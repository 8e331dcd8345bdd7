"""Connecting to NATS, and waiting out JetStream placement.

:func:`connect` opens a client with the settings the cluster layer relies on (short reconnect
waits, logged async errors, a typed error when no server answers); :func:`while_placing` retries
a stream creation while a (re)joined server is not yet counted for replica placement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import nats.js.errors
from nats.aio.client import Client as NatsClient

from foundation import _wire as wire
from foundation._errors import NatsUnavailableError
from foundation.nats.redact import redact_text, redact_url

log = logging.getLogger("foundation.kv")

#: How long bucket creation waits for JetStream to see enough peers to place its replicas.
PLACEMENT_WAIT = 10.0

_T = TypeVar("_T")


async def when_jetstream_ready(
    request: Callable[[], Awaitable[_T]], *, wait: float = PLACEMENT_WAIT
) -> _T:
    """``request()`` (a JetStream API call), once the account's JetStream answers.

    A server loads an account, and enables its JetStream, when the account's first user
    connects; until then JetStream API requests get no responders. A node starting together
    with its account waits for that, up to ``wait`` seconds, instead of failing.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.02
    while True:
        try:
            return await request()
        except nats.js.errors.ServiceUnavailableError:
            if loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)  # the account's JetStream is being enabled
        delay = min(delay * 2, 0.5)


async def while_placing(create: Callable[[], Awaitable[_T]], *, wait: float = PLACEMENT_WAIT) -> _T:
    """Run ``create`` (a stream creation), retrying while JetStream cannot place its replicas yet.

    Right after a server (re)joins, the meta leader may not yet count it as an online peer and
    refuses a replicated stream with "no suitable peers"; placement succeeds once the peer's
    first stats arrive. Other errors, and that one after ``wait`` seconds, propagate.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.05
    while True:
        try:
            return await create()
        except nats.js.errors.APIError as exc:
            if exc.err_code != wire.ERR_CLUSTER_NO_PEERS or loop.time() + delay >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def cluster_size(nc: NatsClient) -> int:
    """Number of servers in the connected cluster (1 for a lone server).

    Read from the ``connect_urls`` the server gossips to clients in its INFO.
    """
    info = getattr(nc, "_server_info", None) or {}
    urls = info.get("connect_urls") or []
    return max(1, len(urls))


async def connect(
    servers: str | list[str],
    *,
    name: str | None = None,
    reconnect_time_wait: float = 0.1,
    max_reconnect_attempts: int = -1,
    connect_timeout: float = 2.0,
    connect_attempts: int = 3,
    ping_interval: float = 5.0,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    **options: Any,
) -> NatsClient:
    """Connect a NATS client with settings fit for the cluster layer.

    ``servers`` is a URL, a comma-separated list of URLs, or a list. Reconnects forever
    with a short wait (leases are a second long) once connected; the first connection tries
    each server ``connect_attempts`` times, then fails with :class:`NatsUnavailableError`.
    The client's asynchronous errors are logged, not printed.
    """
    urls = [u.strip() for u in servers.split(",")] if isinstance(servers, str) else list(servers)
    if connect_attempts < 1:
        raise ValueError("connect_attempts must be >= 1")

    async def error_cb(exc: Exception) -> None:
        log.debug("nats client error: %r", exc)

    async def noop() -> None:
        return None

    try:
        nc = await nats.connect(
            servers=urls,
            name=name,
            reconnect_time_wait=reconnect_time_wait,
            # nats-py retries the first connection forever unless this is > 0.
            max_reconnect_attempts=connect_attempts - 1 if connect_attempts > 1 else 1,
            connect_timeout=connect_timeout,
            allow_reconnect=True,
            ping_interval=ping_interval,
            error_cb=error_cb,
            disconnected_cb=on_disconnect or noop,
            reconnected_cb=on_reconnect or noop,
            **options,
        )
    except Exception as exc:
        raise NatsUnavailableError(
            f"could not connect to NATS at {redact_url(','.join(urls))}: "
            f"{redact_text(repr(exc))}; check the server is running (or let foundation start "
            "an embedded one)",
            details={"servers": [redact_url(u) for u in urls]},
            cause=exc,
        ) from exc
    # From now on, reconnect as asked (forever by default): the options are read at runtime.
    nc.options["max_reconnect_attempts"] = max_reconnect_attempts
    return nc


__all__ = ["PLACEMENT_WAIT", "cluster_size", "connect", "when_jetstream_ready", "while_placing"]
