"""Keyed agents on one runtime: get-or-start, passivation when idle, wake-up when due.

* :meth:`Runtime.activate(cls, id) <jido.Runtime.activate>` returns the running agent ``id`` or
  starts it (from its last checkpoint, else the state model's defaults); concurrent calls for
  the same id start it once.
* :meth:`Runtime.ref(id, cls=Session) <jido.Runtime.ref>` returns a :class:`VirtualRef`: an
  address that is valid whether or not the agent runs; each ``call``/``cast``/``state``
  activates it first.
* An agent class with ``idle_timeout`` (seconds) is **passivated** after that long without a
  command: its state and schedules are committed to the store and it leaves memory (unlike
  ``hibernate_after``, which keeps its mailbox and timers in memory). The next message through
  a :class:`VirtualRef` (or ``activate``) starts it again. A passivated agent with a pending
  schedule is kept in the runtime's due index and started again when the schedule is due.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from jido._errors import AgentNotFoundError, AgentStoppedError, FencedError, ValidationError
from jido._signal import Signal

if TYPE_CHECKING:
    from jido._agent import Agent
    from jido._runtime import AgentRef, Runtime, _Server

__all__ = ["PASSIVATED", "Activator", "VirtualRef"]

_log = logging.getLogger("jido.runtime")

PASSIVATED = "passivated"
"""Stop reason of an agent passivated after its ``idle_timeout``."""

_ATTEMPTS = 3  # a message racing a passivation activates the agent again


class Activator:
    """Get-or-start and the due index of passivated agents, for one :class:`~jido.Runtime`."""

    __slots__ = ("_due", "_pending", "_rt", "_timer")

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._pending: dict[str, asyncio.Future[AgentRef]] = {}
        self._due: list[tuple[float, str, type[Agent]]] = []  # heap of passivated agents' due
        self._timer: asyncio.TimerHandle | None = None

    async def activate(self, cls: type[Agent], id: str) -> AgentRef:
        """The running agent ``id``, or start it as ``cls`` (once, however many ask)."""
        from jido._runtime import AgentRef

        rt = self._rt
        while True:
            srv = rt._servers.get(id)
            if srv is None:
                break
            if not srv.status:
                return AgentRef(rt, srv)
            if srv.stopped is not None:  # passivating or stopping: wait, then start it again
                await asyncio.shield(srv.stopped)
        fut = self._pending.get(id)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = rt._loop().create_future()
        self._pending[id] = fut
        try:
            ref = await rt.start(cls, id=id)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: the other waiters get it through shield
            raise
        finally:
            del self._pending[id]
        fut.set_result(ref)
        return ref

    # -- passivation -----------------------------------------------------------------------------

    async def passivate(self, srv: _Server) -> bool:
        """Commit agent ``srv`` (state and schedules) and let it go; ``False`` if it is busy.

        A pending schedule goes into the due index, which starts the agent again when due.
        """
        if srv.active or srv.status:
            return False
        agent = srv.agent
        if agent is not None and srv.seq != srv.saved_seq:
            try:
                await srv._save(agent.state, srv.seq, srv.meta)
            except FencedError:
                await srv.shutdown("fenced", fenced=True)
                return False
        if srv.active or srv.status or srv.agent is not agent:
            return False  # work arrived while saving: stay
        due = srv.timers.earliest() if srv.timers is not None else None
        await srv.shutdown(PASSIVATED)
        if due is not None:
            self.wake_at(srv.cls, srv.id, due)
        return True

    def wake_at(self, cls: type[Agent], id: str, due: float) -> None:
        """Start agent ``id`` again at unix time ``due`` (its schedules fire then)."""
        heapq.heappush(self._due, (due, id, cls))
        self._rearm()

    def due_count(self) -> int:
        """How many passivated agents wait for a due schedule."""
        return len(self._due)

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._due:
            delay = max(0.0, self._due[0][0] - time.time())
            self._timer = self._rt._loop().call_later(delay, self._wake)

    def _wake(self) -> None:
        self._timer = None
        now = time.time()
        while self._due and self._due[0][0] <= now:
            _due, id, cls = heapq.heappop(self._due)
            if id not in self._rt._servers and not self._rt._closed:
                self._rt._background(self.activate(cls, id))
        self._rearm()

    def close(self) -> None:
        """Forget the due index (the store keeps the schedules)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()


class VirtualRef:
    """The address of a keyed agent on one runtime; activates it on every use if needed.

    Built by ``runtime.ref(id, cls=Session)``. ``call``, ``cast`` and ``state`` behave as on an
    :class:`~jido.AgentRef`, starting the agent (from the store) first when it does not run.
    """

    __slots__ = ("_cls", "_rt", "id")

    def __init__(self, rt: Runtime, id: str, cls: type[Agent]) -> None:
        if id.__class__ is not str or not id:
            raise ValidationError(f"agent id must be a non-empty string, got {id!r}")
        self._rt = rt
        self._cls = cls
        self.id = id

    def __repr__(self) -> str:
        return f"VirtualRef({self.id!r}, {self._cls.__name__})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VirtualRef) and other.id == self.id and other._rt is self._rt

    def __hash__(self) -> int:
        return hash(("virtual", self.id))

    @property
    def agent_class(self) -> type[Agent]:
        """The class the agent is activated as."""
        return self._cls

    async def call(
        self,
        signal: Signal,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - as in AgentRef.call
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Activate the agent if needed, then :meth:`AgentRef.call <jido.AgentRef.call>`."""
        for attempt in range(_ATTEMPTS):
            ref = await self._rt.activate(self._cls, self.id)
            try:
                return await ref.call(signal, timeout=timeout, meta=meta)
            except (AgentStoppedError, AgentNotFoundError):
                if attempt + 1 == _ATTEMPTS or not _passivated(ref):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def cast(self, signal: Signal, *, meta: Mapping[str, Any] | None = None) -> None:
        """Activate the agent if needed, then :meth:`AgentRef.cast <jido.AgentRef.cast>`."""
        for attempt in range(_ATTEMPTS):
            ref = await self._rt.activate(self._cls, self.id)
            try:
                await ref.cast(signal, meta=meta)
                return
            except (AgentStoppedError, AgentNotFoundError):
                if attempt + 1 == _ATTEMPTS or not _passivated(ref):
                    raise

    async def state(self) -> BaseModel:
        """Activate the agent if needed and return its state."""
        ref = await self._rt.activate(self._cls, self.id)
        return await ref.state()

    def running(self) -> bool:
        """True while the agent is active in memory (not passivated)."""
        return self._rt.get(self.id) is not None


def _passivated(ref: AgentRef) -> bool:
    """True when the agent behind ``ref`` stopped (passivated under the message): retry."""
    return ref._srv.status != 0
