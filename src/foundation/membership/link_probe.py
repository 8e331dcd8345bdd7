"""Is the node's data connection alive? Round trips on it, read by the lease renewal thread.

A node renews its membership lease from a thread with a NATS connection of its own, so a busy
event loop does not cost it the lease. The other side of that choice is a gray failure: the
data connection (requests, casts, inboxes, state writes) can be cut while the lease connection
is fine. The node would keep its lease and its agents while none of them can be reached.

:class:`LinkProbe` sends a small message to an unguessable inbox subject of the data connection
every ``interval`` seconds and notes when it comes back. :meth:`LinkProbe.down` answers the
renewal thread: the oldest unanswered probe has waited over ``limit`` seconds **while the
node's loop kept running** (``loop_tick``, the last time the loop ticked, is past the probe's
send time plus ``limit``). A loop that is merely slow is not a cut link: the thread's own
loop-stall check deals with that case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nats.aio.client import Client as NatsClient

log = logging.getLogger("foundation.membership")

DEFAULT_PROBE_INTERVAL = 0.25
"""Seconds between two probes of the data connection."""
DEFAULT_PROBE_LIMIT = 0.75
"""A probe unanswered this long (with the loop running) means the data link is down."""
_RESEND_EVERY = 4  # intervals: a probe lost in a reconnect is sent again


class LinkProbe:
    """Round trips on one NATS connection (see the module docs)."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        interval: float = DEFAULT_PROBE_INTERVAL,
        limit: float = DEFAULT_PROBE_LIMIT,
    ) -> None:
        self._nc = nc
        self.interval = interval
        self.limit = limit
        self._subject = ""
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._since: float | None = None  # send time of the oldest unanswered probe
        self.round_trips = 0
        """Probes answered so far."""

    async def start(self) -> None:
        """Subscribe to the probe inbox and start probing."""
        self._subject = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._subject, cb=self._on_answer)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="link-probe")

    async def stop(self) -> None:
        """Stop probing (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_answer(self, _msg: Any) -> None:
        self._since = None
        self.round_trips += 1

    async def _run(self) -> None:
        waited = 0
        while True:
            if self._since is None or waited >= _RESEND_EVERY:
                if self._since is None:
                    self._since = time.monotonic()
                waited = 0
                with contextlib.suppress(Exception):  # closed or reconnecting: stays unanswered
                    await self._nc.publish(self._subject, b"")
            else:
                waited += 1
            await asyncio.sleep(self.interval)

    def down(self, loop_tick: float) -> str | None:
        """Why the data link counts as down, or ``None`` (thread-safe; reads two floats).

        ``loop_tick`` is the monotonic time the node's event loop last ran.
        """
        since = self._since
        if since is None:
            return None
        waited = loop_tick - since
        if waited <= self.limit:
            return None
        return f"its data connection has not answered a probe for {waited:.1f} s"


__all__ = ["DEFAULT_PROBE_INTERVAL", "DEFAULT_PROBE_LIMIT", "LinkProbe"]
