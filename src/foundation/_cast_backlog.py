"""Casts that wait on their own: one bounded backlog per agent, never the node's dispatcher.

A node applies the casts it receives in the subscription callback of its private subject, in
arrival order. A cast whose agent cannot take it at once (its mailbox is full, or it is still
starting here) must not hold that callback: every other agent's casts, calls and the node's
control ops (``ping``, ``start``, ``handoff``...) arrive through the same subscription and
would wait behind it (head-of-line blocking).

So such a cast goes to that agent's :class:`CastBacklog` queue, and every later cast to the
same agent queues behind it (per-agent order is kept). One task per backlogged agent waits for
the agent (up to the node's call timeout per cast) and for room in its mailbox, then hands the
casts over in order. A backlog holds at most ``limit`` casts: beyond that, and for a cast whose
agent never shows up or whose mailbox stays full past the timeout, the cast is refused —
counted in :attr:`CastBacklog.refused` and logged (a cast has no reply to carry the error).
Agents with ``at_least_once`` delivery do not use this path: their signals wait in their
JetStream inbox, which the agent pulls at its own pace.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from jido import JidoError, MailboxFullError, Signal

log = logging.getLogger("foundation.node")

DEFAULT_BACKLOG_LIMIT = 10_000
"""Casts one agent's backlog holds before newer ones are refused."""

_FIRST_SPINS = 16  # first waits for room only yield to the agent's task
_MAX_POLL = 0.002  # then poll for room at most this far apart (seconds)


class CastTarget(Protocol):
    """What a backlog hands casts to: the local agent's ``cast``."""

    async def cast(self, signal: Signal, *, meta: Mapping[str, Any] | None = None) -> None:
        """Put ``signal`` into the agent's mailbox; ``MailboxFullError`` when it is full."""
        ...


Resolve = Callable[[str, float], Awaitable[CastTarget | None]]
"""``resolve(agent_id, deadline)``: the local agent once it runs here, or ``None``."""


class CastBacklog:
    """Per-agent queues of casts that could not be applied at once (see the module docs)."""

    def __init__(
        self,
        resolve: Resolve,
        *,
        timeout: Callable[[], float],
        spawn: Callable[[Awaitable[Any]], Any],
        limit: int = DEFAULT_BACKLOG_LIMIT,
        owner: str = "",
    ) -> None:
        self._resolve = resolve
        self._timeout = timeout
        self._spawn = spawn
        self.limit = limit
        self._owner = owner
        self._queues: dict[str, collections.deque[tuple[Signal, Mapping[str, Any] | None]]] = {}
        self.refused = 0
        """Casts refused so far (backlog full, agent absent, mailbox full past the timeout)."""
        self.queued = 0
        """Casts that went through a backlog so far."""

    def __contains__(self, agent_id: str) -> bool:
        return agent_id in self._queues

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def add(self, agent_id: str, signal: Signal, meta: Mapping[str, Any] | None) -> None:
        """Queue one cast behind the agent's earlier ones; starts its drainer if needed."""
        queue = self._queues.get(agent_id)
        if queue is None:
            queue = self._queues[agent_id] = collections.deque()
            self._spawn(self._drain(agent_id, queue))
        elif len(queue) >= self.limit:
            self._refuse(agent_id, f"its backlog holds {self.limit} casts already")
            return
        queue.append((signal, meta))
        self.queued += 1

    def _refuse(self, agent_id: str, reason: str) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning(
                "node %s: cast to %s refused: %s (%d refused so far)",
                self._owner,
                agent_id,
                reason,
                self.refused,
            )

    async def _drain(
        self, agent_id: str, queue: collections.deque[tuple[Signal, Mapping[str, Any] | None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while queue:
                signal, meta = queue[0]
                deadline = loop.time() + self._timeout()
                target = await self._resolve(agent_id, deadline)
                if target is None:
                    self._refuse(agent_id, "the agent does not run on this node")
                else:
                    try:
                        await _cast_when_room(target, signal, meta, deadline)
                    except MailboxFullError:
                        self._refuse(agent_id, "its mailbox stayed full past the call timeout")
                    except JidoError as exc:
                        log.warning("node %s: cast to %s failed: %s", self._owner, agent_id, exc)
                queue.popleft()
        finally:
            # No suspension between the last ``while queue`` test and here: a cast that arrives
            # later finds no queue and goes straight to the agent, after everything queued.
            if self._queues.get(agent_id) is queue:
                del self._queues[agent_id]
            if queue:
                self.refused += len(queue)  # cancelled (the node stops): these are not applied


async def _cast_when_room(
    target: CastTarget, signal: Signal, meta: Mapping[str, Any] | None, deadline: float
) -> None:
    """Cast into ``target``; while its mailbox is full, wait for room until ``deadline``."""
    loop = asyncio.get_running_loop()
    tries = 0
    while True:
        try:
            await target.cast(signal, meta=meta)
            return
        except MailboxFullError:
            if loop.time() >= deadline:
                raise
        tries += 1
        delay = 0.0 if tries < _FIRST_SPINS else min(_MAX_POLL, 0.0001 * (tries - _FIRST_SPINS + 1))
        await asyncio.sleep(delay)


__all__ = ["DEFAULT_BACKLOG_LIMIT", "CastBacklog", "CastTarget"]
