"""The cluster-wide due index of passivated virtual agents: :class:`Wakeups`.

A virtual agent idle past its ``idle_timeout`` passivates even with a pending schedule: its
schedules stay committed with its state, and before its record is removed the earliest due time
goes into the ``foundation_wakeups`` bucket (``<tenant>.<agent_id>`` → due time and type).
Every node hosting that type watches the bucket and, when an entry is due, activates the agent
(placement and a CAS claim, so concurrent wake-ups activate it once); the activation restores
its schedules, and the due one fires at once, committed with the command it triggers (exactly
once, as any schedule). The entry is then deleted against the revision that was due, so one
written by a later passivation stays.

A node killed between writing the entry and removing the record leaves an entry whose agent
is still registered: its wake-up finds the agent running and only deletes the entry. If no
node hosting the type is up at the due time, the agent wakes when the first one starts
(late by that outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from foundation._errors import CASConflictError
from foundation.nats.kv import KV, KVEntry

log = logging.getLogger("foundation.node")

#: Longest sleep of the wake-up loop (it also wakes on every change of the bucket).
_MAX_SLEEP = 1.0
#: Delay before a failed wake-up is tried again.
_RETRY = 0.5

Activate = Callable[[str, type], Awaitable[Any]]


class Wakeups:
    """Due times of one tenant's passivated virtual agents, and the loop that wakes them."""

    def __init__(self, kv: KV, tenant: str, types: Mapping[str, type]) -> None:
        self._kv = kv
        self._tenant = tenant
        self._types = types
        self._due: dict[str, tuple[float, str, int]] = {}  # agent -> (due, type, revision)
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _key(self, agent_id: str) -> str:
        return f"{self._tenant}.{agent_id}"

    async def note(self, agent_id: str, type_name: str, due: float) -> None:
        """Record that ``agent_id`` (passivating now) must be woken at unix time ``due``."""
        value = orjson.dumps({"due": due, "type": type_name})
        await self._kv.put(self._key(agent_id), value)

    def pending(self) -> dict[str, float]:
        """The agents waiting to be woken, with their due times (as this node saw them)."""
        return {agent_id: due for agent_id, (due, _t, _r) in self._due.items()}

    # -- the loop ----------------------------------------------------------------------------

    async def start(self, activate: Activate) -> None:
        """Watch the bucket (its current entries first) and wake due agents with
        ``activate(agent_id, cls)`` until :meth:`stop`."""
        watch = self._kv.watch(f"{self._tenant}.>")
        await watch.start()
        self._tasks = [
            asyncio.create_task(self._follow(watch), name="wakeups-watch"),
            asyncio.create_task(self._wake_loop(activate), name="wakeups"),
        ]

    async def stop(self) -> None:
        """Stop watching and waking."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, watch: Any) -> None:
        try:
            async for entry in watch:
                self._take(entry)
        finally:
            await watch.stop()

    def _take(self, entry: KVEntry) -> None:
        agent_id = entry.key.partition(".")[2]
        if entry.deleted:
            known = self._due.get(agent_id)
            if known is not None and known[2] <= entry.revision:
                del self._due[agent_id]
            return
        try:
            data = orjson.loads(entry.value)
            due, type_name = float(data["due"]), str(data["type"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("wakeups: ignoring a malformed entry for %r", agent_id)
            return
        if type_name in self._types:  # only the types this node can start
            self._due[agent_id] = (due, type_name, entry.revision)
            self._changed.set()

    async def _wake_loop(self, activate: Activate) -> None:
        while True:
            now = time.time()
            due_now = [(a, t, r) for a, (d, t, r) in self._due.items() if d <= now]
            for agent_id, type_name, revision in due_now:
                await self._wake(activate, agent_id, type_name, revision)
            later = [d for d, _t, _r in self._due.values() if d > time.time()]
            sleep = min([_MAX_SLEEP, *(d - time.time() for d in later)])
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(sleep, 0.0))

    async def _wake(self, activate: Activate, agent_id: str, type_name: str, revision: int) -> None:
        try:
            await activate(agent_id, self._types[type_name])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # another node may wake it; if not, this one tries again
            log.info("wakeups: waking %s failed (%s); trying again", agent_id, exc)
            known = self._due.get(agent_id)
            if known is not None and known[2] == revision:
                self._due[agent_id] = (time.time() + _RETRY, type_name, revision)
            return
        known = self._due.get(agent_id)
        if known is not None and known[2] == revision:
            del self._due[agent_id]
        with contextlib.suppress(CASConflictError):
            # against the revision that was due: a newer passivation's entry stays
            await self._kv.delete(self._key(agent_id), last=revision)


__all__ = ["Wakeups"]
