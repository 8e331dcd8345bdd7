"""Unreachable policies of refs beyond :class:`~foundation.messaging.ref.FailFast`.

:class:`AwaitFailover` is the default policy of a node that runs the failover: a call to an agent
whose owner is gone waits (within the caller's deadline) for the leader to re-place the agent, then
retries at its new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from foundation._errors import NotOwnerError
from foundation.messaging.ref import ClusterRef
from jido import JidoError


class AwaitFailover:
    """``UnreachablePolicy``: wait for the agent's failover instead of failing at once.

    When a ref finds the owner gone (not a live member, no responders) or not running the
    agent, this waits — within the caller's deadline — until the registry points the agent at
    a live node (a newer epoch or another node), then lets the ref retry there. If nothing
    changes, the same owner is retried after ``retry_after`` seconds (``poll`` seconds for
    ``not_owner``: the agent is probably starting there). Removed agents and expired deadlines
    give up with the original error.
    """

    def __init__(self, *, poll: float = 0.05, retry_after: float = 1.0) -> None:
        self.poll = poll
        self.retry_after = retry_after

    async def on_unreachable(
        self, ref: ClusterRef, record: Any, error: JidoError, deadline: float
    ) -> Any | None:
        """Return a record to retry against, or ``None`` to raise ``error``."""
        locator = ref.locator
        registry = locator.registry
        loop = asyncio.get_running_loop()
        if record is None:
            return None
        hold = self.poll if isinstance(error, NotOwnerError) else self.retry_after
        retry_at = loop.time() + hold
        checked = False
        while True:
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0:
                return None
            current = registry.cached(ref.id, tenant=ref.tenant)
            if current is None and not checked:
                checked = True
                current = await registry.lookup(ref.id, consistent=True, tenant=ref.tenant)
            if current is None:
                return None  # removed: nothing will come back
            newer = current.epoch > record.epoch or current.node != record.node
            usable = current.node == locator.node_id or locator.is_live(current.node)
            if usable and (newer or now >= retry_at):
                return current
            version = registry.version
            wait = min(remaining, max(retry_at - now, 0.001), max(self.poll, 0.001))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(registry.wait_change(after=version), wait)


__all__ = ["AwaitFailover"]
