"""Casts that wait on their own: one bounded backlog per agent, never the node's dispatcher.

A node applies the casts it receives in the subscription callback of its private subject, in
arrival order. A cast whose agent cannot take it at once (its mailbox is full, or it is still
starting here) must not hold that callback: every other agent's casts, calls and the node's
control ops (``ping``, ``start``, ``handoff``...) arrive through the same subscription and
would wait behind it (head-of-line blocking).

So such a cast goes to that agent's :class:`CastBacklog` queue, and every later cast — and
call — to the same agent queues behind it (per-agent order is kept: a call sent after casts is
applied after them, as when nothing waits). One task per backlogged agent waits for
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
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from jido import JidoError, MailboxFullError, Signal

log = logging.getLogger("foundation.node")

DEFAULT_BACKLOG_LIMIT = 100_000
"""Casts one agent's backlog holds before newer ones are refused."""


class CastTarget(Protocol):
    """What a backlog hands signals to: the local agent's ``cast`` and ``call``."""

    async def cast(self, signal: Signal, *, meta: Mapping[str, Any] | None = None) -> None:
        """Put ``signal`` into the agent's mailbox; ``MailboxFullError`` when it is full."""
        ...

    async def call(
        self,
        signal: Signal,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the jido AgentRef contract
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run ``signal`` and return its result; ``MailboxFullError`` when the mailbox is full."""
        ...

    async def wait_room(self) -> None:
        """Return once the mailbox has room (``jido.AgentRef.wait_room``)."""
        ...


class _Item:
    __slots__ = ("deadline", "future", "meta", "signal")

    def __init__(
        self,
        signal: Signal,
        meta: Mapping[str, Any] | None,
        future: asyncio.Future[dict[str, Any]] | None = None,
        deadline: float = 0.0,
    ) -> None:
        self.signal = signal
        self.meta = meta
        self.future = future  # a call's result goes there; ``None`` for a cast
        self.deadline = deadline


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
        not_here: Callable[[str], Exception] | None = None,
    ) -> None:
        self._resolve = resolve
        self._not_here = not_here or (lambda agent_id: LookupError(agent_id))
        self._timeout = timeout
        self._spawn = spawn
        self.limit = limit
        self._owner = owner
        self._queues: dict[str, collections.deque[_Item]] = {}
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
        queue = self._queue(agent_id)
        if len(queue) >= self.limit:
            self._refuse(agent_id, f"its backlog holds {self.limit} casts already")
            return
        queue.append(_Item(signal, meta))
        self.queued += 1

    async def call(
        self, agent_id: str, signal: Signal, meta: Mapping[str, Any] | None, deadline: float
    ) -> dict[str, Any]:
        """Run a call after the casts queued before it; raises what the call raised.

        ``MailboxFullError`` when the backlog is full or the mailbox stays full until
        ``deadline`` (``loop.time()``), and the node's ``not_here`` error when the agent does
        not run here.
        """
        queue = self._queue(agent_id)
        if len(queue) >= self.limit:
            raise MailboxFullError(
                f"agent {agent_id!r} has {self.limit} signals waiting; back off and retry",
                details={"agent_id": agent_id, "backlog": self.limit},
            )
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        queue.append(_Item(signal, meta, future, deadline))
        self.queued += 1
        return await future

    def _queue(self, agent_id: str) -> collections.deque[_Item]:
        queue = self._queues.get(agent_id)
        if queue is None:
            queue = self._queues[agent_id] = collections.deque()
            self._spawn(self._drain(agent_id, queue))
        return queue

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

    async def _drain(self, agent_id: str, queue: collections.deque[_Item]) -> None:
        loop = asyncio.get_running_loop()
        ready: CastTarget | None = None  # the agent, once a cast went in: reused while it takes
        try:
            while queue:
                item = queue[0]
                if ready is not None and item.future is None:
                    # The fast path of a drain: casts go straight in while the mailbox has room.
                    try:
                        await ready.cast(item.signal, meta=item.meta)
                        queue.popleft()
                        continue
                    except JidoError:
                        ready = None  # full, or gone: the path below waits, re-resolves, refuses
                deadline = item.deadline or loop.time() + self._timeout()
                target = await self._resolve(agent_id, deadline)
                if item.future is not None:
                    await self._run_call(agent_id, item, target, deadline)
                elif target is None:
                    self._refuse(agent_id, "the agent does not run on this node")
                else:
                    try:
                        await _cast_when_room(target, item.signal, item.meta, deadline)
                        ready = target
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
            for item in queue:  # cancelled (the node stops): these are not applied
                if item.future is None:
                    self.refused += 1
                elif not item.future.done():
                    item.future.set_exception(self._not_here(agent_id))

    async def _run_call(
        self, agent_id: str, item: _Item, target: CastTarget | None, deadline: float
    ) -> None:
        future = item.future
        assert future is not None
        if future.done():
            return  # the caller gave up (its request task was cancelled)
        if target is None:
            future.set_exception(self._not_here(agent_id))
            return
        loop = asyncio.get_running_loop()
        while True:
            try:
                remaining = max(deadline - loop.time(), 0.001)
                result = await target.call(item.signal, timeout=remaining, meta=item.meta)
            except MailboxFullError as exc:
                if loop.time() < deadline:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(target.wait_room(), deadline - loop.time())
                    continue
                outcome: BaseException | dict[str, Any] = exc
            except Exception as exc:
                outcome = exc
            else:
                outcome = result
            break
        if not future.done():
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


async def _cast_when_room(
    target: CastTarget, signal: Signal, meta: Mapping[str, Any] | None, deadline: float
) -> None:
    """Cast into ``target``; while its mailbox is full, wait for room until ``deadline``."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            await target.cast(signal, meta=meta)
            return
        except MailboxFullError:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise
        # woken when the mailbox has drained to half: the next casts go in without waiting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(target.wait_room(), remaining)


__all__ = ["DEFAULT_BACKLOG_LIMIT", "CastBacklog", "CastTarget"]
